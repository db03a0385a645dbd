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
    DataError,
    compute_mean_and_std,
    dataset_stats,
    display_name,
    get_data_location,
    load_rgb_image,
    scan_files,
    seed_everything,
)
from tests.conftest import exif_rotated_jpeg, tmpfs

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
# load_rgb_image and display_name


def saved(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_any_image_mode_loads_as_8_bit_rgb(mode, tmp_path):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = saved(Image.new("RGB", (30, 20), (120, 60, 200)).convert(mode), tmp_path / f"image{suffix}")
    image = load_rgb_image(path)
    assert image.mode == "RGB" and image.size == (30, 20)


def test_transparent_pixels_become_white(tmp_path):
    path = saved(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), tmp_path / "clear.png")
    assert np.asarray(load_rgb_image(path)).min() == 255


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    path = saved(Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)), tmp_path / "half.png")
    assert np.asarray(load_rgb_image(path)).mean() == pytest.approx(127.5, abs=1)


def test_exif_orientation_is_applied(tmp_path):
    exif_rotated_jpeg(tmp_path / "rotated.jpg", width=80, height=40)
    assert load_rgb_image(tmp_path / "rotated.jpg").size == (40, 80)


def smooth_photo(width: int, height: int) -> Image.Image:
    """Upsampled noise: compresses and resizes like a real photo."""
    small = np.random.default_rng(0).integers(0, 256, (height // 20, width // 20, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BICUBIC)


@pytest.mark.parametrize("width, height, decoded", [(800, 600, (400, 300)), (600, 800, (300, 400)), (1600, 1100, (400, 275))])
def test_min_side_decodes_a_big_jpeg_at_a_reduced_scale_that_keeps_the_shorter_side(width, height, decoded, tmp_path):
    path = saved(smooth_photo(width, height), tmp_path / "photo.jpg", quality=90)
    assert load_rgb_image(path, min_side=256).size == decoded  # 1/2, 1/2, 1/4 scale: the shorter side stays >= 256


def test_a_reduced_scale_decode_resizes_to_nearly_the_same_pixels(tmp_path):
    path = saved(smooth_photo(800, 600), tmp_path / "photo.jpg", quality=90)
    full = np.asarray(load_rgb_image(path).resize((341, 256), Image.BILINEAR), dtype=np.float64)
    draft = np.asarray(load_rgb_image(path, min_side=256).resize((341, 256), Image.BILINEAR), dtype=np.float64)
    assert np.abs(full - draft).mean() < 2.0  # of 255


def test_min_side_leaves_small_jpegs_and_other_formats_at_full_size(tmp_path):
    assert load_rgb_image(saved(smooth_photo(400, 300), tmp_path / "small.jpg"), min_side=256).size == (400, 300)
    assert load_rgb_image(saved(smooth_photo(800, 600), tmp_path / "big.png"), min_side=256).size == (800, 600)


def test_a_reduced_scale_decode_still_applies_the_exif_orientation(tmp_path):
    exif_rotated_jpeg(tmp_path / "rotated.jpg", width=80, height=40)
    assert load_rgb_image(tmp_path / "rotated.jpg", min_side=16).size == (20, 40)


def test_a_truncated_jpeg_raises_instead_of_returning_a_partial_image(tmp_path):
    whole = saved(Image.effect_noise((200, 200), 50).convert("RGB"), tmp_path / "whole.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole.read_bytes()[:1500])
    with pytest.raises(OSError):
        load_rgb_image(truncated)


@pytest.mark.parametrize(
    "folder, name",
    [("16.Eiffel_Tower", "Eiffel Tower"), ("00.Haleakala_National_Park", "Haleakalā National Park"),
     ("04.Wroclaws_Dwarves", "Wrocław's Dwarves"), ("00.Synthetic_Landmark_A", "Synthetic Landmark A"),
     ("T-shirt/top", "T-shirt/top")],
)  # fmt: skip
def test_display_name_uses_the_landmark_table_else_drops_the_number_and_underscores(folder, name):
    assert display_name(folder) == name


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


def test_every_class_folder_has_a_name_a_place_and_coordinates():
    table = helpers.landmarks()
    assert list(table) == sorted(table) and len(table) == 50
    assert [folder[:2] for folder in table] == [f"{i:02d}" for i in range(50)]
    for row in table.values():
        assert row["name"] and row["place"] and row["country"]
        assert -90 <= float(row["latitude"]) <= 90 and -180 <= float(row["longitude"]) <= 180


@pytest.mark.parametrize(
    "name, place", [("Eiffel Tower", "Paris, France"), ("16.Eiffel_Tower", "Paris, France"), ("Synthetic Landmark A", "")]
)
def test_landmark_place_knows_display_names_and_folders(name, place):
    assert helpers.landmark_place(name) == place


# ----------------------------------------------------------------------------------------------------------------------
# open_photo: what went wrong, in one line


def os_error(kind: str) -> OSError:
    import errno

    return {"permission": PermissionError(errno.EACCES, "Permission denied"),
            "vanished": FileNotFoundError(errno.ENOENT, "No such file or directory"),
            "disk": OSError(errno.EIO, "Input/output error")}[kind]  # fmt: skip


@pytest.mark.parametrize(
    "kind, words",
    [("permission", "permission denied"), ("vanished", "no such file (it was moved or deleted)"),
     ("disk", "cannot read the file (Input/output error)")],
)  # fmt: skip
def test_open_photo_says_when_the_file_itself_cannot_be_read(kind, words, tmp_path, monkeypatch):
    """As root, chmod does not stop reads: the error comes from a stand-in for the reader (the file was listed)."""
    path = saved(Image.new("RGB", (8, 8)), tmp_path / "photo.jpg")

    def fails(*args, **kwargs):
        raise os_error(kind)

    monkeypatch.setattr(helpers, "load_rgb_image", fails)
    with pytest.raises(helpers.PhotoError) as info:
        helpers.open_photo(path)
    assert str(info.value).startswith(f"{path}: {words}") and "damaged" not in str(info.value)


def test_open_photo_says_when_a_folder_on_the_way_may_not_be_entered(tmp_path, monkeypatch):
    class Guarded(type(Path())):
        def stat(self, *args, **kwargs):
            raise os_error("permission")

    monkeypatch.setattr(helpers, "Path", Guarded)
    with pytest.raises(helpers.PhotoError, match="permission denied"):
        helpers.open_photo(str(tmp_path / "private" / "photo.jpg"))


@pytest.mark.parametrize("kind, words", [("loop", "cannot read the file"), ("pipe", "not a regular file")])
def test_open_photo_refuses_symlink_loops_and_pipes_without_waiting(kind, words, tmp_path):
    path = tmp_path / "photo.jpg"
    path.symlink_to(path) if kind == "loop" else os.mkfifo(path)  # a pipe without a writer would block a read
    with pytest.raises(helpers.PhotoError, match=words):
        helpers.open_photo(path)


def test_open_photo_still_calls_a_decoding_failure_damaged(tmp_path):
    whole = saved(Image.effect_noise((200, 200), 50).convert("RGB"), tmp_path / "whole.jpg")
    (tmp_path / "cut.jpg").write_bytes(whole.read_bytes()[:1500])
    with pytest.raises(helpers.PhotoError, match="cut.jpg: damaged or truncated image"):
        helpers.open_photo(tmp_path / "cut.jpg")


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_numpy_cannot_take_is_one_line(seed):
    with pytest.raises(ValueError, match=rf"^seed must be in \[0, 4294967295\], got {seed}$"):
        seed_everything(seed)
