"""The exported predictor: one TorchScript file that takes raw photos and returns landmark probabilities.

    predictor = torch.jit.load("checkpoints/transfer_exported.pt")   # needs only torch, not this project
    probabilities = predictor(images)          # images: [B,3,H,W] uint8 0-255 or float 0-1, any H, W
    predictor.class_names[probabilities[0].argmax()]

The preprocessing the model was trained with (resize, center crop, normalize) is inside the file, as are the class
names and places, so nothing can drift apart between training and the app.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from src.data import DATASETS, LANDMARK_IMAGE_SIZE, base_dataset, eval_resize_size, get_data_loaders
from src.helpers import CHECKPOINTS_DIR, DataError, landmark_place
from src.train import build_model

SCRATCH_EXPORT = CHECKPOINTS_DIR / "original_exported.pt"
TRANSFER_EXPORT = CHECKPOINTS_DIR / "transfer_exported.pt"


def exported_model_path(kind: str, dataset: str = "landmarks") -> Path:
    """Where the notebooks export a model: kind "scratch" or "transfer". Models of another dataset than the
    landmarks get their own file (e.g. original_exported_fashion-mnist.pt), so they never replace the app's models."""
    path = {"scratch": SCRATCH_EXPORT, "transfer": TRANSFER_EXPORT}[kind]
    return path if dataset == "landmarks" else path.with_name(f"{path.stem}_{dataset}.pt")


class Predictor(nn.Module):
    """model + its eval preprocessing + softmax. [B,3,H,W] uint8 or float image batch -> probabilities [B, classes]."""

    def __init__(
        self,
        model: nn.Module,
        class_names: list[str],
        mean: list[float] | torch.Tensor,
        std: list[float] | torch.Tensor,
        image_size: int = LANDMARK_IMAGE_SIZE,
        resize_size: int | None = None,
    ):
        """resize_size: shorter side before the central image_size crop; default: the landmark 256/224 ratio."""
        super().__init__()
        self.model = model.eval()
        self.class_names = list(class_names)
        self.class_places = [landmark_place(name) for name in class_names]  # "" where unknown
        self.image_size = image_size
        self.resize_size = resize_size or eval_resize_size("landmarks", image_size)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if x.dtype == torch.uint8:
                x = x.float() / 255.0
            # Resize the shorter side to resize_size (antialiased, like PIL), then take the central square crop.
            height, width = x.shape[-2], x.shape[-1]
            scale = self.resize_size / min(height, width)
            new_height = max(int(round(height * scale)), self.image_size)
            new_width = max(int(round(width * scale)), self.image_size)
            x = F.interpolate(x, size=[new_height, new_width], mode="bilinear", antialias=True, align_corners=False)
            top = int(round((new_height - self.image_size) / 2.0))
            left = int(round((new_width - self.image_size) / 2.0))
            x = x[:, :, top : top + self.image_size, left : left + self.image_size]
            x = (x - self.mean) / self.std
            return F.softmax(self.model(x), dim=1)


@contextlib.contextmanager
def quiet_torchscript():
    """Silence torch 2.14's "torch.jit.script/load is deprecated" FutureWarning: TorchScript still works, and it is
    the format that loads without this project's code. Other warnings still show."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def load_predictor(path: str | Path) -> torch.jit.ScriptModule:
    """torch.jit.load an exported predictor; a missing or broken file raises ValueError with a one-line fix."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"{path}: no exported model there. Run the notebooks (or `make run`) to export one, or pass --model."
        )
    try:
        with quiet_torchscript():
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, ValueError, zip errors...
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a loadable exported model ({first_line}). Export it again.") from None


def warm_up(predictor: nn.Module, runs: int = 2) -> None:
    """Classify a blank 800x600 photo `runs` times, so that the first real photo is not the slow one.

    TorchScript profiles and optimizes a loaded model during its first calls: the first photo takes several times
    longer than the next ones (bench/predict_latency.py prints both).
    """
    with torch.inference_mode():
        for _ in range(runs):
            predictor(torch.zeros((1, 3, 600, 800), dtype=torch.uint8))


