"""Specification of src/exported.py: loading an exported TorchScript file, checking it, running it."""

import errno
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.exported import TorchScriptModel, load_predictor
from src.files import quiet_torchscript
from src.predictor import Predictor
from src.runtime import HOW_TO_EXPORT
from tests.conftest import LANDMARK_NAMES

MEAN, STD = [0.5, 0.45, 0.4], [0.25, 0.25, 0.25]


def photo(width: int, height: int, seed: int = 0) -> torch.Tensor:
    """A random uint8 'photo' batch [1,3,height,width]."""
    return torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_the_runtime_interface_gives_the_files_own_answers_as_numpy(exported_scratch):
    predictor = load_predictor(exported_scratch)
    image = Image.fromarray(photo(300, 200)[0].permute(1, 2, 0).numpy())
    probabilities, score, heatmap = TorchScriptModel(predictor).run(image, explain=True)
    expected = predictor.explain(photo(300, 200))
    np.testing.assert_allclose(probabilities, expected[0][0].numpy(), atol=1e-6)
    assert score == pytest.approx(float(expected[1][0]), abs=1e-5) and heatmap.shape == (200, 300)


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

    monkeypatch.setattr("src.runtime.open", refuse, raising=False)  # shadows the builtin in src.runtime only
    with pytest.raises(ValueError) as info:
        load_predictor(exported_scratch)
    assert str(info.value).startswith(f"{exported_scratch}: {words}") and "not a loadable" not in str(info.value)


def test_without_optimizing_the_file_gives_the_same_answers(exported_scratch):
    """optimize=False (the predict CLI's few photos) runs TorchScript's plain interpreter: the same numbers."""
    image = Image.fromarray(photo(300, 200)[0].permute(1, 2, 0).numpy())
    plain, optimized = TorchScriptModel.load(exported_scratch, optimize=False), TorchScriptModel.load(exported_scratch)
    assert (plain.optimize, optimized.optimize) == (False, True)
    for _ in range(3):  # past the optimizing executor's first two calls
        np.testing.assert_allclose(plain.run(image, explain=True)[0], optimized.run(image, explain=True)[0], atol=1e-6)
