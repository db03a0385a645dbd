"""Specification of src/unpack.py: a dataset zip unpacks whole or not at all (end-to-end cases: test_download.py)."""

import os
import subprocess
import sys
import zipfile

import pytest

from src import unpack
from src.helpers import DataError
from src.unpack import extract_atomically, remove_stale_temp_folders


def dataset_zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def test_a_dataset_zip_appears_whole_under_the_target_name_and_nothing_else_is_left(tmp_path):
    members = {"landmark_images/train/00.A/a.jpg": b"x", "landmark_images/test/00.A/b.jpg": b"y"}
    zip_path = dataset_zip(tmp_path / "d.zip", members)
    extract_atomically(zip_path, tmp_path / "landmark_images")
    assert (tmp_path / "landmark_images" / "test" / "00.A" / "b.jpg").read_bytes() == b"y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zip", "landmark_images"], "no temporary folder"


def test_a_zip_that_would_unpack_to_far_too_much_is_refused_before_writing_and_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(unpack, "MAX_RATIO", 10)
    monkeypatch.setattr(unpack, "RATIO_FROM_BYTES", 1000)
    zip_path = dataset_zip(tmp_path / "bomb.zip", {"landmark_images/train/00.A/zeros.bin": bytes(100_000)})
    with pytest.raises(DataError, match="is not the landmark dataset: it holds .*zeros.bin, .* times its compressed size"):
        extract_atomically(zip_path, tmp_path / "landmark_images")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip"]


def test_a_zip_without_the_dataset_layout_is_one_line_and_leaves_nothing(tmp_path):
    zip_path = dataset_zip(tmp_path / "other.zip", {"notes/readme.txt": b"holiday photos"})
    with pytest.raises(DataError, match="does not contain train/ and test/ class folders"):
        extract_atomically(zip_path, tmp_path / "landmark_images")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.zip"]


def test_only_the_temporary_folders_of_processes_that_are_gone_are_removed(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f"{unpack.TEMP_PREFIX}{gone.pid}-abc"
    running = tmp_path / f"{unpack.TEMP_PREFIX}{os.getpid()}-def"
    stale.mkdir(), running.mkdir()
    assert remove_stale_temp_folders(tmp_path) == [stale]
    assert running.is_dir()
