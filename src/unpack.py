"""Unpacking the landmark dataset all or nothing: the zip is checked first (sizes, free space, CRCs), unpacked into a
hidden temporary folder named after the unpacking process, and renamed into place only when complete.

    extract_atomically(zip_path, target)   # target appears whole, or not at all
    remove_stale_temp_folders(folder)      # what unpacks killed midway left behind (about 1 GB each)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

from src.files import describe_write_error, process_alive
from src.helpers import DataError, is_dataset_root

TEMP_PREFIX = ".landmark_images-"  # + "<pid>-<random>": the pid tells a later run whether the unpack still runs

# What the zip may unpack to, checked from its directory before anything is written. The real zip is about 1 GB of
# some 6,250 JPEGs, which do not compress (ratio ~1); anything far outside that is not the dataset but a mistake or a
# "zip bomb" (a small file that unpacks to enough to fill the disk).
MAX_MEMBERS = 100_000  # 16 times the real count: millions of entries would exhaust the file system's inodes
MAX_MEMBER_BYTES = 1 << 30  # 1 GB: no photo is that large
MAX_TOTAL_BYTES = 50 << 30  # 50 GB: 50 times the real dataset
MAX_RATIO = 100  # JPEGs compress ~1:1, runs of zeros ~1000:1; 100:1 is no photo
RATIO_FROM_BYTES = 1 << 20  # small members (text, tiny PNGs) may compress well and do no harm: judge those above 1 MB


def extract_atomically(zip_path: Path, target: Path) -> None:
    """Unpack zip_path into a temp folder next to `target`, then rename the dataset folder into place.

    Checks sizes and free space first; a corrupt zip is deleted, any other failure keeps it. No temp folder is left.
    """
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            _check_sizes(members, zip_path)
            _check_space(members, target.parent, zip_path)
            bad_member = archive.testzip()  # CRC-checks every member
            if bad_member is not None:
                raise zipfile.BadZipFile(f"bad CRC in {bad_member}")
            tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=target.parent))
            try:
                archive.extractall(tmp)  # strips absolute paths and '..' from member names: nothing lands outside tmp
                found = [p for p in (tmp, *tmp.iterdir(), *tmp.glob("*/*")) if p.is_dir() and is_dataset_root(p)]
                if not found:
                    raise DataError(
                        f"{zip_path.name} does not contain train/ and test/ class folders; is it the right file?"
                    )
                found[0].replace(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        zip_path.unlink()
        raise DataError(f"{zip_path.name} is corrupt ({err}); deleted it. Run again to download it afresh.") from None
    except NotImplementedError as err:  # a compression method Python cannot read
        raise DataError(f"{zip_path} cannot be unpacked ({err}); kept it. Unzip it by hand.") from None
    except OSError as err:  # the disk: full (also mid-unpack), read-only, no permission
        raise DataError(
            f"{describe_write_error(str(target.parent.absolute()), err)} Removed what was unpacked; "
            f"{zip_path.name} is kept: run again once that is fixed."
        ) from None


def _check_sizes(members: list[zipfile.ZipInfo], zip_path: Path) -> None:
    """Raise DataError (zip kept) if the zip would unpack to far more than a dataset of photos could, or is encrypted.

    The sizes come from the zip's directory; a member that decompresses to more than its stated size fails the CRC
    check instead (zipfile stops reading at the stated size), so the stated sizes bound what is written.
    """
    total = sum(m.file_size for m in members)
    problems = [f"{len(members):,} files (the dataset has about 6,250)"] if len(members) > MAX_MEMBERS else []
    problems += [f"{size_text(total)} in all (the dataset is about 1 GB)"] if total > MAX_TOTAL_BYTES else []
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > MAX_MEMBER_BYTES:
            problems.append(f"{member.filename} of {size_text(member.file_size)}")
        elif member.file_size > RATIO_FROM_BYTES and ratio > MAX_RATIO:
            problems.append(f"{member.filename}, {ratio:,.0f} times its compressed size (photos barely compress)")
        elif member.flag_bits & 0x1:
            problems.append(f"{member.filename}, encrypted")
    if problems:
        raise DataError(
            f"{zip_path} is not the landmark dataset: it holds {problems[0]}. Nothing was unpacked; kept "
            f"the zip for inspection: delete it, check the download URL, and run again."
        )


def _check_space(members: list[zipfile.ZipInfo], folder: Path, zip_path: Path) -> None:
    """Raise DataError (zip kept) if `folder` has no room for the unpacked files."""
    need = sum(m.file_size for m in members) + 4096 * len(members)  # each file also takes up to a block more
    free = shutil.disk_usage(folder).free
    if need > free:
        raise DataError(
            f"Not enough space to unpack {zip_path.name} in {folder.absolute()}: it needs {size_text(need)}, "
            f"{size_text(free)} is free. Free some space there (the zip is kept), then run again."
        )


def remove_stale_temp_folders(folder: Path) -> list[Path]:
    """Delete the temporary folders in `folder` of unpacks whose process no longer runs (killed mid-unpack: about
    1 GB each); returns them. Folders of running processes are left alone."""
    removed = []
    for path in sorted(folder.glob(TEMP_PREFIX + "*")):
        pid = path.name[len(TEMP_PREFIX) :].split("-")[0]
        # A name without a pid is from before the pid was added: no running unpack uses that name any more.
        if path.is_dir() and not path.is_symlink() and not (pid.isdigit() and process_alive(int(pid))):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                print(f"Removed {path}, left behind by an unpack that was interrupted.")
                removed.append(path)
    return removed


def size_text(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.1f} MB"