def export_predictor(
    model: nn.Module,
    class_names: list[str],
    mean: list[float] | torch.Tensor,
    std: list[float] | torch.Tensor,
    path: str | Path,
    image_size: int = LANDMARK_IMAGE_SIZE,
    resize_size: int | None = None,
) -> torch.jit.ScriptModule:
    """Wrap the model in a Predictor, compile it with TorchScript and save it (atomically) to `path`.

    resize_size must match the eval transform: src.data.eval_resize_size(dataset, image_size); None means landmarks.
    Returns the scripted predictor. The model is copied to the CPU; the original is left where it was.
    """
    predictor = Predictor(copy.deepcopy(model).cpu(), class_names, mean, std, image_size, resize_size).eval()
    with quiet_torchscript():
        scripted = torch.jit.script(predictor)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    scripted.save(str(tmp))
    os.replace(tmp, path)
    return scripted


def export(checkpoint: str | Path, path: str | Path | None = None) -> Path:
    """Export a checkpoint written by `python -m src.train` (weights + its .json run record) to a predictor file.

    Default destination: checkpoints/original_exported.pt for the from-scratch model, else transfer_exported.pt.
    """
    checkpoint = Path(checkpoint)
    record = json.loads(checkpoint.with_suffix(".json").read_text())
    model = build_model(record["model"], len(record["class_names"]), record["image_size"])
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    path = Path(path) if path else exported_model_path("scratch" if record["model"] == "scratch" else "transfer", record["dataset"])
    resize_size = eval_resize_size(record["dataset"], record["image_size"])
    export_predictor(model, record["class_names"], record["mean"], record["std"], path, record["image_size"], resize_size)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Testing the exported file


def predictor_test(test_dataloader: DataLoader, model_reloaded: nn.Module) -> tuple[float, np.ndarray]:
    """Run the predictor on every raw test image (its own preprocessing, batch of 1, original size).

    Returns (accuracy in [0, 1], confusion matrix [classes, classes] of counts: row = true class, column = predicted).
    """
    subset = test_dataloader.dataset
    raw = copy.copy(base_dataset(subset))  # the same images, but undecorated: uint8 [3,H,W] at their original size
    raw.transform = v2.Compose([v2.ToImage(), v2.RGB()])
    indices = subset.indices if isinstance(subset, Subset) else range(len(raw))
    n_classes = len(model_reloaded.class_names)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    for index in tqdm(indices, desc="Testing the exported predictor", unit="img"):
        image, label = raw[index]
        predicted = int(model_reloaded(image.unsqueeze(0)).argmax(dim=1))
        confusion[label, predicted] += 1
    accuracy = float(np.trace(confusion) / confusion.sum())
    print(f"Accuracy of the exported predictor: {100 * accuracy:.1f}% ({np.trace(confusion)}/{confusion.sum()})")
    return accuracy, confusion


def plot_confusion_matrix(confusion: np.ndarray, class_names: list[str]) -> plt.Figure:
    """A heat map of the confusion matrix, each row normalized to the fraction of that class's images."""
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = max(6, 0.22 * len(class_names))
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set(xlabel="predicted landmark", ylabel="true landmark", title="Confusion matrix (fraction of each true class)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    return fig


def most_confused_pairs(confusion: np.ndarray, class_names: list[str], k: int = 10) -> list[tuple[str, str, int]]:
    """The k largest off-diagonal counts as (true class, predicted class, number of test images), largest first."""
    off_diagonal = confusion.copy()
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(off_diagonal, axis=None)[::-1][:k]
    pairs = [(class_names[i], class_names[j], int(off_diagonal[i, j])) for i, j in zip(*np.unravel_index(order, confusion.shape))]
    return [pair for pair in pairs if pair[2] > 0]


def main(argv: list[str] | None = None) -> int:
    """python -m src.predictor [--dataset D] [MODEL ...]: test exported predictors on the test split."""
    parser = argparse.ArgumentParser(description="Test exported predictors on the test split; prints their accuracy.")
    parser.add_argument("models", nargs="*", type=Path, help="default: both exported models of the dataset")
    parser.add_argument("--dataset", choices=DATASETS, default="landmarks")
    args = parser.parse_args(argv)
    models = args.models or [exported_model_path(kind, args.dataset) for kind in ("scratch", "transfer")]
    try:
        test_loader = get_data_loaders(batch_size=1, num_workers=0, dataset=args.dataset)["test"]
        predictors = [load_predictor(path) for path in models]
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path, predictor in zip(models, predictors):
        accuracy, confusion = predictor_test(test_loader, predictor)
        print(f"{path}: test accuracy {100 * accuracy:.1f}% ({np.trace(confusion)}/{confusion.sum()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
