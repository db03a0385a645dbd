"""Specification of src/onnx_export.py, through export_predictor: the ONNX file written beside each TorchScript file.

It holds everything the TorchScript file holds (the network, the normalization, the calibrated softmax, the "unknown"
score and threshold, the class activation map), with the classes and sizes in its metadata. A model ONNX cannot
export is one line, and the TorchScript file is still written.
"""

import json
import math

import numpy as np
import onnx
import pytest
import torch

from src.calibration import Calibration
from src.model import MLPBaseline
from src.predictor import export_predictor, export_settings
from src.runtime import load_model
from tests.conftest import LANDMARK_NAMES

MEAN, STD = [0.5, 0.45, 0.4], [0.25, 0.25, 0.25]
SIZES = (224, 256)


def metadata(path) -> dict:
    return {entry.key: entry.value for entry in onnx.load(path).metadata_props}


def test_export_writes_an_onnx_file_with_the_same_name_beside_the_torchscript_file(exported_scratch):
    onnx_file = exported_scratch.with_suffix(".onnx")
    model = onnx.load(onnx_file)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["crop"]
    assert [o.name for o in model.graph.output] == ["probabilities", "scores", "cam"]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer), "one file"


def test_its_metadata_holds_the_classes_with_their_places_the_sizes_and_the_threshold(exported_scratch):
    found = metadata(exported_scratch.with_suffix(".onnx"))
    classes = json.loads(found.pop("classes"))
    assert [row["name"] for row in classes] == LANDMARK_NAMES
    assert classes[0] == {"name": "Eiffel Tower", "place": "Paris, France", "country": "France",
                          "latitude": pytest.approx(48.8584, abs=1e-3), "longitude": pytest.approx(2.2945, abs=1e-3)}
    assert json.loads(found.pop("mean")) == pytest.approx(MEAN) and json.loads(found.pop("std")) == pytest.approx(STD)
    assert found == {"format": "landmark-classifier/1", "image_size": "224", "resize_size": "256", "max_aspect": "8",
                     "threshold": "-inf", "score_kind": "energy", "temperature": "1.0", "has_cam": "1"}  # fmt: skip


def test_a_calibrated_file_carries_its_temperature_and_threshold_into_the_onnx_file(loaders, small_scratch_model,
                                                                                    tmp_path):  # fmt: skip
    path = tmp_path / "calibrated.pt"
    export_predictor(small_scratch_model, path=path, calibration_loader=loaders["valid"], **export_settings(loaders["test"]))
    torchscript, onnx_model = load_model(path), load_model(path.with_suffix(".onnx"))
    assert math.isfinite(onnx_model.threshold) and onnx_model.threshold == pytest.approx(torchscript.threshold)
    assert float(metadata(path.with_suffix(".onnx"))["temperature"]) == pytest.approx(torchscript.predictor.temperature)
    crops = np.random.default_rng(0).random((6, 3, 32, 32), dtype=np.float32)
    probabilities, scores, _ = onnx_model.session.run(None, {"crop": crops})
    normalized = (torch.from_numpy(crops) - torchscript.predictor.mean) / torchscript.predictor.std
    with torch.no_grad():  # the TorchScript file's computation after its resize and crop
        logits = torchscript.predictor.logits(normalized) / torchscript.predictor.temperature
    np.testing.assert_allclose(probabilities, torch.softmax(logits, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(scores, torchscript.predictor.temperature * torch.logsumexp(logits, 1).numpy(), atol=1e-4)


def test_a_model_without_a_class_activation_map_exports_without_the_cam_output(tmp_path):
    path = tmp_path / "mlp.pt"
    export_predictor(MLPBaseline(3, 32).eval(), LANDMARK_NAMES, MEAN, STD, path, 32, 32)
    assert [o.name for o in onnx.load(path.with_suffix(".onnx")).graph.output] == ["probabilities", "scores"]
    assert metadata(path.with_suffix(".onnx"))["has_cam"] == "0" and not load_model(path.with_suffix(".onnx")).can_explain


class Digamma(torch.nn.Module):
    """A model TorchScript compiles but ONNX cannot express: ONNX has no digamma operator."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.digamma(x.mean((2, 3)).abs() + 1))


def test_a_model_onnx_cannot_export_is_one_line_and_the_torchscript_file_is_still_written(tmp_path, capsys):
    path = tmp_path / "odd.pt"
    path.with_suffix(".onnx").write_bytes(b"the ONNX file of an earlier model")
    export_predictor(Digamma().eval(), LANDMARK_NAMES, MEAN, STD, path, 32, 32)
    err = capsys.readouterr().err
    assert err == (f"note: {path.with_suffix('.onnx')} not written (the model cannot be exported to ONNX: ONNX has no "
                   "operator for prims.digamma, which the model uses); the app and the CLI use the TorchScript file "
                   "beside it\n")  # fmt: skip
    assert load_model(path).class_names == LANDMARK_NAMES
    assert not path.with_suffix(".onnx").exists(), "the earlier model's ONNX file must not answer for this one"


def test_an_onnx_file_that_cannot_be_written_is_one_line_and_the_torchscript_file_is_still_written(
    small_scratch_model, tmp_path, capsys
):
    path = tmp_path / "exported.pt"
    path.with_suffix(".onnx").mkdir()  # a folder where the file should go
    export_predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, path, *SIZES)
    err = capsys.readouterr().err
    assert err.startswith(f"note: {path.with_suffix('.onnx')} not written (") and "that path is a folder" in err
    assert err.count("\n") == 1 and load_model(path).class_names == LANDMARK_NAMES


def test_without_onnx_only_the_torchscript_file_is_written_and_an_older_onnx_file_goes(small_scratch_model, tmp_path):
    path = tmp_path / "exported.pt"
    path.with_suffix(".onnx").write_bytes(b"the ONNX file of an earlier model")
    export_predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, path, *SIZES, onnx=False)
    assert [p.name for p in tmp_path.iterdir()] == ["exported.pt"]


def test_the_path_is_the_torchscript_files_not_the_onnx_files(small_scratch_model, tmp_path):
    with pytest.raises(ValueError, match=r"give it a \.pt name, the \.onnx file goes beside it"):
        export_predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, tmp_path / "exported.onnx", *SIZES)
    assert list(tmp_path.iterdir()) == []


def test_an_uncalibrated_predictor_knows_every_photo_in_both_runtimes(exported_scratch):
    assert load_model(exported_scratch.with_suffix(".onnx")).threshold == -math.inf
    assert Calibration(1.0, "energy", -math.inf, 0).threshold == load_model(exported_scratch).threshold
