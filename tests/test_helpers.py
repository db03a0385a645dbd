"""Specification of src/helpers.py: finding and reading the data, and its statistics (downloading: test_download.py)."""

import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src import helpers
from src.helpers import (
    DataError, compute_mean_and_std, cpu_cores, dataset_stats, get_data_location, scan_files, seed_everything,
)
from src.images import load_rgb_image
from tests.conftest import tmpfs

# ----------------------------------------------------------------------------------------------------------------------
# get_data_location


def test_data_location_comes_from_LANDMARK_DATA(landmark_data):
    assert get_data_location() == landmark_data


def test_data_location_defaults_to_landmark_images_in_the_project(monkeypatch, synthetic_root):
    monkeypatch.delenv("LANDMARK_DATA", raising=False)
    monkeypatch.setattr(helpers, "DEFAULT_DATA_DIR", synthetic_root)
    assert get_data_location() == synthetic_root


def test_a_zip_unpacked_by_hand_into_its_own_folder_is_found(tmp_path, synthetic_root, monkeypatch):
    (tmp_path / "landmark_images").mkdir()
    (tmp_path / "landmark_images" / "landmark_images").symlink_to(synthetic_root)
    monkeypatch.setenv("LANDMARK_DATA", str(tmp_path / "landmark_images"))
    assert get_data_location() == tmp_path / "landmark_images" / "landmark_images"


def test_missing_data_raises_one_line_naming_the_path_and_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDMARK_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as caught:
        get_data_location()
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "nowhere") in message and "download" in message and "LANDMARK_DATA" in message


def test_a_folder_without_train_and_test_is_rejected(tmp_path, monkeypatch):
    (tmp_path / "train" / "00.A").mkdir(parents=True)  # no test/
    monkeypatch.setenv("LANDMARK_DATA", str(tmp_path))
    with pytest.raises(DataError, match="train/ and test/"):
        get_data_location()


# ----------------------------------------------------------------------------------------------------------------------
# Mean and std


def brute_force_mean_std(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.concatenate(
        [np.asarray(load_rgb_image(p), dtype=np.float64).reshape(-1, 3) / 255 for p in sorted((root / split).rglob("*.*"))
         if p.suffix in (".jpg", ".png")]
    )  # fmt: skip
    return pixels.mean(axis=0), pixels.std(axis=0)


def test_mean_and_std_match_a_brute_force_computation_over_train_only(writable_landmark_data):
    mean, std = compute_mean_and_std()
    expected_mean, expected_std = brute_force_mean_std(writable_landmark_data, "train")
    assert mean.shape == std.shape == (3,) and mean.dtype == torch.float32
    np.testing.assert_allclose(mean.numpy(), expected_mean, rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), expected_std, rtol=1e-5)
    test_mean, _ = brute_force_mean_std(writable_landmark_data, "test")
    assert not np.allclose(test_mean, expected_mean, rtol=1e-3), "the test split must not be part of the statistics"


def test_mean_and_std_are_cached_next_to_the_data(writable_landmark_data, monkeypatch):
    first = compute_mean_and_std()
    cached_mean = json.loads((writable_landmark_data / "dataset_stats.json").read_text())["mean"]
    assert torch.tensor(cached_mean, dtype=torch.float32).tolist() == first[0].tolist()
    monkeypatch.setattr(helpers, "load_rgb_image", lambda path: pytest.fail("the cache should have been used"))
    second = compute_mean_and_std()
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_mean_and_std_are_recomputed_when_the_data_changes(writable_landmark_data):
    before, _ = compute_mean_and_std()
    folder = sorted((writable_landmark_data / "train").iterdir())[0]
    Image.new("RGB", (400, 400), (255, 255, 255)).save(folder / "white.png")
    after, _ = compute_mean_and_std()
    assert (after > before).all()


def test_unreadable_images_are_listed_with_the_reason(writable_landmark_data):
    bad = sorted((writable_landmark_data / "test").iterdir())[0] / "broken.jpg"
    bad.write_text("this is not a JPEG")
    unreadable = dataset_stats()["unreadable"]
    assert list(unreadable) == [str(bad.relative_to(writable_landmark_data))]
    assert "UnidentifiedImageError" in unreadable[str(bad.relative_to(writable_landmark_data))]


def test_a_failed_statistics_cache_write_only_warns_once(writable_landmark_data):
    (writable_landmark_data / "dataset_stats.json").mkdir()  # a folder where the cache file goes: cannot be written
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = dataset_stats()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "dataset_stats.json" in messages[0] and "recomputed next time" in messages[0]
    assert stats["n_pixels"] > 0


def test_the_statistics_cache_is_written_atomically_and_read_back(writable_landmark_data):
    stats = dataset_stats()
    cache = writable_landmark_data / "dataset_stats.json"
    assert json.loads(cache.read_text(encoding="utf-8")) == stats
    assert [p.name for p in writable_landmark_data.iterdir() if p.name.startswith(".")] == [], "no temp file left"


def test_a_read_only_dataset_gets_its_statistics_with_one_warning(synthetic_root, tmp_path):
    with tmpfs(tmp_path / "disk", "8m") as disk:
        shutil.copytree(synthetic_root, disk / "data", ignore=shutil.ignore_patterns("dataset_stats.json"))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.warns(UserWarning, match="read-only") as caught:
            stats = dataset_stats(disk / "data")
        assert len(caught) == 1
        assert stats["mean"] == pytest.approx(dataset_stats(synthetic_root)["mean"])


# ----------------------------------------------------------------------------------------------------------------------
# scan_files: the one scan of the image folders (symlinks followed, each real folder once, bad entries skipped)


