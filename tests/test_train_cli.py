"""Specification of src/train_cli.py, the command line `python -m src.train`: what it trains, writes and refuses."""

import json
import subprocess
import sys

import pytest
import torch

from src.model import MyModel
from src.train_cli import main
from src.transfer import get_model_transfer_learning
from tests.conftest import tmpfs


def test_python_m_src_train_runs_this_command_line(tmp_path):
    """The course's command is `python -m src.train`: src/train.py hands its __main__ to this module's main()."""
    done = subprocess.run([sys.executable, "-m", "src.train", "--epochs", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == "error: argument --epochs: must be at least 1, got 0 (--help lists the options)\n"


def test_resume_with_another_fine_tuning_depth_is_refused_in_one_line(landmark_data, tmp_path, capsys):
    save_path = tmp_path / "transfer.pt"
    argv = ["--model", "efficientnet_lite0", "--epochs", "1", "--image-size", "32", "--batch-size", "8",
            "--num-workers", "0", "--save-path", str(save_path)]  # fmt: skip
    assert main(argv + ["--fine-tune", "last"]) == 0
    capsys.readouterr()
    assert main(argv + ["--fine-tune", "all", "--resume", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot resume") and "trained parameters" in err and err.count("\n") == 1


def test_trains_keeps_the_best_checkpoint_and_writes_a_run_record(landmark_data, tmp_path, capsys):
    save_path = tmp_path / "scratch.pt"
    argv = ["--model", "scratch", "--epochs", "2", "--image-size", "32", "--batch-size", "8",
            "--num-workers", "0", "--save-path", str(save_path)]  # fmt: skip
    assert main(argv) == 0
    record = json.loads(save_path.with_suffix(".json").read_text())
    assert record["class_names"] == ["Synthetic Landmark A", "Synthetic Landmark B", "Synthetic Landmark C"]
    assert len(record["history"]["valid_loss"]) == 2 and 0 <= record["test_accuracy"] <= 1
    assert "Test Accuracy:" in capsys.readouterr().out
    model = MyModel(num_classes=3, stem_stride=1)
    model.load_state_dict(torch.load(save_path))


def test_trains_a_transfer_model_head(landmark_data, tmp_path):
    save_path = tmp_path / "transfer.pt"
    argv = ["--model", "efficientnet_lite0", "--epochs", "1", "--image-size", "64", "--batch-size", "8",
            "--num-workers", "0", "--save-path", str(save_path)]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(save_path.with_suffix(".json").read_text())["mean"] == [0.5, 0.5, 0.5]


def test_a_second_run_keeps_the_first_runs_checkpoint_record_and_resume_state(landmark_data, tmp_path):
    save_path = tmp_path / "scratch.pt"
    argv = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "--num-workers", "0", "--save-path", str(save_path)]
    assert main(argv) == 0
    first = {path.name[len("scratch"):]: path.read_bytes() for path in tmp_path.iterdir()}
    assert set(first) == {".pt", ".resume.pt", ".json"}
    assert main(argv) == 0
    kept = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.name.startswith("scratch_")}
    assert sorted(name.partition(".")[2] for name in kept) == ["json", "pt", "resume.pt"]
    assert sorted(kept.values()) == sorted(first.values()), "byte for byte the first run's files"


def test_resume_with_another_lr_or_image_size_is_refused_in_one_line(landmark_data, tmp_path, capsys):
    save_path = tmp_path / "scratch.pt"
    argv = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "--num-workers", "0", "--save-path", str(save_path)]
    assert main(argv) == 0
    capsys.readouterr()
    for change, words in ((["--lr", "0.1"], "learning rate [0.1] here"), (["--image-size", "40"], "input shape [3, 40, 40]")):
        assert main(argv + change + ["--resume", "--epochs", "2"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: Cannot resume") and words in err and err.count("\n") == 1


def test_resume_with_more_epochs_continues_the_run(landmark_data, tmp_path):
    save_path = tmp_path / "scratch.pt"
    argv = ["--image-size", "32", "--batch-size", "8", "--num-workers", "0", "--save-path", str(save_path)]
    assert main(argv + ["--epochs", "2"]) == 0
    assert main(argv + ["--epochs", "4", "--resume"]) == 0
    history = json.loads(save_path.with_suffix(".json").read_text())["history"]
    assert len(history["lr"]) == 4 and min(history["lr"]) > 0


BAD_OPTIONS = [
    ["--epochs", "0"], ["--epochs", "-1"], ["--epochs", "ten"], ["--batch-size", "0"], ["--batch-size", "-8"],
    ["--batch-size", "1"], ["--image-size", "0"], ["--image-size", "-1"], ["--image-size", "100000"], ["--lr", "0"],
    ["--lr", "-0.1"], ["--lr", "nan"], ["--label-smoothing", "1"], ["--label-smoothing", "-0.1"], ["--dropout", "1"],
    ["--dropout", "1.5"], ["--num-workers", "-2"], ["--weight-decay", "-1"], ["--momentum", "1"], ["--seed", "-1"],
    ["--seed", "4294967296"],
]


@pytest.mark.parametrize("option", BAD_OPTIONS, ids=lambda option: " ".join(option))
def test_refuses_a_bad_value_in_one_line_before_looking_at_the_data(tmp_path, monkeypatch, capsys, option):
    monkeypatch.setenv("LANDMARK_DATA", str(tmp_path / "missing"))  # a data scan would fail differently
    with pytest.raises(SystemExit) as exit_info:
        main(option + ["--save-path", str(tmp_path / "m.pt")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: argument {option[0]}: must be ") and err.count("\n") == 1, "one line, no usage"
    assert list(tmp_path.iterdir()) == [], "nothing written"


def test_refuses_a_save_path_that_is_a_folder_lies_under_a_file_or_names_a_companion_file(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    for save_path, words in (
        (tmp_path, "is a folder: give a file name"),
        (tmp_path / "notes.txt" / "m.pt", "is a file"),
        (tmp_path / "m.json", "m.json is the name of a run record"),  # the run record would overwrite the weights
        (tmp_path / "m.resume.pt", "is the name of a run record, resume state or head file"),
    ):
        with pytest.raises(SystemExit):
            main(["--save-path", str(save_path)])
        assert words in capsys.readouterr().err.splitlines()[-1]


def test_refuses_a_read_only_save_folder_in_one_line_before_looking_at_the_data(tmp_path, capsys):
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as folder, pytest.raises(SystemExit):
        main(["--save-path", str(folder / "m.pt")])
    assert capsys.readouterr().err == (
        f"error: argument --save-path: Cannot write in {folder}: the file system is read-only: save somewhere else. "
        f"(--help lists the options)\n"
    )


def test_reports_missing_data_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LANDMARK_DATA", str(tmp_path / "missing"))
    assert main(["--epochs", "1", "--save-path", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No landmark dataset") and err.count("\n") == 1


def test_cache_features_trains_the_head_on_cached_features_and_saves_the_whole_model(landmark_data, tmp_path):
    save_path = tmp_path / "transfer.pt"
    argv = ["--model", "efficientnet_lite0", "--epochs", "3", "--image-size", "64", "--batch-size", "8",
            "--num-workers", "0", "--cache-features", "--save-path", str(save_path)]  # fmt: skip
    assert main(argv) == 0
    model = get_model_transfer_learning("efficientnet_lite0", n_classes=3)
    model.load_state_dict(torch.load(save_path))  # the full model, not only the head
    assert len(json.loads(save_path.with_suffix(".json").read_text())["history"]["train_loss"]) == 3


def test_resume_with_cache_features_of_a_run_without_them_keeps_the_earlier_model(landmark_data, tmp_path):
    save_path = tmp_path / "transfer.pt"
    argv = ["--model", "efficientnet_lite0", "--epochs", "1", "--image-size", "64", "--batch-size", "8",
            "--num-workers", "0", "--save-path", str(save_path)]  # fmt: skip
    assert main(argv) == 0
    earlier = save_path.read_bytes()
    assert main(argv + ["--cache-features", "--resume"]) == 0  # nothing of the head to resume: a new run
    kept = [path for path in tmp_path.glob("transfer_*.pt") if not path.name.endswith(".resume.pt")]
    assert [path.read_bytes() for path in kept] == [earlier]


def test_cache_features_refuses_a_trainable_backbone(landmark_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--model", "efficientnet_lite0", "--fine-tune", "all", "--cache-features"])
    assert "--cache-features needs a transfer model with a frozen backbone" in capsys.readouterr().err
