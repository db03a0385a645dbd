"""The exported models, whichever runtime runs them: which file to use, loading it, and what it says of a photo.

    model = load_model(chosen_file(TRANSFER_EXPORT))   # the .onnx beside it when ONNX Runtime is installed, else it
    answer(model, photo, k=5, explain=True)            # what the app and the predict CLI show

A file is run by the runtime its suffix names: `.onnx` by ONNX Runtime (src/onnx_runtime.py), anything else as a
TorchScript file (src/exported.py). Both give the same answers (tests/test_onnx_runtime.py); ONNX Runtime gives them
in about half the time and starts without torch (README, "Fast answers"). Nothing here imports torch.
"""

from __future__ import annotations

import errno
import importlib.util
from pathlib import Path

import numpy as np

from src.checks import error_line
from src.landmarks import landmark_info
from src.onnx_runtime import FORMAT, OnnxPredictor, open_session
from src.paths import model_file, onnx_beside

SCRATCH_EXPORT = model_file("scratch", exported=True)  # the app's two models (TorchScript; the .onnx beside them)
TRANSFER_EXPORT = model_file("transfer", exported=True)
APP_MODELS = {  # the app's and the web page's choices: label -> exported TorchScript file; the first that exists is
    "Transfer learning (EfficientNet-Lite0)": TRANSFER_EXPORT,  # the default
    "From scratch (MyModel)": SCRATCH_EXPORT,
}
HOW_TO_EXPORT = (
    "Export the model with src.predictor.export_predictor as the notebooks do, or a src.train checkpoint with "
    "`python -m src.predictor --export CHECKPOINT`."
)
WARM_UP_SIZE = (800, 600)  # px: a blank photo of a usual size checks a loaded file and warms it up


def onnx_runtime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def chosen_file(exported: str | Path) -> Path:
    """The file to run for an exported TorchScript file: the ONNX file beside it when it exists and ONNX Runtime is
    installed (faster, and no torch to import), else the TorchScript file itself."""
    onnx = onnx_beside(exported)
    return onnx if onnx.is_file() and onnx_runtime_installed() else Path(exported)


def read_model_file(path: Path) -> bytes:
    """The bytes of a model file; a one-line ValueError naming it when it cannot be read."""
    try:
        with open(path, "rb") as f:  # one open for every check: the file cannot change in between
            data = f.read()
    except FileNotFoundError:  # also a dangling symbolic link, or a file deleted since it was listed
        raise ValueError(
            f"{path}: no such file: no exported model there. Run the notebooks (or `make run`) to export one, "
            f"or pass --model."
        ) from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder: give the exported model file (.pt or .onnx) inside it.") from None
    except PermissionError:
        raise ValueError(f"{path}: permission denied: this user may not read the file. Fix its permissions.") from None
    except OSError as err:
        problem = "a symbolic link that points back to itself" if err.errno == errno.ELOOP else err.strerror or err
        raise ValueError(f"{path}: cannot read the file ({problem}).") from None
    if not data:
        raise ValueError(f"{path}: the file is empty (an interrupted save or copy?). {HOW_TO_EXPORT}")
    return data


def load_onnx(path: str | Path) -> OnnxPredictor:
    """An exported ONNX file in ONNX Runtime, checked on a blank photo (which also warms it up); any problem is a
    one-line ValueError naming the file."""
    path = Path(path)
    data = read_model_file(path)
    try:
        session = open_session(data)
    except ImportError:
        raise ValueError(f"{path}: ONNX Runtime is not installed (pip install -r requirements.txt), or use the .pt "
                         "file beside it.") from None  # fmt: skip
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph/... errors
        raise ValueError(f"{path}: not a loadable ONNX model ({error_line(err)}). {HOW_TO_EXPORT}") from None
    try:
        model = OnnxPredictor(path, session)
    except (KeyError, ValueError, TypeError) as err:  # metadata missing or malformed
        raise ValueError(f"{path}: an ONNX file without this project's metadata ({FORMAT}; {error_line(err)}), not an "
                         f"exported predictor. {HOW_TO_EXPORT}") from None  # fmt: skip
    try:
        probabilities = model.run(blank_photo(), explain=model.can_explain)[0]
    except Exception as err:  # noqa: BLE001 - whatever the graph raises, the file is not usable
        raise ValueError(f"{path}: fails on a blank 800x600 photo ({error_line(err)}). {HOW_TO_EXPORT}") from None
    sums_to_1 = np.isfinite(probabilities).all() and abs(float(probabilities.sum()) - 1.0) <= 1e-3
    if probabilities.shape != (len(model.class_names),) or not sums_to_1:
        raise ValueError(f"{path}: its outputs are not one probability per class name. {HOW_TO_EXPORT}")
    return model


