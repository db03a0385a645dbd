"""Specification of src/exported.py: loading an exported predictor file, checking it, warming it up."""

import errno
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.exported import HOW_TO_EXPORT, answer, load_predictor, warm_up
from src.files import quiet_torchscript
from src.predictor import Predictor
from tests.conftest import LANDMARK_NAMES

MEAN, STD = [0.5, 0.45, 0.4], [0.25, 0.25, 0.25]


def photo(width: int, height: int, seed: int = 0) -> torch.Tensor:
    """A random uint8 'photo' batch [1,3,height,width]."""
    return torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_warm_up_runs_a_loaded_predictor_without_changing_its_answers(exported_scratch):
    predictor = load_predictor(exported_scratch)
    with torch.inference_mode():
        cold = predictor(photo(800, 600))
        warm_up(predictor)
        assert torch.allclose(predictor(photo(800, 600)), cold, atol=1e-6)


def test_class_names_and_places_travel_inside_the_file(exported_scratch):
    predictor = load_predictor(exported_scratch)
    assert list(predictor.class_names) == LANDMARK_NAMES
    assert list(predictor.class_places) == ["Paris, France", "San Francisco, California, United States", "Brussels, Belgium"]


class NotAPredictor(torch.nn.Module):
    """A scriptable module with class names that fails on a photo, or returns scores that are not probabilities."""

    def __init__(self, fails: bool):
        super().__init__()
        self.class_names, self.class_places, self.fails = LANDMARK_NAMES, ["", "", ""], fails

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(-1, 7) if self.fails else torch.ones(x.shape[0], 3)


def model_file(kind: str, folder: Path, exported: Path, model: torch.nn.Module) -> Path:
    """A file --model might be given that is not a usable exported predictor."""
    path = folder / f"{kind}.pt"
    if kind in ("bare MyModel", "width mismatch", "fails on a photo", "no softmax"):
        module = {"bare MyModel": model, "width mismatch": Predictor(model, LANDMARK_NAMES[:2], MEAN, STD, 224, 256),
                  "fails on a photo": NotAPredictor(fails=True), "no softmax": NotAPredictor(fails=False)}[kind]
        with quiet_torchscript():
            torch.jit.script(module).save(str(path))
    elif kind == "weights":
        torch.save(model.state_dict(), path)
    elif kind == "zip of something else":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("photos/readme.txt", "holiday photos")
    elif kind in ("empty", "text"):
        path.write_text("" if kind == "empty" else "a model, honestly")
    elif kind == "truncated":
        path.write_bytes(exported.read_bytes()[: exported.stat().st_size // 2])
    elif kind == "folder":
        path.mkdir()
    elif kind == "symlink loop":
        path.symlink_to(path)
    return path


@pytest.mark.parametrize(
    "kind, words",
    [("bare MyModel", "a TorchScript model without class names"), ("width mismatch", "instead of [1, 2]"),
     ("fails on a photo", "fails on a blank 800x600 photo (RuntimeError: shape '[-1, 7]' is invalid"),
     ("no softmax", "not probabilities"), ("weights", "weights saved by torch.save"),
     ("zip of something else", "a zip archive"), ("empty", "the file is empty"), ("text", "not a TorchScript file"),
     ("truncated", "truncated or damaged"), ("folder", "is a folder"), ("symlink loop", "points back to itself"),
     ("missing", "no such file")],
)  # fmt: skip
def test_a_file_that_is_not_a_usable_predictor_is_one_line_naming_it(
    kind, words, exported_scratch, small_scratch_model, tmp_path
):
    path = model_file(kind, tmp_path, exported_scratch, small_scratch_model)
    with pytest.raises(ValueError) as info:
        load_predictor(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message, message
    if kind not in ("folder", "symlink loop", "missing"):
        assert message.endswith(HOW_TO_EXPORT)


@pytest.mark.parametrize(
    "error, words",
    [(PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
     (FileNotFoundError(errno.ENOENT, "No such file or directory"), "no such file"),
     (OSError(errno.EIO, "Input/output error"), "cannot read the file (Input/output error)")],
)  # fmt: skip
def test_a_model_file_that_cannot_be_read_says_why(error, words, exported_scratch, monkeypatch):
    """As root, chmod does not stop reads: the error comes from a stand-in for open (or the file was just deleted)."""

    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr("src.exported.open", refuse, raising=False)  # shadows the builtin in src.exported only
    with pytest.raises(ValueError) as info:
        load_predictor(exported_scratch)
    assert str(info.value).startswith(f"{exported_scratch}: {words}") and "not a loadable" not in str(info.value)


# ----------------------------------------------------------------------------------------------------------------------
# answer: what the app and the CLI show for one photo


class Scripted(torch.nn.Module):
    """A predictor file's interface with fixed answers: probabilities, a score against a threshold, a heatmap."""

    def __init__(self, probabilities: list[float], score: float, threshold: float):
        super().__init__()
        self.class_names = LANDMARK_NAMES
        self.class_places = ["Paris, France", "San Francisco, California, United States", "Brussels, Belgium"]
        self.threshold = threshold
        self.register_buffer("probabilities", torch.tensor([probabilities]))
        self.register_buffer("score", torch.tensor([score]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probabilities

    @torch.jit.export
    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.probabilities, self.score

    @torch.jit.export
    def explain(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.probabilities, self.score, torch.linspace(0, 1, x.shape[2] * x.shape[3]).view(1, x.shape[2], -1)


def scripted(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with quiet_torchscript():
        return torch.jit.script(module)


def test_answer_gives_the_top_k_with_their_places_and_the_probabilities_summed_by_country():
    image = Image.new("RGB", (40, 30))
    result = answer(scripted(Scripted([0.2, 0.5, 0.3], score=1.0, threshold=0.5)), image, k=2)
    assert [(p["name"], p["country"], p["probability"]) for p in result["predictions"]] == [
        ("Golden Gate Bridge", "United States", pytest.approx(0.5)), ("Atomium", "Belgium", pytest.approx(0.3))]
    assert result["predictions"][0]["latitude"] == pytest.approx(37.8199, abs=0.01)
    assert result["countries"] == [("United States", pytest.approx(0.5)), ("Belgium", pytest.approx(0.3)),
                                   ("France", pytest.approx(0.2))]  # fmt: skip
    assert result["known"] and result["heatmap"] is None


def test_a_photo_scoring_below_the_files_threshold_is_unknown_and_explain_gives_a_heatmap_at_its_size():
    predictor = scripted(Scripted([0.2, 0.5, 0.3], score=0.4, threshold=0.5))
    result = answer(predictor, Image.new("RGB", (40, 30)), explain=True)
    assert not result["known"]
    assert result["heatmap"].shape == (30, 40) and result["heatmap"].dtype == np.float32


def test_an_exported_file_without_calibration_knows_every_photo_and_explains_it_at_the_photos_size(exported_scratch):
    result = answer(load_predictor(exported_scratch), Image.new("RGB", (300, 200)), k=3, explain=True)
    assert result["known"] and len(result["predictions"]) == 3
    assert result["heatmap"].shape == (200, 300) and 0 <= result["heatmap"].min() <= result["heatmap"].max() <= 1
    assert sum(probability for _, probability in result["countries"]) == pytest.approx(1.0, abs=1e-5)