def test_scan_follows_symlinked_folders(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.jpg").write_bytes(b"a")
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    assert scan_files(tmp_path / "class") == ([tmp_path / "class" / "linked" / "a.jpg"], [])


def test_scan_skips_a_link_back_to_a_containing_folder_and_lists_each_file_once(tmp_path):
    folder = tmp_path / "train" / "00.A"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"a")
    (folder / "sub" / "b.jpg").write_bytes(b"b")
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)  # to its class folder
    (folder / "up").symlink_to(tmp_path / "train", target_is_directory=True)  # above it: would bring in other classes
    (tmp_path / "train" / "01.B").mkdir()
    (tmp_path / "train" / "01.B" / "c.jpg").write_bytes(b"c")
    files, skipped = scan_files(folder)
    assert files == [folder / "a.jpg", folder / "sub" / "b.jpg"]
    assert sorted(skipped) == [
        f"{folder / 'sub' / 'loop'} (a link to a folder that contains it)",
        f"{folder / 'up'} (a link to a folder that contains it)",
    ]


def test_scan_reads_a_folder_linked_twice_once_preferring_the_real_one(tmp_path):
    (tmp_path / "z_real").mkdir()
    (tmp_path / "z_real" / "a.jpg").write_bytes(b"a")
    (tmp_path / "a_link").symlink_to(tmp_path / "z_real", target_is_directory=True)
    files, skipped = scan_files(tmp_path)
    assert files == [tmp_path / "z_real" / "a.jpg"]
    assert skipped == [f"{tmp_path / 'a_link'} (a second link to a folder already read)"]


def test_scan_skips_self_links_dangling_links_and_special_files(tmp_path):
    (tmp_path / "good.jpg").write_bytes(b"x")
    (tmp_path / "self.jpg").symlink_to(tmp_path / "self.jpg")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    (tmp_path / "self_dir").symlink_to(tmp_path / "self_dir", target_is_directory=True)
    os.mkfifo(tmp_path / "pipe.jpg")  # reading it would block the loader forever
    files, skipped = scan_files(tmp_path)
    assert files == [tmp_path / "good.jpg"]
    assert sorted(skipped) == [
        f"{tmp_path / 'dangling.jpg'} (a link to nothing)",
        f"{tmp_path / 'pipe.jpg'} (not a regular file)",
        f"{tmp_path / 'self.jpg'} (a symlink loop)",
        f"{tmp_path / 'self_dir'} (a symlink loop)",
    ]


def test_scan_skips_a_folder_it_may_not_read(tmp_path, monkeypatch):
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "a.jpg").write_bytes(b"a")
    (tmp_path / "b.jpg").write_bytes(b"b")
    real_scandir = os.scandir

    def scandir(path):  # as root, chmod cannot take the permission away: refuse it here instead
        if str(path).endswith("private"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(helpers.os, "scandir", scandir)
    assert scan_files(tmp_path) == ([tmp_path / "b.jpg"], [f"{tmp_path / 'private'} (Permission denied)"])


def test_scan_lists_files_in_imagefolders_order(tmp_path):
    """By folder path, then name: files of a folder before those of its sub-folders, as torchvision's walk."""
    for name in ("b.jpg", "a/z.jpg", "a-b/y.jpg", "c.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    expected = [Path(root) / name for root, _, names in sorted(os.walk(tmp_path)) for name in sorted(names)]
    assert scan_files(tmp_path)[0] == expected


def test_statistics_do_not_crash_on_symlink_loops_and_count_each_image_once(writable_landmark_data, synthetic_root):
    folder = sorted((writable_landmark_data / "train").iterdir())[0]
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "up").symlink_to(writable_landmark_data, target_is_directory=True)
    (folder / "self.jpg").symlink_to(folder / "self.jpg")
    (folder / "dangling.jpg").symlink_to(folder / "nothing.jpg")
    stats = dataset_stats()
    assert stats["n_pixels"] == dataset_stats(synthetic_root)["n_pixels"]
    assert stats["unreadable"] == {}


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_numpy_cannot_take_is_one_line(seed):
    with pytest.raises(ValueError, match=rf"^seed must be in \[0, 4294967295\], got {seed}$"):
        seed_everything(seed)


def test_statistics_of_many_images_are_decoded_in_parallel_and_equal_a_direct_computation(tmp_path, monkeypatch):
    rng, train_pixels = np.random.default_rng(0), []
    for split, count in (("train", 300), ("test", 9)):
        for i in range(count):
            folder = tmp_path / split / f"{i % 3:02d}.Class_{i % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
            train_pixels += [pixels.reshape(-1, 3)] if split == "train" else []
    (tmp_path / "test" / "00.Class_0" / "broken.jpg").write_bytes(b"not a jpeg")
    workers, real_loader = [], helpers.DataLoader
    monkeypatch.setattr(helpers, "DataLoader", lambda *args, **options: workers.append(options["num_workers"])
                        or real_loader(*args, **options))  # fmt: skip
    stats = dataset_stats(tmp_path)
    assert workers == [len(os.sched_getaffinity(0))]
    expected = np.concatenate(train_pixels) / 255
    assert stats["mean"] == pytest.approx(expected.mean(axis=0), abs=1e-12)
    assert stats["std"] == pytest.approx(expected.std(axis=0), abs=1e-12)
    assert stats["n_pixels"] == 300 * 6 * 9 and list(stats["unreadable"]) == ["test/00.Class_0/broken.jpg"]


def test_where_the_system_has_no_cpu_affinity_every_core_is_used(landmark_data, monkeypatch):
    """macOS and Windows have no os.sched_getaffinity: the loaders' default of every core must still work there."""
    from src.data import get_data_loaders

    assert cpu_cores() == len(os.sched_getaffinity(0)), "on Linux: the cores this process may use"
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert cpu_cores() == 3
    assert get_data_loaders(batch_size=8, num_workers=-1)["train"].num_workers == 3
