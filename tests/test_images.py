"""Specification of src/images.py: any image file as upright 8-bit RGB, and one line for a photo that cannot be used."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src import images
from src.images import PhotoError, load_rgb_image, open_photo
from tests.conftest import exif_rotated_jpeg


def smooth_photo(width: int, height: int) -> Image.Image:
    """Upsampled noise: compresses and resizes like a real photo."""
    small = np.random.default_rng(0).integers(0, 256, (height // 20, width // 20, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BICUBIC)


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

    monkeypatch.setattr(images, "load_rgb_image", fails)
    with pytest.raises(PhotoError) as info:
        open_photo(path)
    assert str(info.value).startswith(f"{path}: {words}") and "damaged" not in str(info.value)


def test_open_photo_says_when_a_folder_on_the_way_may_not_be_entered(tmp_path, monkeypatch):
    class Guarded(type(Path())):
        def stat(self, *args, **kwargs):
            raise os_error("permission")

    monkeypatch.setattr(images, "Path", Guarded)
    with pytest.raises(PhotoError, match="permission denied"):
        open_photo(str(tmp_path / "private" / "photo.jpg"))


@pytest.mark.parametrize("kind, words", [("loop", "cannot read the file"), ("pipe", "not a regular file")])
def test_open_photo_refuses_symlink_loops_and_pipes_without_waiting(kind, words, tmp_path):
    path = tmp_path / "photo.jpg"
    path.symlink_to(path) if kind == "loop" else os.mkfifo(path)  # a pipe without a writer would block a read
    with pytest.raises(PhotoError, match=words):
        open_photo(path)


def test_open_photo_still_calls_a_decoding_failure_damaged(tmp_path):
    whole = saved(Image.effect_noise((200, 200), 50).convert("RGB"), tmp_path / "whole.jpg")
    (tmp_path / "cut.jpg").write_bytes(whole.read_bytes()[:1500])
    with pytest.raises(PhotoError, match="cut.jpg: damaged or truncated image"):
        open_photo(tmp_path / "cut.jpg")