def load_model(path: str | Path, optimize: bool = True):
    """An exported model file, loaded by the runtime its suffix names and checked: an OnnxPredictor for .onnx, a
    src.exported.TorchScriptModel otherwise. Both have class_names, class_places, threshold, can_explain, runtime (its
    name) and run(photo, explain). Any problem is a one-line ValueError naming the file.

    optimize=False: TorchScript runs its plain interpreter instead of optimizing the model during its first two calls,
    which pays only over many photos (the predict CLI; src.exported.TorchScriptModel). ONNX Runtime always optimizes,
    when the file is loaded."""
    if Path(path).suffix.lower() == ".onnx":
        return load_onnx(path)
    from src.exported import TorchScriptModel  # here: torch is imported only for a TorchScript file

    return TorchScriptModel.load(Path(path), optimize)


def blank_photo():
    """A black 800x600 photo (PIL RGB): checks a loaded file and warms it up."""
    from PIL import Image

    return Image.new("RGB", WARM_UP_SIZE)


def answer(model, image, k: int = 5, explain: bool = False) -> dict:
    """What the app and the predict CLI show for one PIL RGB photo, from a load_model model (or a TorchScript
    predictor, torch.jit.load-ed):

    {"predictions": the k most likely classes, most likely first: [{"name", "place", "country", "probability",
                    "latitude", "longitude"}] (place, country and coordinates "" / None for unknown names),
     "countries":   [(country, probability summed over its landmarks)] for every country, most likely first,
     "known":       whether the photo scores at least the file's "unknown" threshold (True for files exported
                    without one),
     "heatmap":     where the model looked for its top class: float32 [H, W] in [0, 1] at the photo's size, or
                    None (explain=False, or a file exported without it)}
    """
    if not hasattr(model, "run"):  # a TorchScript predictor itself
        from src.exported import TorchScriptModel

        model = TorchScriptModel(model)
    probabilities, score, heatmap = model.run(image, explain)
    rows = [landmark_info(name) or {} for name in model.class_names]
    order = np.argsort(-probabilities, kind="stable")[: min(k, len(probabilities))]
    predictions = [
        {"name": model.class_names[index], "place": model.class_places[index],
         "country": rows[index].get("country", ""), "probability": float(probabilities[index]),
         "latitude": float(rows[index]["latitude"]) if rows[index] else None,
         "longitude": float(rows[index]["longitude"]) if rows[index] else None}
        for index in order.tolist()
    ]  # fmt: skip
    countries: dict[str, float] = {}
    for row, probability in zip(rows, probabilities.tolist()):
        if row:
            countries[row["country"]] = countries.get(row["country"], 0.0) + probability
    known = score is None or score >= model.threshold  # NaN: never known
    return {"predictions": predictions, "countries": sorted(countries.items(), key=lambda item: -item[1]),
            "known": known, "heatmap": heatmap}  # fmt: skip


def none_of_these(n_classes: int) -> str:
    """What the app and the CLI say of a photo that answer() finds not "known"."""
    return f"This does not look like any of the {n_classes} landmarks"


def top_k(model, image, k: int = 5) -> list[dict]:
    """The k most likely classes for one PIL RGB image: answer(...)["predictions"]."""
    return answer(model, image, k)["predictions"]


def describe(model) -> str:
    """'Using checkpoints/transfer_exported.onnx (ONNX Runtime)': the one line that says which file answers."""
    return f"Using {model.path} ({model.runtime})"



def warm_up(model, runs: int = 2) -> None:
    """Run a blank 800x600 photo through the model `runs` times (with explain when it has it, as the app's answers),
    so that the first real photo is not the slow one. TorchScript profiles and optimizes each method during its first
    two calls, which take several times longer than the next ones (bench/predict_latency.py prints both)."""
    for _ in range(runs):
        model.run(blank_photo(), explain=model.can_explain)
