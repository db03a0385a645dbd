"""Loading an exported predictor file (src/predictor.py writes them): where they are, reading and checking one, and
warming it up. Everything the app and the predict CLI need, with torch alone: no training code, no timm.

Every problem with a model file is a one-line ValueError naming the file and how to fix it.
"""

from __future__ import annotations

import errno
import io
import math
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from src.files import quiet_torchscript
from src.helpers import model_file
from src.landmarks import landmark_info

SCRATCH_EXPORT = model_file("scratch", exported=True)  # the app's two models
TRANSFER_EXPORT = model_file("transfer", exported=True)
HOW_TO_EXPORT = (
    "Export the model with src.predictor.export_predictor as the notebooks do, or a src.train checkpoint with "
    "`python -m src.predictor --export CHECKPOINT`."
)
WARM_UP_PHOTO = (1, 3, 600, 800)  # a blank 800x600 photo: checks a loaded file and warms it up


def error_line(err: BaseException) -> str:
    """One line for any exception. A TorchScript error is a traceback of scripted code: its last line is the cause."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    line = (lines[-1] if "TorchScript" in lines[0] else lines[0]) if lines else ""
    return line if ":" in line else f"{type(err).__name__}: {line}".rstrip(": ")


def _read_model_file(path: Path) -> bytes:
    """The bytes of the TorchScript archive at `path`; a one-line ValueError when it cannot be read or is not one."""

    def not_loadable(why: str) -> ValueError:
        return ValueError(f"{path}: not a loadable exported model ({why}). {HOW_TO_EXPORT}")

    try:
        with open(path, "rb") as f:  # one open for every check below: the file cannot change in between
            start = f.read(4)
            if not start:
                raise ValueError(f"{path}: the file is empty (an interrupted save or copy?). {HOW_TO_EXPORT}")
            if start != b"PK\x03\x04":  # TorchScript files are zip archives
                raise not_loadable("not a TorchScript file")
            try:
                names = zipfile.ZipFile(f).namelist()  # reads only the archive's table of contents
            except zipfile.BadZipFile:
                raise not_loadable("the file is truncated or damaged") from None
            if not any(name.endswith("/constants.pkl") for name in names):  # every TorchScript archive has one
                saved = any(name.endswith("/data.pkl") for name in names)  # torch.save writes data.pkl, no constants
                raise not_loadable(f"{'weights saved by torch.save' if saved else 'a zip archive'}, not TorchScript")
            f.seek(0)
            return f.read()
    except FileNotFoundError:  # also a dangling symbolic link, or a file deleted since it was listed
        raise ValueError(
            f"{path}: no such file: no exported model there. Run the notebooks (or `make run`) to export one, "
            f"or pass --model."
        ) from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder: give the exported model file (.pt) inside it.") from None
    except PermissionError:
        raise ValueError(f"{path}: permission denied: this user may not read the file. Fix its permissions.") from None
    except OSError as err:
        problem = "a symbolic link that points back to itself" if err.errno == errno.ELOOP else err.strerror or err
        raise ValueError(f"{path}: cannot read the file ({problem}).") from None


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


def warm_up(predictor: nn.Module, runs: int = 1) -> None:
    """Classify a blank 800x600 photo `runs` times, so that the first real photo is not the slow one.

    TorchScript profiles and optimizes a loaded model during its first two calls: they take several times longer than
    the next ones (bench/predict_latency.py prints both). load_predictor's check was the first call; this is the second
    (EfficientNet-Lite0 on 2 cores: 0.41 s, then 0.19 s a photo).
    """
    with torch.inference_mode():
        for _ in range(runs):
            predictor(torch.zeros(WARM_UP_PHOTO, dtype=torch.uint8))


def answer(predictor: torch.jit.ScriptModule, image, k: int = 5, explain: bool = False) -> dict:
    """What the app and the predict CLI show for one PIL RGB photo:

    {"predictions": the k most likely classes, most likely first: [{"name", "place", "country", "probability",
                    "latitude", "longitude"}] (place, country and coordinates "" / None for unknown names),
     "countries":   [(country, probability summed over its landmarks)] for every country, most likely first,
     "known":       whether the photo scores at least the file's "unknown" threshold (True for files exported
                    without one),
     "heatmap":     where the model looked for its top class: float32 [H, W] in [0, 1] at the photo's size, or
                    None (explain=False, or a file exported without `explain`)}

    Files export these methods and attributes when they have them (src/predictor.py): classify(x) -> (probabilities
    [B, C], scores [B]); explain(x) -> (probabilities, scores, heatmaps [B, H, W]); threshold (a score below it: none
    of the known classes). Older files only have forward(x) -> probabilities.
    """
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0)  # uint8 [1,3,H,W]
    scores, heatmap = None, None
    with torch.inference_mode():
        if explain and hasattr(predictor, "explain"):
            probabilities, scores, heatmaps = predictor.explain(pixels)
            heatmap = heatmaps[0].float().numpy()
        elif hasattr(predictor, "classify"):
            probabilities, scores = predictor.classify(pixels)
        else:
            probabilities = predictor(pixels)
    probabilities = probabilities[0]
    rows = [landmark_info(name) or {} for name in predictor.class_names]
    values, indices = probabilities.topk(min(k, len(probabilities)))
    predictions = [
        {"name": predictor.class_names[index], "place": predictor.class_places[index],
         "country": rows[index].get("country", ""), "probability": probability,
         "latitude": float(rows[index]["latitude"]) if rows[index] else None,
         "longitude": float(rows[index]["longitude"]) if rows[index] else None}
        for probability, index in zip(values.tolist(), indices.tolist())
    ]  # fmt: skip
    countries: dict[str, float] = {}
    for row, probability in zip(rows, probabilities.tolist()):
        if row:
            countries[row["country"]] = countries.get(row["country"], 0.0) + probability
    known = scores is None or float(scores[0]) >= float(getattr(predictor, "threshold", -math.inf))  # none: all known
    return {"predictions": predictions, "countries": sorted(countries.items(), key=lambda item: -item[1]),
            "known": known, "heatmap": heatmap}  # fmt: skip


def none_of_these(n_classes: int) -> str:
    """What the app and the CLI say of a photo that answer() finds not "known"."""
    return f"This does not look like any of the {n_classes} landmarks"


def top_k(predictor: torch.jit.ScriptModule, image, k: int = 5) -> list[dict]:
    """The k most likely classes for one PIL RGB image: answer(...)["predictions"]."""
    return answer(predictor, image, k)["predictions"]
