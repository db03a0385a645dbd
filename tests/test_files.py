"""Specification of src/files.py: every write is all or nothing, and a failed one says why in one line."""

import errno
import json
import os
import subprocess
import sys

import pytest
import torch

from src.files import (
    WriteError,
    check_writable,
    process_alive,
    quiet_torchscript,
    save_json,
    save_script,
    save_torch,
    temp_path,
    write_atomically,
)
from tests.conftest import tmpfs


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: a real full disk."""
    with tmpfs(tmp_path / "tiny", "64k") as folder:
        yield folder


@pytest.fixture
def read_only_folder(tmp_path):
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as folder:
        yield folder


def test_a_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "record.json"  # missing folders are created
    save_json({"a": 1}, target)
    save_json({"a": 2}, target)
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["record.json"]


def test_torch_objects_and_scripted_modules_round_trip(tmp_path):
    save_torch({"w": torch.arange(3)}, tmp_path / "state.pt")
    assert torch.equal(torch.load(tmp_path / "state.pt")["w"], torch.arange(3))
    with quiet_torchscript():
        save_script(torch.jit.script(torch.nn.Linear(2, 1)), tmp_path / "model.pt")
        assert torch.jit.load(str(tmp_path / "model.pt"))(torch.zeros(1, 2)).shape == (1, 1)


def test_a_full_disk_gives_one_line_keeps_the_old_file_and_removes_the_temporary_file(tiny_disk):
    target = tiny_disk / "best.pt"
    write_atomically(target, b"old weights")
    with pytest.raises(WriteError) as err:
        write_atomically(target, bytes(200_000))  # more than the 64 KiB disk
    assert str(err.value) == f"Cannot write {target}: the disk is full: free some space there, or save somewhere else."
    assert target.read_bytes() == b"old weights"
    assert [p.name for p in tiny_disk.iterdir()] == ["best.pt"]


def test_a_scripted_module_on_a_full_disk_is_a_write_error_not_a_crash(tiny_disk):
    with quiet_torchscript():
        big = torch.jit.script(torch.nn.Linear(200, 200))  # 160 KB of weights
    with pytest.raises(WriteError, match="the disk is full"):
        save_script(big, tiny_disk / "exported.pt")
    assert list(tiny_disk.iterdir()) == []


def test_a_leftover_temporary_file_of_a_killed_run_is_replaced_not_kept(tiny_disk):
    target = tiny_disk / "best.pt"
    temp_path(target).write_bytes(bytes(40_000))  # a kill -9 mid-write left this: most of the disk
    write_atomically(target, bytes(40_000))  # fits only once the leftover's space is freed
    assert [p.name for p in tiny_disk.iterdir()] == ["best.pt"]


def test_a_read_only_folder_is_named_with_its_problem(read_only_folder):
    with pytest.raises(WriteError) as err:
        check_writable(read_only_folder)
    assert "the file system is read-only" in str(err.value) and str(read_only_folder) in str(err.value)


@pytest.mark.parametrize(
    "error, words",
    [(errno.EACCES, "no permission to write there"), (errno.EDQUOT, "disk quota"), (errno.EIO, "Input/output error")],
)
def test_each_os_error_becomes_one_line_that_says_what_happened(tmp_path, monkeypatch, error, words):
    def refuse(*args, **kwargs):
        raise OSError(error, __import__("os").strerror(error))

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(WriteError, match=words) as err:
        write_atomically(tmp_path / "x.pt", b"data")
    assert "\n" not in str(err.value)


def test_a_folder_or_a_path_under_a_file_is_refused_with_one_line(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(WriteError, match="that path is a folder"):
        write_atomically(tmp_path / "folder", b"x")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(WriteError, match="part of that path is a file"):
        write_atomically(tmp_path / "file.txt" / "model.pt", b"x")


def test_check_writable_refuses_a_folder_with_too_little_space(tiny_disk):
    check_writable(tiny_disk, need_bytes=1_000)
    with pytest.raises(WriteError, match=r"only 0 MB free, and this needs about 10 MB"):
        check_writable(tiny_disk, need_bytes=10_000_000)
    assert list(tiny_disk.iterdir()) == [], "the probe file is removed"


def test_process_alive_tells_a_running_process_from_one_that_is_gone():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert process_alive(os.getpid()) and not process_alive(gone.pid)
