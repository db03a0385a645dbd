"""Loading an exported TorchScript predictor file (src/predictor.py writes them): reading and checking one, and running
it for src/runtime.py. Needs torch alone: no training code, no timm.

    predictor = load_predictor("checkpoints/transfer_exported.pt")   # the TorchScript module, as torch.jit.load gives
    model = TorchScriptModel(predictor)                               # src/runtime.py's interface: run(photo)

Every problem with a model file is a one-line ValueError naming the file and how to fix it.
"""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from src.checks import error_line
from src.files import quiet_torchscript
from src.runtime import HOW_TO_EXPORT, WARM_UP_SIZE, read_model_file

WARM_UP_PHOTO = (1, 3, WARM_UP_SIZE[1], WARM_UP_SIZE[0])  # a blank 800x600 photo: checks a loaded file


def _read_model_file(path: Path) -> bytes:
    """The bytes of the TorchScript archive at `path`; a one-line ValueError when it cannot be read or is not one."""

    def not_loadable(why: str) -> ValueError:
        return ValueError(f"{path}: not a loadable exported model ({why}). {HOW_TO_EXPORT}")

    data = read_model_file(path)
    if not data.startswith(b"PK\x03\x04"):  # TorchScript files are zip archives
        raise not_loadable("not a TorchScript file")
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()  # reads only the archive's table of contents
    except zipfile.BadZipFile:
        raise not_loadable("the file is truncated or damaged") from None
    if not any(name.endswith("/constants.pkl") for name in names):  # every TorchScript archive has one
        saved = any(name.endswith("/data.pkl") for name in names)  # torch.save writes data.pkl, no constants
        raise not_loadable(f"{'weights saved by torch.save' if saved else 'a zip archive'}, not TorchScript")
    return data


def check_predictor(predictor: torch.jit.ScriptModule, path: str | Path) -> None:
    """Raise ValueError (one line naming `path`) unless `predictor` is an exported predictor that classifies a photo.

    Runs it once on a blank 800x600 photo (WARM_UP_PHOTO), which also counts as its first warm-up run.
    """
    names, places = getattr(predictor, "class_names", None), getattr(predictor, "class_places", None)
    if not (isinstance(names, list) and names and all(isinstance(name, str) for name in names)):
        raise ValueError(f"{path}: a TorchScript model without class names, not an exported predictor. {HOW_TO_EXPORT}")
    if not (isinstance(places, list) and len(places) == len(names)):
        raise ValueError(f"{path}: an exported predictor without the places of its classes. {HOW_TO_EXPORT}")
    try:
        with torch.inference_mode():
            probabilities = predictor(torch.zeros(WARM_UP_PHOTO, dtype=torch.uint8))
    except Exception as err:  # noqa: BLE001 - whatever the scripted code raises, the file is not usable
        raise ValueError(f"{path}: fails on a blank 800x600 photo ({error_line(err)}). {HOW_TO_EXPORT}") from None
    if not isinstance(probabilities, torch.Tensor) or tuple(probabilities.shape) != (1, len(names)):
        shape = list(probabilities.shape) if isinstance(probabilities, torch.Tensor) else type(probabilities).__name__
        raise ValueError(
            f"{path}: gives {shape} for one photo instead of [1, {len(names)}], one probability per class name. "
            f"{HOW_TO_EXPORT}"
        )
    if not (torch.isfinite(probabilities).all() and abs(float(probabilities.sum()) - 1.0) < 1e-3):
        raise ValueError(f"{path}: its outputs are not probabilities (no softmax?). {HOW_TO_EXPORT}")


def load_predictor(path: str | Path) -> torch.jit.ScriptModule:
    """torch.jit.load an exported predictor and check it (check_predictor); any problem is a one-line ValueError."""
    path = Path(path)
    data = _read_model_file(path)
    try:
        with quiet_torchscript():
            predictor = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, ValueError, zip errors...
        raise ValueError(f"{path}: not a loadable exported model ({error_line(err)}). {HOW_TO_EXPORT}") from None
    check_predictor(predictor, path)
    return predictor


class TorchScriptModel:
    """A loaded TorchScript predictor behind src/runtime.py's interface: class_names, class_places, threshold,
    can_explain, runtime, path and run(photo, explain)."""

    runtime = "TorchScript"

    def __init__(self, predictor: torch.jit.ScriptModule, path: Path | None = None, optimize: bool = True) -> None:
        """optimize=False: run the plain interpreter (torch.jit.optimized_execution(False)). TorchScript otherwise
        optimizes the model during its first two calls: a cold `python -m src.predict` of one photo with a 50-class
        EfficientNet-Lite0 took 0.53 + 0.11 s to load, check and answer instead of 0.29 + 0.06 s."""
        self.predictor, self.path, self.optimize = predictor, path, optimize
        self.class_names, self.class_places = list(predictor.class_names), list(predictor.class_places)
        self.threshold = float(getattr(predictor, "threshold", -math.inf))  # older files: every photo is known
        self.can_explain = hasattr(predictor, "explain")

    @classmethod
    def load(cls, path: Path, optimize: bool = True) -> "TorchScriptModel":
        """load_predictor(path), its check run as its answers will be (optimized or not)."""
        with torch.jit.optimized_execution(optimize):
            return cls(load_predictor(path), path, optimize)

    def run(self, image, explain: bool = False) -> tuple[np.ndarray, float | None, np.ndarray | None]:
        """PIL RGB photo -> (calibrated probabilities float32 [classes], score or None (files exported without
        classify), heatmap float32 [H, W] or None), as src.onnx_runtime.OnnxPredictor.run."""
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0)  # uint8 [1,3,H,W]
        scores, heatmap = None, None
        with torch.inference_mode(), torch.jit.optimized_execution(self.optimize):
            if explain and self.can_explain:
                probabilities, scores, heatmaps = self.predictor.explain(pixels)
                heatmap = heatmaps[0].float().numpy()
            elif hasattr(self.predictor, "classify"):
                probabilities, scores = self.predictor.classify(pixels)
            else:
                probabilities = self.predictor(pixels)
        return probabilities[0].float().numpy(), None if scores is None else float(scores[0]), heatmap
