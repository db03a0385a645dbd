"""The exported predictor: one TorchScript file that takes raw photos and returns landmark probabilities.

    predictor = torch.jit.load("checkpoints/transfer_exported.pt")   # needs only torch, not this project
    probabilities = predictor(images)          # images: [B,3,H,W] uint8 0-255 or float 0-1, any H, W
    predictor.class_names[probabilities[0].argmax()]
    probabilities, scores = predictor.classify(images)   # scores < predictor.threshold: none of the known classes
    probabilities, scores, heatmaps = predictor.explain(images)   # and where the model looked (src/cam.py)

The preprocessing the model was trained with (resize, center crop, normalize) is inside the file, as are the class
names and places, so nothing can drift apart between training and the app. So are the temperature that calibrates
its probabilities and the "unknown" threshold, fitted on the validation split (src/calibration.py).
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import v2

from src.calibration import DEFAULT_SCORE, Calibration, calibrate, calibrated
from src.cam import ClassActivationMapper, cam_parts
from src.checks import check_int, error_line
from src.crop import MAX_ASPECT, crop_geometry
from src.data import base_dataset, get_normalization
from src.files import quiet_torchscript, remove_file, save_script
from src.landmarks import display_name, landmark_place
from src.paths import onnx_beside
from src.progress import tqdm


class Predictor(nn.Module):
    """model + its eval preprocessing + calibrated softmax. [B,3,H,W] uint8 or float image batch -> probabilities
    [B, classes]; classify() also gives each photo's score against `threshold` (below it: none of the classes)."""

    def __init__(
        self,
        model: nn.Module,
        class_names: list[str],
        mean: list[float] | torch.Tensor,
        std: list[float] | torch.Tensor,
        image_size: int,
        resize_size: int,
        calibration: Calibration | None = None,
    ):
        """image_size: the side of the central crop the model sees; resize_size: the shorter side the photo is resized
        to first. Both are the evaluation transform's (export_settings reads them from a loader). calibration: the
        temperature, score kind and threshold (src.calibration.calibrate); None: T = 1 and every photo is known."""
        super().__init__()
        self.model = model.eval()
        self.class_names = list(class_names)
        self.class_places = [landmark_place(name) for name in class_names]  # "" where unknown
        self.image_size = image_size
        self.resize_size = resize_size
        self.max_aspect = MAX_ASPECT  # an attribute: TorchScript cannot read module globals
        self.temperature = float(calibration.temperature) if calibration else 1.0  # probabilities: softmax(logits / T)
        self.score_kind = calibration.score_kind if calibration else DEFAULT_SCORE
        self.threshold = float(calibration.threshold) if calibration else -math.inf  # score below it: not a known class
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,3,H,W] uint8 0-255 or float 0-1, H and W >= 1 -> calibrated probabilities [B, classes] float32."""
        return self.classify(x)[0]

    @torch.jit.export
    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x as for forward -> (calibrated probabilities [B, classes], scores [B]: below `threshold`, none of the
        classes; the score is `score_kind`'s, see src.calibration.calibrated)."""
        with torch.no_grad():
            return calibrated(self.logits(self.preprocess(x)), self.temperature, self.score_kind)

    @torch.jit.export
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """x as for forward -> the normalized central crop the model sees, [B, 3, image_size, image_size] float32."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError("expected a batch of RGB images shaped [B, 3, H, W] with H and W at least 1")
        with torch.no_grad():
            # cut to at most max_aspect:1 (see MAX_ASPECT), resize the shorter side to resize_size, central crop
            cut_top, cut_left, height, width, new_height, new_width, top, left = crop_geometry(
                x.shape[-2], x.shape[-1], self.resize_size, self.image_size, self.max_aspect
            )
            x = x[:, :, cut_top : cut_top + height, cut_left : cut_left + width]  # still uint8: before the float copy
            if x.dtype == torch.uint8:
                x = x.float().div_(255.0)  # in place: one float copy of the photo (1.1 GB at 90 megapixels), not two
            # antialiased, like PIL
            x = F.interpolate(x, size=[new_height, new_width], mode="bilinear", antialias=True, align_corners=False)
            x = x[:, :, top : top + self.image_size, left : left + self.image_size]
            return (x - self.mean) / self.std

    @torch.jit.export
    def logits(self, crop: torch.Tensor) -> torch.Tensor:
        """The model's logits [B, classes] for preprocess()'s crops (gradients are kept: explanations may need them)."""
        return self.model(crop)


class ExplainingPredictor(Predictor):
    """A Predictor that also says where its model looked: explain(). For models that end in global average pooling
    and one linear layer (both of this project's kinds; src.cam.cam_parts)."""

    def __init__(self, model: nn.Module, class_names: list[str], mean, std, image_size: int, resize_size: int,
                 calibration: Calibration | None = None):  # fmt: skip
        super().__init__(model, class_names, mean, std, image_size, resize_size, calibration)
        self.cam = ClassActivationMapper(*cam_parts(self.model), image_size, resize_size, self.max_aspect)

    @torch.jit.export
    def explain(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x as for forward -> (calibrated probabilities [B, classes], scores [B], heatmaps [B, H, W] float32 in
        [0, 1]: the class activation map of each photo's most likely class on the photo, 0 outside the central crop
        the model sees). One pass of the network, as classify (about 1.02x its time: bench/explain_speed.py)."""
        with torch.no_grad():
            logits, heatmaps = self.cam(self.preprocess(x), x.shape[-2], x.shape[-1])
            probabilities, scores = calibrated(logits, self.temperature, self.score_kind)
        return probabilities, scores, heatmaps


def predictor_class(model: nn.Module) -> type[Predictor]:
    """ExplainingPredictor for a model whose class activation map is exact (src.cam.cam_parts), else Predictor."""
    try:
        cam_parts(model)
    except ValueError:
        return Predictor
    return ExplainingPredictor


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
    calibration_loader: DataLoader | None = None,
    onnx: bool = True,
) -> torch.jit.ScriptModule:
    """Wrap the model in a Predictor, compile it with TorchScript and save it (atomically) to `path`; with onnx, also
    write the same predictor as an ONNX file beside it (src.paths.onnx_beside: the same name, suffix .onnx), which the
    app and the predict CLI prefer (src/onnx_export.py).

    image_size and resize_size must be the eval transform's (src.presets.eval_resize_size(dataset, image_size)):
    export_settings(loaders["test"]) gives every argument but the model and the path, read from the data.
    calibration_loader: the validation loader (loaders["valid"]: normalized crops and labels); the file's temperature
    and "unknown" threshold are fitted on it (src.calibration.calibrate, on the model's device). None: temperature 1,
    threshold -inf (every photo is one of the classes).
    Returns the scripted predictor. The model is copied to the CPU; the original is left where it was, in its mode.
    An ONNX file from an earlier export is removed first, so it never answers for another model. When the ONNX export
    fails (a model ONNX cannot express, a full disk, no onnxscript), one line on stderr says so: the TorchScript file
    is still written, and the app uses it. Raises ValueError (one line, nothing written) for settings that make no sense, a model whose output width is not
    len(class_names) or a calibration loader that does not fit the model; src.files.WriteError (one line) when the file
    cannot be written: a previous file stays intact.
    """
    check_int(image_size, 1, "image_size")
    check_int(resize_size, image_size, "resize_size")
    if Path(path).suffix.lower() == ".onnx":
        raise ValueError(f"path is the TorchScript file's ({path}): give it a .pt name, the .onnx file goes beside it")  # the shorter side before the central crop: at least the crop
    if not (isinstance(class_names, (list, tuple)) and class_names and all(isinstance(n, str) for n in class_names)):
        raise ValueError(f"class_names must be a non-empty list of names, got {class_names!r}")
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names must all be different, got {list(class_names)!r}")
    for name, values in (("mean", torch.as_tensor(mean).flatten()), ("std", torch.as_tensor(std).flatten())):
        if values.numel() != 3 or not torch.isfinite(values).all() or (name == "std" and (values <= 0).any()):
            raise ValueError(f"{name} must be 3 finite numbers (R, G, B), std above 0, got {values.tolist()}")
    wrapper = predictor_class(model)  # with explain() when the model allows it
    predictor = wrapper(copy.deepcopy(model).cpu(), class_names, mean, std, image_size, resize_size).eval()
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
    if calibration_loader is not None:
        flat = {name: torch.as_tensor(values).flatten().tolist() for name, values in (("mean", mean), ("std", std))}
        _check_calibration_loader(calibration_loader, {**flat, "image_size": image_size, "resize_size": resize_size})
        calibration = calibrate(model, calibration_loader)
        predictor = wrapper(predictor.model, class_names, mean, std, image_size, resize_size, calibration).eval()
    with quiet_torchscript():
        scripted = torch.jit.script(predictor)
        remove_file(onnx_beside(path))  # first: an interrupted export leaves no .onnx of the previous model
        save_script(scripted, path)  # atomic; ScriptModule.save itself would abort the process on a full disk
    if onnx:
        _write_onnx_beside(predictor, onnx_beside(path))
    return scripted


def _write_onnx_beside(predictor: Predictor, path: Path) -> None:
    """write_onnx, or one line on stderr saying why the ONNX file was not written (the TorchScript file was)."""
    try:
        from src.onnx_export import write_onnx  # here: onnx and onnxscript load only when a file is exported

        write_onnx(predictor, path)
    except Exception as err:  # noqa: BLE001 - any exporter failure: the TorchScript file is enough for everything
        print(f"note: {path} not written ({error_line(err)}); the app and the CLI use the TorchScript file beside it",
              file=sys.stderr)  # fmt: skip


def _check_calibration_loader(loader: DataLoader, expected: dict) -> None:
    """Raise ValueError (one line) unless the loader prepares images like the file: the same export_settings sizes and
    normalization as `expected`. A loader without a torchvision transform (e.g. of tensors) is not checked."""
    try:
        found = export_settings(loader)
    except (AttributeError, StopIteration, TypeError):  # no Resize and Normalize to read (e.g. a loader of tensors)
        return
    except ValueError as err:  # a training loader (random crops), or no Normalize step to compare
        if "training loader" not in str(err):
            return
        raise ValueError("calibration_loader must be the validation loader (loaders['valid']), not the training "
                         "loader") from None  # fmt: skip
    differ = [f"{key} {found[key]}, not {want}" for key, want in expected.items() if not np.allclose(found[key], want)]
    if differ:
        raise ValueError(f"calibration_loader prepares images unlike the exported file ({'; '.join(differ)}): pass the "
                         f"validation loader of the data the model was trained on (loaders['valid'])")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Testing the exported file

# Photos of one size tested together: 2,000 of Fashion-MNIST's test images (all 28 x 28) took 3.6 s one by one through
# an exported MyModel on 2 cores, 0.6 s 64 at a time. The landmark photos' sizes vary: most of theirs still go one by one.
TEST_BATCH = 64


def predictor_test(
    test_dataloader: DataLoader, model_reloaded: nn.Module, name: str = "the exported predictor"
) -> tuple[float, np.ndarray]:
    """Run the predictor on every raw test image (its own preprocessing, original size), and print its accuracy under
    `name` (e.g. the file's name), so a printed figure always says which model it belongs to. Consecutive images of
    one size go through it together, up to TEST_BATCH: the file preprocesses each image of a batch as it would alone.

    Returns (accuracy in [0, 1], confusion matrix [classes, classes] of counts: row = true class, column = predicted).
    """
    subset = test_dataloader.dataset
    raw = copy.copy(base_dataset(subset))  # the same images, but undecorated: uint8 [3,H,W] at their original size
    raw.transform = v2.Compose([v2.ToImage(), v2.RGB()])
    indices = subset.indices if isinstance(subset, Subset) else range(len(raw))
    n_classes = len(model_reloaded.class_names)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    images, labels = [], []

    def classify_batch() -> None:
        for label, predicted in zip(labels, model_reloaded(torch.stack(images)).argmax(dim=1).tolist()):
            confusion[label, predicted] += 1
        images.clear()
        labels.clear()

    for index in tqdm(indices, desc=f"Testing {name}", unit="img"):
        image, label = raw[index]
        if images and (image.shape != images[0].shape or len(images) == TEST_BATCH):
            classify_batch()
        images.append(image)
        labels.append(label)
    if images:
        classify_batch()
    accuracy = float(np.trace(confusion) / confusion.sum())
    print(f"Accuracy of {name}: {100 * accuracy:.1f}% ({np.trace(confusion)}/{confusion.sum()})")
    return accuracy, confusion


if __name__ == "__main__":  # python -m src.predictor: the command line is in src/predictor_cli.py
    from src.predictor_cli import main

    sys.exit(main())
