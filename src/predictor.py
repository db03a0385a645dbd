"""The exported predictor: one TorchScript file that takes raw photos and returns landmark probabilities.

    predictor = torch.jit.load("checkpoints/transfer_exported.pt")   # needs only torch, not this project
    probabilities = predictor(images)          # images: [B,3,H,W] uint8 0-255 or float 0-1, any H, W
    predictor.class_names[probabilities[0].argmax()]

The preprocessing the model was trained with (resize, center crop, normalize) is inside the file, as are the class
names and places, so nothing can drift apart between training and the app.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from src.checks import OneLineParser, check_int
from src.data import base_dataset, get_data_loaders, get_normalization
from src.exported import error_line, load_predictor
from src.files import WriteError, quiet_torchscript, save_script
from src.helpers import DataError, model_file
from src.landmarks import display_name, landmark_place
from src.presets import DATASETS, eval_resize_size
from src.transfer import build_model

# A photo more elongated than MAX_ASPECT:1 keeps only its middle MAX_ASPECT:1 part before it is resized. The centre
# crop after resizing keeps only the middle image_size/resize_size (224/256) of the shorter side's length along the
# long side, so it sees the same pixels; without this, a 1 x 20,000 photo resized to 256 px would become 256 x 5,120,000
# floats (15.7 GB). Panoramas are about 4:1: every ordinary photo keeps exactly the same resize, and a resized photo
# has at most 256 x 2,048 pixels (6 MB as float32).
MAX_ASPECT = 8


class Predictor(nn.Module):
    """model + its eval preprocessing + softmax. [B,3,H,W] uint8 or float image batch -> probabilities [B, classes]."""

    def __init__(
        self,
        model: nn.Module,
        class_names: list[str],
        mean: list[float] | torch.Tensor,
        std: list[float] | torch.Tensor,
        image_size: int,
        resize_size: int,
    ):
        """image_size: the side of the central crop the model sees; resize_size: the shorter side the photo is resized
        to first. Both are the evaluation transform's (export_settings reads them from a loader)."""
        super().__init__()
        self.model = model.eval()
        self.class_names = list(class_names)
        self.class_places = [landmark_place(name) for name in class_names]  # "" where unknown
        self.image_size = image_size
        self.resize_size = resize_size
        self.max_aspect = MAX_ASPECT  # an attribute: TorchScript cannot read module globals
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,3,H,W] uint8 0-255 or float 0-1, H and W >= 1 -> probabilities [B, classes] float32."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError("expected a batch of RGB images shaped [B, 3, H, W] with H and W at least 1")
        with torch.no_grad():
            height, width = x.shape[-2], x.shape[-1]
            longest = self.max_aspect * min(height, width)  # see MAX_ASPECT; cropped still uint8, before the float copy
            if height > longest:
                x = x[:, :, (height - longest) // 2 : (height - longest) // 2 + longest, :]
            if width > longest:
                x = x[:, :, :, (width - longest) // 2 : (width - longest) // 2 + longest]
            if x.dtype == torch.uint8:
                x = x.float().div_(255.0)  # in place: one float copy of the photo (1.1 GB at 90 megapixels), not two
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


def export_settings(data_loader: DataLoader) -> dict:
    """What an exported file must know of the data its model was trained with, read from an evaluation loader (e.g.
    loaders["test"]): {"class_names", "mean", "std", "image_size", "resize_size"}, for export_predictor(**...).

    The sizes come from the loader's own Resize and CenterCrop, the statistics from its Normalize, so the file's
    preprocessing is the evaluation transform's by construction. A training loader (random crops) is refused.
    """
    steps = base_dataset(data_loader.dataset).transform.transforms
    if any(isinstance(step, (v2.RandomResizedCrop, v2.RandomCrop)) for step in steps):
        raise ValueError("export_settings needs an evaluation loader (e.g. loaders['test']), not the training loader")
    resize = next(step.size for step in steps if isinstance(step, v2.Resize))
    crop = next((step.size for step in steps if isinstance(step, v2.CenterCrop)), None)
    resize_size = resize[0] if isinstance(resize, (list, tuple)) else resize
    mean, std = get_normalization(data_loader)
    return {
        "class_names": [display_name(name) for name in base_dataset(data_loader.dataset).classes],
        "mean": mean.tolist(), "std": std.tolist(),
        "image_size": crop[0] if crop else resize_size, "resize_size": resize_size,
    }  # fmt: skip


def export_predictor(
    model: nn.Module,
    class_names: list[str],
    mean: list[float] | torch.Tensor,
    std: list[float] | torch.Tensor,
    path: str | Path,
    image_size: int,
    resize_size: int,
) -> torch.jit.ScriptModule:
    """Wrap the model in a Predictor, compile it with TorchScript and save it (atomically) to `path`.

    image_size and resize_size must be the eval transform's (src.presets.eval_resize_size(dataset, image_size)):
    export_settings(loaders["test"]) gives every argument but the model and the path, read from the data.
    Returns the scripted predictor. The model is copied to the CPU; the original is left where it was.
    Raises ValueError (one line, nothing written) for settings that make no sense or a model whose output width is not
    len(class_names); src.files.WriteError (one line) when the file cannot be written: a previous file stays intact.
    """
    check_int(image_size, 1, "image_size")
    check_int(resize_size, image_size, "resize_size")  # the shorter side before the central crop: at least the crop
    if not (isinstance(class_names, (list, tuple)) and class_names and all(isinstance(n, str) for n in class_names)):
        raise ValueError(f"class_names must be a non-empty list of names, got {class_names!r}")
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names must all be different, got {list(class_names)!r}")
    for name, values in (("mean", torch.as_tensor(mean).flatten()), ("std", torch.as_tensor(std).flatten())):
        if values.numel() != 3 or not torch.isfinite(values).all() or (name == "std" and (values <= 0).any()):
            raise ValueError(f"{name} must be 3 finite numbers (R, G, B), std above 0, got {values.tolist()}")
    predictor = Predictor(copy.deepcopy(model).cpu(), class_names, mean, std, image_size, resize_size).eval()
    try:  # one blank photo through the eager predictor: the model's output width must be one per class name
        with torch.no_grad():
            shape = list(predictor(torch.zeros((1, 3, image_size, image_size), dtype=torch.uint8)).shape)
    except Exception as err:  # noqa: BLE001 - the model's own error, in one line (its traceback stays chained)
        raise ValueError(f"the model fails on a [1, 3, {image_size}, {image_size}] image ({error_line(err)})") from err
    if shape != [1, len(class_names)]:
        raise ValueError(
            f"the model gives {shape} for one image instead of [1, {len(class_names)}], one output per class name: "
            f"build it with {len(class_names)} classes, or pass the class names it was trained with"
        )
    with quiet_torchscript():
        scripted = torch.jit.script(predictor)
        save_script(scripted, path)  # atomic; ScriptModule.save itself would abort the process on a full disk
    return scripted


def export(checkpoint: str | Path, path: str | Path | None = None) -> Path:
    """Export a checkpoint written by `python -m src.train` (weights + its .json run record) to a predictor file.

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
        accuracy, confusion = predictor_test(test_loader, predictor)
        print(f"{path}: test accuracy {100 * accuracy:.1f}% ({np.trace(confusion)}/{confusion.sum()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
