"""The exported predictor's command line: `python -m src.predictor` (src/predictor.py hands its __main__ to main()).

    python -m src.predictor [--dataset D] [MODEL ...]         test exported files on the test split
    python -m src.predictor --export checkpoints/best_val_loss.pt   a `python -m src.train` run -> the app's file

export() turns a checkpoint of `python -m src.train` (weights + its .json run record) into the exported file the app
loads, calibrated on the run's validation split.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from src.calibration import describe_calibration, validation_loader
from src.checks import OneLineParser, error_line
from src.data import get_data_loaders
from src.exported import load_predictor
from src.files import WriteError
from src.helpers import DataError
from src.paths import model_file
from src.predictor import export_predictor, predictor_test
from src.presets import DATASETS, eval_resize_size
from src.transfer import build_model


def export(checkpoint: str | Path, path: str | Path | None = None) -> Path:
    """Export a checkpoint written by `python -m src.train` (weights + its .json run record) to a predictor file,
    calibrated on the run's validation split (validation_loader) when that can be read.

    Default destination: checkpoints/original_exported.pt for the from-scratch model, else transfer_exported.pt.
    A missing or damaged checkpoint or run record raises ValueError with one line.
    """
    checkpoint = Path(checkpoint)
    record_path = checkpoint.with_suffix(".json")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        model = build_model(record["model"], len(record["class_names"]), record["image_size"])
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    except FileNotFoundError as err:
        raise ValueError(f"{err.filename}: no such file. Export a checkpoint that `python -m src.train` finished: it "
                         f"writes the weights and their run record {record_path.name}.") from None  # fmt: skip
    except Exception as err:  # noqa: BLE001 - a damaged record or checkpoint fails in many ways
        raise ValueError(f"Cannot export {checkpoint}: it or its run record {record_path.name} is damaged or from "
                         f"another model ({error_line(err)}). Train it again.") from None  # fmt: skip
    path = Path(path) if path else model_file("scratch" if record["model"] == "scratch" else "transfer", record["dataset"], exported=True)
    resize_size = eval_resize_size(record["dataset"], record["image_size"])
    export_predictor(model, record["class_names"], record["mean"], record["std"], path, record["image_size"],
                     resize_size, calibration_loader=validation_loader(record))  # fmt: skip
    return path


def main(argv: list[str] | None = None) -> int:
    """python -m src.predictor [--dataset D] [--export CHECKPOINT] [MODEL ...]: (export, then) test exported
    predictors on the test split."""
    parser = OneLineParser(description="Test exported predictors on the test split; prints their accuracy.")
    parser.add_argument("models", nargs="*", type=Path, metavar="MODEL", help="default: the dataset's exported models")
    parser.add_argument("--dataset", choices=DATASETS, default="landmarks")
    parser.add_argument(
        "--export", type=Path, action="append", default=[], metavar="CHECKPOINT",
        help="first export a checkpoint of `python -m src.train` to the file the app loads, then test it",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        exported = [export(checkpoint) for checkpoint in args.export]
    except (ValueError, WriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for checkpoint, path in zip(args.export, exported):
        print(f"Exported {checkpoint} to {path}")
    default = [model_file(kind, args.dataset, exported=True) for kind in ("scratch", "transfer")]
    models = args.models + exported or default
    try:
        predictors = [load_predictor(path) for path in models]  # first: a bad file stops before the test split is read
        test_loader = get_data_loaders(batch_size=1, num_workers=0, dataset=args.dataset)["test"]
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path, predictor in zip(models, predictors):
        accuracy, confusion = predictor_test(test_loader, predictor, str(path))
        print(f"{path}: test accuracy {100 * accuracy:.1f}% ({np.trace(confusion)}/{confusion.sum()})")
        print(f"{path}: {describe_calibration(predictor)}")
    return 0
