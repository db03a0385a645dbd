"""Specification of src/predictor_cli.py: `python -m src.predictor`, and export() of a `python -m src.train` run."""

import json
import math
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch

from src.calibration import calibrate
from src.data import get_data_loaders
from src.exported import load_predictor
from src.files import quiet_torchscript
from src.predictor import predictor_test
import src.predictor_cli
from src.predictor_cli import export, main
from src.presets import LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE
from src.train_cli import main as train_main

matplotlib.use("Agg")
MEAN, STD = [0.5, 0.45, 0.4], [0.25, 0.25, 0.25]
SIZES = (LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE)  # (crop, resize): the landmark photos' evaluation preprocessing


def test_python_m_src_predictor_runs_this_command_line():
    """The course's command is `python -m src.predictor`: src/predictor.py hands its __main__ to this module's main()."""
    done = subprocess.run([sys.executable, "-m", "src.predictor", "--dataset", "imagenet"], capture_output=True, text=True)
    assert done.returncode == 2 and "argument --dataset: invalid choice" in done.stderr and done.stderr.count("\n") == 1


def test_export_of_a_checkpoint_without_a_readable_run_record_is_one_line(tmp_path, small_scratch_model):
    checkpoint = tmp_path / "scratch.pt"
    torch.save(small_scratch_model.state_dict(), checkpoint)
    with pytest.raises(ValueError, match=r"scratch.json: no such file\. Export a checkpoint that"):
        export(checkpoint)
    checkpoint.with_suffix(".json").write_text("")  # what a full disk left before records were written atomically
    with pytest.raises(ValueError, match=r"is damaged or from another model \(Expecting value: line 1"):
        export(checkpoint)


def test_export_from_a_cli_checkpoint_and_predictor_test(landmark_data, tmp_path, capsys):
    checkpoint = tmp_path / "scratch_landmarks.pt"
    argv = ["--model", "scratch", "--epochs", "1", "--image-size", "64", "--batch-size", "8",
            "--num-workers", "0", "--save-path", str(checkpoint)]  # fmt: skip
    assert train_main(argv) == 0
    exported = export(checkpoint, tmp_path / "original_exported.pt")
    predictor = load_predictor(exported)
    assert list(predictor.class_names) == json.loads(checkpoint.with_suffix(".json").read_text())["class_names"]
    assert predictor.image_size == 64

    loaders = get_data_loaders(batch_size=4, num_workers=0)
    accuracy, confusion = predictor_test(loaders["test"], predictor)
    assert confusion.shape == (3, 3) and confusion.sum() == len(loaders["test"].dataset)
    assert accuracy == pytest.approx(np.trace(confusion) / confusion.sum())
    assert "Accuracy of the exported predictor: " in capsys.readouterr().out
    predictor_test(loaders["test"], predictor, "original_exported.pt")
    assert "Accuracy of original_exported.pt: " in capsys.readouterr().out, "a printed figure names its model"


def test_a_cli_checkpoint_is_exported_calibrated_on_its_runs_validation_split(landmark_data, tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "scratch_landmarks.pt"
    argv = ["--model", "scratch", "--epochs", "1", "--image-size", "64", "--batch-size", "8",
            "--num-workers", "0", "--save-path", str(checkpoint), "--seed", "3"]  # fmt: skip
    assert train_main(argv) == 0
    predictor = load_predictor(export(checkpoint, tmp_path / "calibrated.pt"))
    model = predictor.model
    record = json.loads(checkpoint.with_suffix(".json").read_text())
    valid = get_data_loaders(batch_size=8, num_workers=0, image_size=64, seed=3,
                             normalization=(record["mean"], record["std"]))["valid"]  # fmt: skip
    expected = calibrate(model, valid)
    assert predictor.temperature == pytest.approx(expected.temperature) and math.isfinite(predictor.threshold)
    assert predictor.threshold == pytest.approx(expected.threshold)
    capsys.readouterr()

    monkeypatch.setenv("LANDMARK_DATA", str(tmp_path / "gone"))  # the data has moved: exported, but not calibrated
    uncalibrated = load_predictor(export(checkpoint, tmp_path / "uncalibrated.pt"))
    assert uncalibrated.temperature == 1.0 and uncalibrated.threshold == -math.inf
    err = capsys.readouterr().err
    assert err.startswith("note: not calibrated: cannot read the validation split (No landmark dataset at") and err.count("\n") == 1


def test_a_model_trained_by_the_cli_reaches_the_app_by_one_command(landmark_data, tmp_path, monkeypatch, capsys):
    """python -m src.train writes checkpoints/best_val_loss.pt; python -m src.predictor --export turns it into
    checkpoints/original_exported.pt, the file the app loads, and tests it."""
    from src import paths

    monkeypatch.setattr(paths, "CHECKPOINTS_DIR", tmp_path)
    argv = ["--epochs", "1", "--image-size", "64", "--batch-size", "8", "--num-workers", "0"]
    assert train_main(argv) == 0
    assert (tmp_path / "best_val_loss.pt").is_file() and (tmp_path / "best_val_loss.json").is_file()
    assert main(["--export", str(tmp_path / "best_val_loss.pt")]) == 0
    out = capsys.readouterr().out
    assert f"Exported {tmp_path / 'best_val_loss.pt'} to {tmp_path / 'original_exported.pt'}" in out
    assert f"{tmp_path / 'original_exported.pt'}: test accuracy" in out
    assert list(load_predictor(tmp_path / "original_exported.pt").class_names) == [
        "Synthetic Landmark A", "Synthetic Landmark B", "Synthetic Landmark C"
    ]  # fmt: skip


def test_the_command_line_exports_nothing_from_a_checkpoint_without_its_record(tmp_path, small_scratch_model, capsys):
    torch.save(small_scratch_model.state_dict(), tmp_path / "m.pt")
    assert main(["--export", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'm.json'}: no such file") and err.count("\n") == 1


def test_the_command_line_tests_exported_models_on_the_test_split(landmark_data, exported_scratch, capsys):
    assert main([str(exported_scratch)]) == 0
    assert f"{exported_scratch}: test accuracy" in capsys.readouterr().out


def test_the_command_line_says_in_one_line_when_a_model_is_missing(landmark_data, tmp_path, capsys):
    assert main([str(tmp_path / "nothing.pt")]) == 2
    err = capsys.readouterr().err
    assert "no exported model there" in err and err.count("\n") == 1


def test_the_command_line_checks_every_model_before_reading_the_test_split(
    exported_scratch, small_scratch_model, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(src.predictor_cli, "get_data_loaders", lambda **_: pytest.fail("the test split was read first"))
    bare = tmp_path / "bare.pt"
    with quiet_torchscript():
        torch.jit.script(small_scratch_model).save(str(bare))  # a scripted network that is not an exported predictor
    assert main([str(exported_scratch), str(bare)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bare}: a TorchScript model without class names") and err.count("\n") == 1


@pytest.mark.parametrize("argv, words", [(["--dataset", "imagenet"], "argument --dataset: invalid choice"),
                                         (["--bogus"], "unrecognized arguments: --bogus")])  # fmt: skip
def test_the_command_line_refuses_bad_options_in_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1
