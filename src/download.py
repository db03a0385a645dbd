"""Getting the landmark dataset: a resumable download and an all-or-nothing unpack.

    download_and_extract()   # landmark_images/ in the project folder, where get_data_location() finds it

No failure loses a finished part of the download or leaves a half dataset that looks whole:
  - the zip downloads into <name>.part, continued with an HTTP Range request after any interruption; a reply that
    cannot be appended safely (malformed headers) stops the run and keeps the .part file;
  - one process at a time downloads into a folder (a lock on the folder): a second one waits, then finds the data;
  - the zip's sizes and the free space are checked before anything is written, then it is unpacked into a hidden
    temporary folder named after the unpacking process and renamed into place only when complete; the temporary
    folders of processes that no longer run (killed mid-unpack) are removed by the next call.
Every failure is a DataError whose message is one line saying what to do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from src import helpers
from src.files import WriteError, check_writable, describe_write_error
from src.helpers import DataError, is_dataset_root
from src.progress import tqdm
from src.unpack import extract_atomically, remove_stale_temp_folders, size_text

try:
    import fcntl
except ImportError:  # Windows: no flock; there, two runs at once are the user's to avoid
    fcntl = None

DATA_URL = "https://udacity-dlnfd.s3-us-west-1.amazonaws.com/datasets/landmark_images.zip"

# Errors that come from the disk, not the network: retrying the download cannot help with those.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class BadReply(Exception):
    """The server's reply cannot be appended to the partial download safely (says why)."""


def landmark_data() -> Path:
    """The landmark dataset root (helpers.get_data_location), downloaded first when it is missing; never over a
    LANDMARK_DATA that the user set (that path's DataError says how to fix it)."""
    try:
        return helpers.get_data_location()
    except DataError:
        if os.environ.get("LANDMARK_DATA"):
            raise
        return download_and_extract()


def download_and_extract(
    url: str = DATA_URL,
    dest: str | Path | None = None,
    sha256: str | None = None,
    timeout: float = 30.0,
    max_attempts: int = 3,
) -> Path:
    """Download the dataset zip and unpack it to dest/landmark_images; returns that folder.

    Safe to re-run and to interrupt at any moment: a complete dataset is left alone, a partial download is resumed,
    and the dataset folder appears only when complete. Raises DataError with a one-line fix on failure.
    """
    dest = Path(dest) if dest is not None else helpers.DEFAULT_DATA_DIR.parent  # read now: tests move it
    target = dest / "landmark_images"
    fix = "The dataset goes there; or set LANDMARK_DATA to a copy you already have."
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{describe_write_error(str(dest.absolute()), err)} {fix}") from None
    with _lock(dest):  # also while cleaning up: no other run's unpack is then in progress
        remove_stale_temp_folders(dest)
        if target.is_dir() and is_dataset_root(target):  # perhaps another run finished it while this one waited
            print(f"Dataset already at {target} (delete that folder to download it again).")
            return target
        try:
            check_writable(dest)  # under the lock: its probe file has a fixed name
        except WriteError as err:
            raise DataError(f"{err} {fix}") from None
        if target.exists():
            raise DataError(f"{target} exists but is not a complete dataset. Delete it and run again.")
        zip_path = dest / (Path(url.split("?")[0]).name or "landmark_images.zip")
        if not zip_path.exists():
            _download(url, zip_path, sha256, timeout, max_attempts)
        extract_atomically(zip_path, target)
        zip_path.unlink()
    print(f"Dataset ready at {target}")
    return target


# ----------------------------------------------------------------------------------------------------------------------
# Download


