"""Specification of src/runtime.py: which exported file answers, loading it by its suffix, and what it says of a photo."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from src import runtime
from src.exported import load_predictor
from src.runtime import HOW_TO_EXPORT, answer, chosen_file, describe, load_model, top_k, warm_up
from tests.conftest import LANDMARK_NAMES

PLACES = ["Paris, France", "San Francisco, California, United States", "Brussels, Belgium"]


class Fixed:
    """A loaded model's interface (load_model's) with fixed answers: probabilities, a score, a heatmap."""

    runtime, path, can_explain, class_names, class_places = "test", Path("fixed.onnx"), True, LANDMARK_NAMES, PLACES

    def __init__(self, probabilities: list[float], score: float | None, threshold: float):
        self.probabilities, self.score, self.threshold, self.calls = np.float32(probabilities), score, threshold, []

    def run(self, image, explain=False):
        self.calls.append(explain)
        heatmap = np.linspace(0, 1, image.width * image.height, dtype=np.float32).reshape(image.height, -1)
        return self.probabilities, self.score, heatmap if explain else None


# ----------------------------------------------------------------------------------------------------------------------
# answer: what the app and the CLI show for one photo


def test_answer_gives_the_top_k_with_their_places_and_the_probabilities_summed_by_country():
    result = answer(Fixed([0.2, 0.5, 0.3], score=1.0, threshold=0.5), Image.new("RGB", (40, 30)), k=2)
    assert [(p["name"], p["country"], p["probability"]) for p in result["predictions"]] == [
        ("Golden Gate Bridge", "United States", pytest.approx(0.5)), ("Atomium", "Belgium", pytest.approx(0.3))]
    assert result["predictions"][0]["latitude"] == pytest.approx(37.8199, abs=0.01)
    assert result["countries"] == [("United States", pytest.approx(0.5)), ("Belgium", pytest.approx(0.3)),
                                   ("France", pytest.approx(0.2))]  # fmt: skip
    assert result["known"] and result["heatmap"] is None
    assert top_k(Fixed([0.2, 0.5, 0.3], 1.0, 0.5), Image.new("RGB", (40, 30)), 1) == result["predictions"][:1]


def test_a_photo_scoring_below_the_files_threshold_is_unknown_and_explain_gives_a_heatmap_at_its_size():
    result = answer(Fixed([0.2, 0.5, 0.3], score=0.4, threshold=0.5), Image.new("RGB", (40, 30)), explain=True)
    assert not result["known"]
    assert result["heatmap"].shape == (30, 40) and result["heatmap"].dtype == np.float32


@pytest.mark.parametrize("score, known", [(None, True), (float("nan"), False)])
def test_a_file_without_scores_knows_every_photo_and_a_nan_score_is_never_known(score, known):
    assert answer(Fixed([0.2, 0.5, 0.3], score, 0.5), Image.new("RGB", (4, 3)))["known"] is known


def test_answer_also_takes_a_torchscript_predictor_as_torch_jit_load_gives_it(exported_scratch):
    result = answer(load_predictor(exported_scratch), Image.new("RGB", (300, 200)), k=3, explain=True)
    assert result["known"] and len(result["predictions"]) == 3
    assert result["heatmap"].shape == (200, 300) and 0 <= result["heatmap"].min() <= result["heatmap"].max() <= 1
    assert sum(probability for _, probability in result["countries"]) == pytest.approx(1.0, abs=1e-5)


def test_warm_up_answers_a_blank_photo_with_explain_when_the_model_has_it():
    model = Fixed([0.2, 0.5, 0.3], 1.0, 0.5)
    warm_up(model)
    assert model.calls == [True, True]


# ----------------------------------------------------------------------------------------------------------------------
# Which file answers, and loading it


def test_the_onnx_file_beside_an_export_answers_when_onnx_runtime_is_installed(exported_scratch, monkeypatch):
    onnx_file = exported_scratch.with_suffix(".onnx")
    assert onnx_file.is_file(), "export_predictor writes it"
    assert chosen_file(exported_scratch) == onnx_file
    monkeypatch.setattr(runtime, "onnx_runtime_installed", lambda: False)
    assert chosen_file(exported_scratch) == exported_scratch


def test_without_an_onnx_file_the_torchscript_file_answers(exported_scratch, tmp_path):
    alone = tmp_path / "original_exported.pt"
    alone.write_bytes(exported_scratch.read_bytes())
    assert chosen_file(alone) == alone


def test_the_suffix_chooses_the_runtime_and_both_say_which_in_one_line(exported_scratch):
    onnx_model, torchscript = load_model(exported_scratch.with_suffix(".onnx")), load_model(exported_scratch)
    assert (onnx_model.runtime, torchscript.runtime) == ("ONNX Runtime", "TorchScript")
    assert describe(onnx_model) == f"Using {exported_scratch.with_suffix('.onnx')} (ONNX Runtime)"
    assert onnx_model.class_names == torchscript.class_names == LANDMARK_NAMES
    assert onnx_model.class_places == torchscript.class_places == PLACES


def bad_onnx_file(kind: str, folder: Path, good: Path) -> Path:
    """A .onnx file --model might be given that is not a usable exported predictor."""
    path = folder / f"{kind}.onnx"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("a model, honestly")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "TorchScript renamed":
        path.write_bytes(good.with_suffix(".pt").read_bytes())
    elif kind == "someone else's ONNX":
        model = onnx.load(good)
        del model.metadata_props[:]
        path.write_bytes(model.SerializeToString())
    elif kind == "folder":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    "kind, words",
    [("empty", "the file is empty"), ("text", "not a loadable ONNX model"), ("truncated", "not a loadable ONNX model"),
     ("TorchScript renamed", "not a loadable ONNX model"), ("someone else's ONNX", "without this project's metadata"),
     ("folder", "is a folder"), ("missing", "no such file")],
)  # fmt: skip
def test_an_onnx_file_that_is_not_a_usable_predictor_is_one_line_naming_it(kind, words, exported_scratch, tmp_path):
    path = bad_onnx_file(kind, tmp_path, exported_scratch.with_suffix(".onnx"))
    with pytest.raises(ValueError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message, message
    if kind not in ("folder", "missing"):
        assert message.endswith(HOW_TO_EXPORT)


def test_an_onnx_file_without_onnx_runtime_says_to_install_it_or_use_the_pt_file(exported_scratch):
    code = ("import sys; sys.modules['onnxruntime'] = None\nfrom src.runtime import load_model\n"
            f"try:\n    load_model({str(exported_scratch.with_suffix('.onnx'))!r})\n"
            "except ValueError as err:\n    print(err)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == f"{exported_scratch.with_suffix('.onnx')}: ONNX Runtime is not installed (pip install -r " \
                  "requirements.txt), or use the .pt file beside it."


def test_loading_an_onnx_file_imports_no_torch(exported_scratch):
    code = (f"import sys; from src.runtime import load_model; load_model({str(exported_scratch.with_suffix('.onnx'))!r})"
            "; print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
