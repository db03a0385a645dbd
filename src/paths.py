"""Where the models live: the one place for their folder and file names. Plain Python, so that the app and the predict
CLI find a model without importing torch."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Trained and exported models; LANDMARK_CHECKPOINTS points elsewhere (e.g. to keep several experiments apart).
CHECKPOINTS_DIR = Path(os.environ.get("LANDMARK_CHECKPOINTS") or PROJECT_ROOT / "checkpoints")

# The course's file names. A model of another dataset gets its own file (best_val_loss_fashion-mnist.pt), so it never
# replaces a landmark model that the app uses.
MODEL_FILES = {
    ("scratch", False): "best_val_loss", ("transfer", False): "model_transfer",
    ("scratch", True): "original_exported", ("transfer", True): "transfer_exported",
}  # fmt: skip


def model_file(kind: str, dataset: str = "landmarks", exported: bool = False) -> Path:
    """The one place for model file names: kind "scratch" or "transfer"; the best checkpoint of training, or the
    exported predictor the app loads. model_file("transfer", exported=True) -> checkpoints/transfer_exported.pt."""
    if kind not in ("scratch", "transfer"):
        raise ValueError(f"kind must be 'scratch' or 'transfer', got {kind!r}")
    stem = MODEL_FILES[kind, exported]
    return CHECKPOINTS_DIR / (f"{stem}.pt" if dataset == "landmarks" else f"{stem}_{dataset}.pt")


def onnx_beside(path: str | Path) -> Path:
    """The ONNX file written beside an exported TorchScript file: the same name, suffix .onnx."""
    return Path(path).with_suffix(".onnx")