def _download(url: str, zip_path: Path, sha256: str | None, timeout: float, max_attempts: int) -> None:
    """Download `url` to zip_path through zip_path.part, retrying network failures from where they stopped."""
    part_path = zip_path.with_name(zip_path.name + ".part")
    manual = (
        f"Download {url} by hand, unzip it and either put landmark_images/ in {zip_path.parent} "
        f"or set LANDMARK_DATA=/path/to/landmark_images."
    )
    for attempt in range(1, max_attempts + 1):
        try:
            _download_resumable(url, part_path, timeout)
            break
        except BadReply as err:
            raise DataError(
                f"Could not download {url}: the server sent {err}; kept the partial download {part_path} "
                f"for the next run to resume. {manual}"
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
                raise DataError(
                    f"{describe_write_error(str(part_path.absolute()), err)} The partial download is kept: "
                    f"run again to resume once that is fixed."
                ) from None
            if isinstance(err, urllib.error.HTTPError):
                reason = f"HTTP {err.code} {err.reason}"
            else:
                reason = getattr(err, "reason", None) or err
            if isinstance(err, urllib.error.HTTPError) or attempt == max_attempts or not part_path.exists():
                raise DataError(f"Could not download {url} ({reason}). {manual}") from None
            print(f"Download interrupted ({reason}); resuming (attempt {attempt + 1} of {max_attempts}).")
    _verify_sha256(part_path, sha256)
    part_path.replace(zip_path)


def _download_resumable(url: str, part_path: Path, timeout: float) -> None:
    """Stream `url` into part_path, continuing from the bytes already there. Raises on an incomplete transfer,
    BadReply (before touching part_path) on a reply that cannot be appended, and DataError when the disk is too full."""
    have = part_path.stat().st_size if part_path.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not have:
            raise
        # "Range Not Satisfiable": nothing left to send, unless the .part file is longer than the file (not its start)
        size = re.fullmatch(r"bytes \*/(\d+)", (err.headers.get("Content-Range") or "").strip())
        if size and int(size[1]) != have:
            print(f"{part_path} ({have:,} bytes) is not the start of {url} ({int(size[1]):,}): starting over.")
            part_path.unlink()
            _download_resumable(url, part_path, timeout)
        return
    with response:
        start, total = _resume_point(response, have)
        free = shutil.disk_usage(part_path.parent).free
        if total is not None and total - start > free:
            raise DataError(
                f"Not enough space in {part_path.parent.absolute()} to download {url}: it needs "
                f"{size_text(total - start)} more, {size_text(free)} is free. Free some space there, then run again"
                + (" (the part already downloaded is kept)." if start else ".")
            )
        with open(part_path, "ab" if start else "wb") as out, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, desc=f"Downloading {part_path.stem}"
        ) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    size = part_path.stat().st_size
    if total is not None and size != total:
        raise OSError(f"got {size:,} of {total:,} bytes")


def _resume_point(response: http.client.HTTPResponse, have: int) -> tuple[int, int | None]:
    """(the byte the reply's body starts at, the file's total size or None if unknown), from its headers.

    Raises BadReply when they are malformed: appending a body that starts anywhere else would corrupt the download.
    """
    if response.status == 206:  # the server honoured the Range request: append
        value = response.headers.get("Content-Range")
        match = CONTENT_RANGE.fullmatch((value or "").strip())
        if not match:
            raise BadReply(f"a partial reply without a valid Content-Range header ({value!r})")
        start, end, total = int(match[1]), int(match[2]), None if match[3] == "*" else int(match[3])
        if start != have or end < start or (total is not None and end >= total):
            raise BadReply(f"bytes {start}-{end} of {total or 'unknown'} when asked for bytes {have}-")
        return start, total
    if response.status != 200:  # a 204 or the like: nothing to start over with
        raise BadReply(f"an unexpected HTTP {response.status} {response.reason} reply")
    # A 200 means the server ignored Range (or nothing was downloaded yet): start over.
    value = response.headers.get("Content-Length")
    if value is None:
        return 0, None
    if not value.strip().isdigit():
        raise BadReply(f"an invalid Content-Length header ({value!r})")
    return 0, int(value)


def _verify_sha256(path: Path, expected: str | None) -> None:
    if expected is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != expected.lower():
        path.unlink()
        raise DataError(f"{path.name} has the wrong sha256 (deleted it). Run again to download it afresh.")


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder`: two runs at once (say, two notebooks started together) would append to
    the same .part file and unpack over each other. The second waits, then finds the dataset there."""
    fd = None
    if fcntl is not None:
        with contextlib.suppress(OSError):  # a folder that may be written but not read: go on unlocked
            fd = os.open(folder, os.O_RDONLY)  # a lock on the folder itself leaves no lock file behind
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"Another process is downloading into {folder}; waiting for it to finish.")
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a file system without locks (some network mounts): go on unlocked
                pass
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock
