"""Specification of src/download.py: getting the dataset zip and unpacking it, against a real HTTP server on
127.0.0.1, with hostile servers, hostile zips, full and read-only disks (small tmpfs mounts) and killed runs."""

import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src import download, unpack
from src.download import download_and_extract
from src.helpers import DataError
from tests.conftest import tmpfs

# ----------------------------------------------------------------------------------------------------------------------
# A dataset zip, a server for it, and small file systems


def make_dataset_zip(extra: dict[str, bytes] | None = None) -> bytes:
    """A zip laid out like the official one: landmark_images/{train,test}/<class>/<image>; `extra` members are added
    deflated (name -> content)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for split in ("train", "test"):
            for name in ("00.Place_A", "01.Place_B"):
                image = io.BytesIO()
                Image.new("RGB", (32, 24), (10, 200, 30)).save(image, format="PNG")
                archive.writestr(f"landmark_images/{split}/{name}/photo.png", image.getvalue())
        archive.writestr("landmark_images/train/00.Place_A/padding.bin", np.random.bytes(200_000))
        for name, content in (extra or {}).items():
            archive.writestr(name, content, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


class ZipServer:
    """Serves one file with HTTP Range support (416 past its end, like a real server). `cut_after` bytes of the next
    response are sent, then the connection drops (a network failure mid-download); `cut_always` does that to every
    response. `headers` replace (a value) or remove (None) reply headers. Records every request's Range header."""

    def __init__(self, payload: bytes):
        self.payload, self.cut_after, self.ranges, self.honour_range = payload, None, [], True
        self.cut_always, self.headers = False, {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/landmark_images.zip":
                    self.send_error(404)
                    return
                requested = self.headers.get("Range")
                server.ranges.append(requested)
                start = int(requested.split("=")[1].split("-")[0]) if requested and server.honour_range else 0
                size = len(server.payload)
                if start >= size > 0:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.payload[start:]
                headers = {"Content-Length": str(len(body))}
                if start:
                    headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
                headers.update(server.headers)
                self.send_response(206 if start else 200)
                for name, value in headers.items():
                    if value is not None:
                        self.send_header(name, value)
                self.end_headers()
                if server.cut_after is not None:
                    body = body[: server.cut_after]
                    server.cut_after = server.cut_after if server.cut_always else None
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


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


# ----------------------------------------------------------------------------------------------------------------------
# Downloading


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
# Hostile servers: a reply that cannot be appended safely stops with one line and keeps the partial download


def test_a_non_numeric_content_length_is_one_line_and_keeps_the_partial_download(zip_server, tmp_path):
    part = tmp_path / "landmark_images.zip.part"
    part.write_bytes(zip_server.payload[:123_456])
    zip_server.honour_range = False  # a 200 reply: the download would start over, so its length must be known
    zip_server.headers = {"Content-Length": "lots"}
    with pytest.raises(DataError) as caught:
        download_and_extract(zip_server.url, tmp_path)
    message = one_line(caught)
    assert "Content-Length" in message and "'lots'" in message and str(part) in message and "kept" in message
    assert part.read_bytes() == zip_server.payload[:123_456], "the partial download must be kept as it was"
    zip_server.honour_range, zip_server.headers = True, {}
    download_and_extract(zip_server.url, tmp_path)  # a later run resumes it
    assert zip_server.ranges[-1] == "bytes=123456-"
    assert_complete_dataset(tmp_path)


@pytest.mark.parametrize(
    "content_range",
    [None, "bytes abc", "bytes 100-50/300000", "bytes 0-99/100"],
    ids=["missing", "garbage", "end-before-start", "starts-elsewhere"],
)
def test_a_partial_reply_without_a_usable_content_range_is_one_line_and_keeps_the_partial_download(
    zip_server, tmp_path, content_range
):
    part = tmp_path / "landmark_images.zip.part"
    part.write_bytes(zip_server.payload[:1000])
    zip_server.headers = {"Content-Range": content_range}
    with pytest.raises(DataError, match="Content-Range|when asked for bytes 1000-") as caught:
        download_and_extract(zip_server.url, tmp_path)
    assert "kept" in one_line(caught)
    assert part.read_bytes() == zip_server.payload[:1000]


def test_an_unexpected_success_status_does_not_truncate_the_partial_download(zip_server, tmp_path, monkeypatch):
    part = tmp_path / "landmark_images.zip.part"
    part.write_bytes(zip_server.payload[:1000])
    zip_server.honour_range = False
    real_send_response = http.server.BaseHTTPRequestHandler.send_response
    monkeypatch.setattr(
        http.server.BaseHTTPRequestHandler, "send_response", lambda self, code, *a: real_send_response(self, 203, *a)
    )
    with pytest.raises(DataError, match="unexpected HTTP 203"):
        download_and_extract(zip_server.url, tmp_path)
    assert part.read_bytes() == zip_server.payload[:1000]


def test_a_negative_content_length_is_refused(zip_server, tmp_path):
    zip_server.headers = {"Content-Length": "-5"}
    with pytest.raises(DataError, match="Content-Length"):
        download_and_extract(zip_server.url, tmp_path)


def test_a_partial_file_longer_than_the_servers_file_is_started_over(zip_server, tmp_path):
    too_long = len(zip_server.payload) + 100
    (tmp_path / "landmark_images.zip.part").write_bytes(zip_server.payload + bytes(100))
    download_and_extract(zip_server.url, tmp_path)
    assert zip_server.ranges == [f"bytes={too_long}-", None]
    assert_complete_dataset(tmp_path)


def test_a_complete_partial_file_is_used_without_downloading_it_again(zip_server, tmp_path):
    (tmp_path / "landmark_images.zip.part").write_bytes(zip_server.payload)
    download_and_extract(zip_server.url, tmp_path)
    assert zip_server.ranges == [f"bytes={len(zip_server.payload)}-"]  # answered 416: nothing left to send
    assert_complete_dataset(tmp_path)


def test_a_server_that_always_sends_less_than_its_content_length_fails_after_the_retries_and_keeps_the_part(
    zip_server, tmp_path
):
    zip_server.cut_after, zip_server.cut_always = 10_000, True
    with pytest.raises(DataError, match="Could not download") as caught:
        download_and_extract(zip_server.url, tmp_path, max_attempts=3)
    assert "got 30,000 of" in one_line(caught)
    assert len(zip_server.ranges) == 3
    assert (tmp_path / "landmark_images.zip.part").read_bytes() == zip_server.payload[:30_000]
    zip_server.cut_after, zip_server.cut_always = None, False
    download_and_extract(zip_server.url, tmp_path)
    assert zip_server.ranges[-1] == "bytes=30000-"
    assert_complete_dataset(tmp_path)


def test_an_interrupted_run_keeps_its_partial_download_and_the_next_run_resumes(zip_server, tmp_path, monkeypatch):
    def interrupt(response, have):  # Ctrl-C once the server has answered
        raise KeyboardInterrupt

    (tmp_path / "landmark_images.zip.part").write_bytes(zip_server.payload[:5000])
    with monkeypatch.context() as patch:
        patch.setattr(download, "_resume_point", interrupt)
        with pytest.raises(KeyboardInterrupt):
            download_and_extract(zip_server.url, tmp_path)
    assert (tmp_path / "landmark_images.zip.part").read_bytes() == zip_server.payload[:5000]
    download_and_extract(zip_server.url, tmp_path)
    assert zip_server.ranges[-1] == "bytes=5000-"
    assert_complete_dataset(tmp_path)


def test_two_runs_at_once_download_once_and_both_get_the_dataset(zip_server, tmp_path):
    results, errors = [], []

    def run():
        try:
            results.append(download_and_extract(zip_server.url, tmp_path))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and results == [tmp_path / "landmark_images"] * 2
    assert zip_server.ranges == [None], "the second run must wait for the first, not download too"
    assert_complete_dataset(tmp_path)


# ----------------------------------------------------------------------------------------------------------------------
# Hostile zips: refused before anything is written


def test_a_zip_bomb_member_is_refused_before_unpacking_and_the_zip_kept(zip_server, tmp_path):
    zeros = bytes(4 << 20)  # 4 MB of zeros deflate about 1000 times
    zip_server.payload = make_dataset_zip({"landmark_images/train/00.Place_A/zeros.jpg": zeros})
    with pytest.raises(DataError) as caught:
        download_and_extract(zip_server.url, tmp_path)
    message = one_line(caught)
    assert "not the landmark dataset" in message and "zeros.jpg" in message and "times its compressed size" in message
    assert "kept the zip" in message and str(tmp_path / "landmark_images.zip") in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["landmark_images.zip"], "nothing unpacked, zip kept"


@pytest.mark.parametrize(
    "limit, value, expected",
    [("MAX_MEMBER_BYTES", 100_000, "padding.bin of"), ("MAX_TOTAL_BYTES", 100_000, "in all"),
     ("MAX_MEMBERS", 4, "5 files")],
)
def test_a_zip_over_the_size_limits_is_refused(zip_server, tmp_path, monkeypatch, limit, value, expected):
    monkeypatch.setattr(unpack, limit, value)  # the real limits are gigabytes: scaled down to this 200 KB zip
    with pytest.raises(DataError, match=expected):
        download_and_extract(zip_server.url, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["landmark_images.zip"]


def test_an_encrypted_zip_is_refused_with_one_line(zip_server, tmp_path):
    name = b"landmark_images/train/00.Place_A/secret.jpg"
    payload = bytearray(make_dataset_zip({name.decode(): b"x" * 100}))
    start = 0
    while (start := payload.find(name, start + 1)) != -1:  # set the "encrypted" flag bit where zipfile reads it
        if payload[start - 30 : start - 26] == b"PK\x03\x04":  # the local header: flags at byte 6
            payload[start - 30 + 6] |= 0x1
        elif payload[start - 46 : start - 42] == b"PK\x01\x02":  # the central directory: flags at byte 8
            payload[start - 46 + 8] |= 0x1
    zip_server.payload = bytes(payload)
    with pytest.raises(DataError, match="secret.jpg, encrypted"):
        download_and_extract(zip_server.url, tmp_path)


def test_absolute_and_parent_paths_in_the_zip_stay_inside_the_destination(zip_server, tmp_path):
    name = f"escaped-{uuid.uuid4().hex}.txt"
    dest = tmp_path / "a" / "b"
    zip_server.payload = make_dataset_zip({f"/tmp/{name}": b"x", f"../../{name}": b"x", f"x/../../../{name}": b"x"})
    download_and_extract(zip_server.url, dest)
    assert not (Path("/tmp") / name).exists()
    assert not any(tmp_path.rglob(name)), "zipfile strips '/' and '..': nothing may land outside, or be left"
    assert_complete_dataset(dest)


# ----------------------------------------------------------------------------------------------------------------------
# Full and read-only disks: one line naming the folder, nothing half-written left behind


class _Plenty:
    """What shutil.disk_usage says of a disk with a terabyte free (to get past the up-front space checks)."""

    total = used = free = 1 << 40


def compressible(n_bytes: int) -> bytes:
    """Bytes that deflate about 28 times: a lot unpacked from a small zip, yet far from a zip bomb's ratio."""
    return np.repeat(np.random.default_rng(0).integers(0, 256, n_bytes // 64, dtype=np.uint8), 64).tobytes()


def test_no_room_to_unpack_is_found_before_unpacking(zip_server, tmp_path):
    zip_server.payload = make_dataset_zip({"landmark_images/train/00.Place_A/big.bin": compressible(3_000_000)})
    with tmpfs(tmp_path / "disk", "1m") as disk:
        with pytest.raises(DataError) as caught:
            download_and_extract(zip_server.url, disk)
        message = one_line(caught)
        assert "Not enough space to unpack" in message and str(disk) in message and "zip is kept" in message
        assert sorted(p.name for p in disk.iterdir()) == ["landmark_images.zip"]


def test_a_disk_that_fills_while_unpacking_is_one_line_and_leaves_no_temp_folder(zip_server, tmp_path, monkeypatch):
    zip_server.payload = make_dataset_zip({"landmark_images/train/00.Place_A/big.bin": compressible(3_000_000)})
    with tmpfs(tmp_path / "disk", "1m") as disk:
        monkeypatch.setattr(download.shutil, "disk_usage", lambda path: _Plenty)
        with pytest.raises(DataError) as caught:
            download_and_extract(zip_server.url, disk)
        monkeypatch.undo()
        message = one_line(caught)
        assert "disk is full" in message and str(disk) in message and "is kept" in message
        assert sorted(p.name for p in disk.iterdir()) == ["landmark_images.zip"], "no temp folder, no half dataset"


@pytest.mark.parametrize("space_check", ["before", "while writing"])
def test_no_room_for_the_download_is_one_line_naming_the_folder(zip_server, tmp_path, monkeypatch, space_check):
    zip_server.payload = make_dataset_zip({"landmark_images/train/00.Place_A/noise.bin": np.random.bytes(1_500_000)})
    with tmpfs(tmp_path / "disk", "1m") as disk:
        if space_check == "while writing":  # the disk fills up during the download (other programs write too)
            monkeypatch.setattr(download.shutil, "disk_usage", lambda path: _Plenty)
        with pytest.raises(DataError) as caught:
            download_and_extract(zip_server.url, disk)
        monkeypatch.undo()
        message = one_line(caught)
        assert str(disk) in message
        assert ("Not enough space" if space_check == "before" else "disk is full") in message
        assert not (disk / "landmark_images").exists()


def test_a_read_only_destination_is_one_line(zip_server, tmp_path):
    with tmpfs(tmp_path / "disk", "1m", read_only=True) as disk:
        with pytest.raises(DataError, match="read-only") as caught:
            download_and_extract(zip_server.url, disk)
        assert str(disk) in one_line(caught)
    assert zip_server.ranges == [], "nothing is downloaded where it cannot be kept"


# ----------------------------------------------------------------------------------------------------------------------
# Killed runs: leftovers are cleaned up, the dataset is never half there


def dead_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temp_folders_of_killed_unpacks_are_removed_and_those_of_running_ones_kept(zip_server, tmp_path):
    stale = tmp_path / f".landmark_images-{dead_pid()}-abc123"
    old_style = tmp_path / ".landmark_images-k2j4_x9q"  # named before the pid was part of the name
    running = tmp_path / f".landmark_images-{os.getpid()}-def456"
    for folder in (stale, old_style, running):
        (folder / "landmark_images" / "train").mkdir(parents=True)
        (folder / "landmark_images" / "train" / "half.jpg").write_bytes(b"half an unpack")
    download_and_extract(zip_server.url, tmp_path)
    assert not stale.exists() and not old_style.exists()
    assert running.is_dir(), "a running process's temp folder must be left alone"
    assert (tmp_path / "landmark_images" / "train" / "00.Place_A" / "photo.png").is_file()


def test_leftovers_are_also_removed_when_the_dataset_is_already_there(zip_server, tmp_path):
    download_and_extract(zip_server.url, tmp_path)
    stale = tmp_path / f".landmark_images-{dead_pid()}-abc123"
    stale.mkdir()
    download_and_extract(zip_server.url, tmp_path)
    assert not stale.exists()
    assert len(zip_server.ranges) == 1


def test_an_interrupted_unpack_leaves_no_temp_folder_and_the_next_run_finishes(zip_server, tmp_path, monkeypatch):
    real_extractall = zipfile.ZipFile.extractall

    def extract_some_then_interrupt(archive, path, *args, **kwargs):
        archive.extract(archive.infolist()[0], path)
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "extractall", extract_some_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        download_and_extract(zip_server.url, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["landmark_images.zip"], "zip kept, no half dataset"
    monkeypatch.setattr(zipfile.ZipFile, "extractall", real_extractall)
    download_and_extract(zip_server.url, tmp_path)
    assert zip_server.ranges == [None], "the kept zip is unpacked, not downloaded again"
    assert_complete_dataset(tmp_path)


KILLED_MID_UNPACK = """
import sys, time, zipfile
from pathlib import Path
from src.download import download_and_extract

def extract_one_then_hang(archive, path, *args, **kwargs):
    archive.extract(archive.infolist()[0], path)
    Path(sys.argv[2], "unpacking").touch()
    time.sleep(60)

zipfile.ZipFile.extractall = extract_one_then_hang
download_and_extract(sys.argv[1], sys.argv[2])
"""


def test_a_run_killed_mid_unpack_leaves_no_dataset_and_the_next_run_cleans_up_and_finishes(zip_server, tmp_path):
    project = Path(__file__).resolve().parents[1]
    child = subprocess.Popen([sys.executable, "-c", KILLED_MID_UNPACK, zip_server.url, str(tmp_path)], cwd=project)
    try:
        for _ in range(600):  # up to 60 s
            if (tmp_path / "unpacking").exists() or child.poll() is not None:
                break
            time.sleep(0.1)
        assert (tmp_path / "unpacking").exists(), "the child never got to unpacking"
    finally:
        child.kill()  # SIGKILL: no finally block runs in the child
        child.wait()
    (tmp_path / "unpacking").unlink()
    [leftover] = tmp_path.glob(".landmark_images-*")
    assert leftover.name.startswith(f".landmark_images-{child.pid}-")
    assert not (tmp_path / "landmark_images").exists(), "never a half dataset"
    download_and_extract(zip_server.url, tmp_path)
    assert zip_server.ranges == [None], "the kept zip is unpacked, not downloaded again"
    assert_complete_dataset(tmp_path)


def test_the_temp_folder_is_named_after_the_unpacking_process(zip_server, tmp_path, monkeypatch):
    seen = []
    real_extractall = zipfile.ZipFile.extractall

    def extractall(archive, path, *args, **kwargs):
        seen.append(Path(path).name)
        real_extractall(archive, path)

    monkeypatch.setattr(zipfile.ZipFile, "extractall", extractall)
    download_and_extract(zip_server.url, tmp_path)
    assert len(seen) == 1 and seen[0].startswith(f".landmark_images-{os.getpid()}-")
