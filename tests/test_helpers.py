"""Specification of src/helpers.py: finding, downloading and reading the data, and its statistics."""

import hashlib
import http.server
import io
import json
import threading
import zipfile
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
    download_and_extract,
    get_data_location,
    load_rgb_image,
    setup_env,
)
from tests.conftest import exif_rotated_jpeg

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
# download_and_extract, against a real HTTP server on 127.0.0.1


def make_dataset_zip() -> bytes:
    """A zip laid out like the official one: landmark_images/{train,test}/<class>/<image>."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for split in ("train", "test"):
            for name in ("00.Place_A", "01.Place_B"):
                image = io.BytesIO()
                Image.new("RGB", (32, 24), (10, 200, 30)).save(image, format="PNG")
                archive.writestr(f"landmark_images/{split}/{name}/photo.png", image.getvalue())
        archive.writestr("landmark_images/train/00.Place_A/padding.bin", np.random.bytes(200_000))
    return buffer.getvalue()


class ZipServer:
    """Serves one file with HTTP Range support. `cut_after` bytes of the next response are sent, then the
    connection drops (a network failure mid-download). Records every request's Range header."""

    def __init__(self, payload: bytes):
        self.payload, self.cut_after, self.ranges, self.honour_range = payload, None, [], True
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/landmark_images.zip":
                    self.send_error(404)
                    return
                requested = self.headers.get("Range")
                server.ranges.append(requested)
                start = int(requested.split("=")[1].split("-")[0]) if requested and server.honour_range else 0
                body = server.payload[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body, server.cut_after = body[: server.cut_after], None
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/landmark_images.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def zip_server():
    server = ZipServer(make_dataset_zip())
    yield server
    server.close()


def assert_complete_dataset(dest: Path) -> None:
    root = dest / "landmark_images"
    assert sorted(p.name for p in (root / "train").iterdir()) == ["00.Place_A", "01.Place_B"]
    assert (root / "test" / "01.Place_B" / "photo.png").is_file()
    assert sorted(p.name for p in dest.iterdir()) == ["landmark_images"], "no zip, .part or temp folder left behind"


def test_download_fetches_unpacks_and_cleans_up(zip_server, tmp_path):
    assert download_and_extract(zip_server.url, tmp_path) == tmp_path / "landmark_images"
    assert_complete_dataset(tmp_path)
    assert zip_server.ranges == [None]


def test_download_is_idempotent(zip_server, tmp_path):
    download_and_extract(zip_server.url, tmp_path)
    download_and_extract(zip_server.url, tmp_path)
    assert len(zip_server.ranges) == 1, "a complete dataset must not be downloaded again"


def test_a_dropped_connection_is_resumed_with_a_range_request(zip_server, tmp_path):
    zip_server.cut_after = 50_000
    download_and_extract(zip_server.url, tmp_path)
    assert zip_server.ranges == [None, "bytes=50000-"]
    assert_complete_dataset(tmp_path)


def test_a_partial_download_from_an_earlier_run_is_resumed_not_restarted(zip_server, tmp_path):
    (tmp_path / "landmark_images.zip.part").write_bytes(zip_server.payload[:123_456])
    download_and_extract(zip_server.url, tmp_path)
    assert zip_server.ranges == ["bytes=123456-"]
    assert_complete_dataset(tmp_path)


def test_a_server_that_ignores_range_makes_the_download_start_over(zip_server, tmp_path):
    (tmp_path / "landmark_images.zip.part").write_bytes(b"stale bytes from another file")
    zip_server.honour_range = False
    download_and_extract(zip_server.url, tmp_path)
    assert_complete_dataset(tmp_path)


def test_a_corrupt_zip_is_reported_deleted_and_leaves_no_dataset(zip_server, tmp_path):
    payload = bytearray(zip_server.payload)
    payload[100:200] = bytes(100)  # damage the first member's data: its CRC no longer matches
    zip_server.payload = bytes(payload)
    with pytest.raises(DataError, match="corrupt"):
        download_and_extract(zip_server.url, tmp_path)
    assert list(tmp_path.iterdir()) == [], "neither the bad zip nor a half-extracted dataset may remain"


def test_a_wrong_sha256_is_reported_and_the_file_deleted(zip_server, tmp_path):
    with pytest.raises(DataError, match="sha256"):
        download_and_extract(zip_server.url, tmp_path, sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_a_matching_sha256_is_accepted(zip_server, tmp_path):
    download_and_extract(zip_server.url, tmp_path, sha256=hashlib.sha256(zip_server.payload).hexdigest())
    assert_complete_dataset(tmp_path)


def test_server_down_gives_one_line_with_the_url_and_the_manual_alternative(tmp_path):
    server = ZipServer(b"")
    url = server.url
    server.close()  # nothing listens on that port any more
    with pytest.raises(DataError) as caught:
        download_and_extract(url, tmp_path, timeout=5)
    message = str(caught.value)
    assert "\n" not in message
    assert url in message and "by hand" in message and "LANDMARK_DATA" in message


def test_http_errors_are_reported_with_the_url(zip_server, tmp_path):
    missing = zip_server.url.replace("landmark_images.zip", "other.zip")
    with pytest.raises(DataError, match="404"):
        download_and_extract(missing, tmp_path)


def test_a_zip_without_the_dataset_layout_is_rejected(zip_server, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("something/else.txt", "not a dataset")
    zip_server.payload = buffer.getvalue()
    with pytest.raises(DataError, match="train/ and test/"):
        download_and_extract(zip_server.url, tmp_path)
    assert not (tmp_path / "landmark_images").exists()


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


# ----------------------------------------------------------------------------------------------------------------------
# setup_env


def test_setup_env_seeds_everything_and_returns_a_device(landmark_data):
    device = setup_env(seed=7)
    first = (torch.rand(3), np.random.rand(), __import__("random").random())
    setup_env(seed=7)
    second = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert isinstance(device, torch.device)
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]
    assert helpers.CHECKPOINTS_DIR.is_dir()


def test_setup_env_does_not_download_over_an_explicit_LANDMARK_DATA(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDMARK_DATA", str(tmp_path / "missing"))
    monkeypatch.setattr(helpers, "download_and_extract", lambda *a, **k: pytest.fail("must not download"))
    with pytest.raises(DataError, match="LANDMARK_DATA"):
        setup_env()


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
