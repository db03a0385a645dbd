"""Specification of src/checkpoints.py: a run's files are kept, never overwritten; one process at a time writes them."""

import datetime
import math
import os
import subprocess

import pytest
import torch

from src.checkpoints import ResumeError, follow_new_schedule, keep_earlier_run, run_files, run_lock
from src.optimization import get_scheduler


def test_a_run_owns_its_weights_resume_state_record_and_cached_head(tmp_path):
    assert [path.name for path in run_files(tmp_path / "x.pt")] == [
        "x.pt", "x.resume.pt", "x.json", "x.head.pt", "x.head.resume.pt"
    ]  # fmt: skip


def test_earlier_files_are_renamed_to_the_time_they_were_written(tmp_path):
    for name in ("x.pt", "x.resume.pt", "x.json"):
        (tmp_path / name).write_text(name)
        os.utime(tmp_path / name, (1_700_000_000, 1_700_000_000))  # 2023-11-14 22:13:20 UTC
    kept = keep_earlier_run(tmp_path / "x.pt")
    stamp = datetime.datetime.fromtimestamp(1_700_000_000).strftime("%Y-%m-%d_%H%M%S")
    assert kept == tmp_path / f"x_{stamp}.pt"
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [f"x_{stamp}.pt", f"x_{stamp}.resume.pt", f"x_{stamp}.json"]
    )
    assert (tmp_path / f"x_{stamp}.json").read_text() == "x.json", "renamed, not rewritten"


def test_two_earlier_runs_written_in_the_same_second_both_survive(tmp_path):
    for _ in range(2):
        (tmp_path / "x.pt").write_text("weights")
        os.utime(tmp_path / "x.pt", (1_700_000_000, 1_700_000_000))
        keep_earlier_run(tmp_path / "x.pt")
    names = sorted(path.name for path in tmp_path.iterdir())
    assert len(names) == 2 and names[1].endswith("_2.pt"), names


def test_nothing_to_keep_changes_nothing(tmp_path):
    (tmp_path / "other.pt").write_text("another run")
    assert keep_earlier_run(tmp_path / "x.pt") is None
    assert [path.name for path in tmp_path.iterdir()] == ["other.pt"]


def test_the_lock_refuses_a_second_live_process_and_is_released(tmp_path):
    save_path = tmp_path / "x.pt"
    lock = tmp_path / ".x.pt.lock"
    other = subprocess.Popen(["sleep", "30"])
    try:
        lock.write_text(str(other.pid))
        with pytest.raises(ResumeError, match=f"Another training run \\(process {other.pid}\\) is writing"):
            with run_lock(save_path):
                pass
    finally:
        other.kill()
        other.wait()
    with run_lock(save_path):  # its owner is gone now: taken over
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()


def test_taking_the_lock_clears_the_half_written_files_of_a_killed_run(tmp_path):
    (tmp_path / ".x.pt.lock").write_text("999999999")  # no such process
    (tmp_path / ".x.resume.pt.tmp").write_bytes(bytes(100))
    with run_lock(tmp_path / "x.pt"):
        assert list(tmp_path.iterdir()) == [tmp_path / ".x.pt.lock"]


def test_a_longer_run_follows_the_new_schedule_from_the_current_epoch():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = get_scheduler(optimizer, "cosine", n_epochs=4, warmup_epochs=1)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0), "the 4-epoch cosine has ended"
    longer = get_scheduler(optimizer, "cosine", n_epochs=8, warmup_epochs=1)
    longer.load_state_dict(scheduler.state_dict())  # what resuming does: the epoch count comes from the saved state
    follow_new_schedule(longer, optimizer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 7)))  # epoch 5 of 8
