"""Environment and data plumbing: where the data lives, getting it, reading images, and its statistics.

Everything here is independent of the model. The landmark dataset layout is the course's:

    landmark_images/
        train/00.Haleakala_National_Park/*.jpg ... train/49.Temple_of_Olympian_Zeus/*.jpg
        test/ (same class folders)
"""

from __future__ import annotations

import csv
import functools
import hashlib
import http.client
import io
import json
import math
import os
import random
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Trained and exported models; LANDMARK_CHECKPOINTS points elsewhere (e.g. to keep several experiments apart).
CHECKPOINTS_DIR = Path(os.environ.get("LANDMARK_CHECKPOINTS") or PROJECT_ROOT / "checkpoints")
DEFAULT_DATA_DIR = PROJECT_ROOT / "landmark_images"
DATA_URL = "https://udacity-dlnfd.s3-us-west-1.amazonaws.com/datasets/landmark_images.zip"
LANDMARKS_CSV = Path(__file__).with_name("landmarks.csv")  # name and location of each of the 50 landmarks
STATS_FILE = "dataset_stats.json"  # cached mean/std and unreadable files, written into the dataset root

MAX_PIXELS = 90_000_000  # larger images are refused: a small file can decode to gigabytes (a "decompression bomb")
# The same list torchvision's ImageFolder uses, so the scan below sees exactly the files the loader would.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DataError(RuntimeError):
    """Missing, malformed or undownloadable data. The message is one line that says how to fix it."""


# ----------------------------------------------------------------------------------------------------------------------
# Where the data is


def _how_to_get_data(looked_at: Path) -> str:
    if os.environ.get("LANDMARK_DATA"):
        return (
            f"LANDMARK_DATA points there: fix that path, or unset LANDMARK_DATA and run `make run` to download "
            f"the dataset into {DEFAULT_DATA_DIR}."
        )
    return (
        f"Run `make run` (or call src.helpers.download_and_extract()) to download it into {looked_at}, "
        f"or set LANDMARK_DATA=/path/to/landmark_images if you already have it."
    )


def is_dataset_root(path: Path) -> bool:
    """True if `path` has train/ and test/ folders that each contain at least one class folder."""
    return all((path / split).is_dir() and any(p.is_dir() for p in (path / split).iterdir()) for split in ("train", "test"))


def get_data_location() -> Path:
    """The landmark dataset root: $LANDMARK_DATA if set, else ./landmark_images in the project folder.

    A zip unpacked by hand into its own folder (landmark_images/landmark_images/train) is accepted too.
    Raises DataError naming the path it looked at when there is no usable dataset there.
    """
    root = Path(os.environ["LANDMARK_DATA"]).expanduser() if os.environ.get("LANDMARK_DATA") else DEFAULT_DATA_DIR
    for candidate in (root, root / "landmark_images"):
        if candidate.is_dir() and is_dataset_root(candidate):
            return candidate
    if not root.exists():
        raise DataError(f"No landmark dataset at {root}. {_how_to_get_data(root)}")
    raise DataError(
        f"{root} is not a landmark dataset: it needs train/ and test/ folders with one sub-folder per class. "
        f"{_how_to_get_data(root)}"
    )


# ----------------------------------------------------------------------------------------------------------------------
# Download


def download_and_extract(
    url: str = DATA_URL,
    dest: str | Path | None = None,
    sha256: str | None = None,
    timeout: float = 30.0,
    max_attempts: int = 3,
) -> Path:
    """Download the dataset zip and unpack it to dest/landmark_images; returns that folder.

    Safe to re-run: a complete dataset is left alone; a partial download (dest/<name>.part) is resumed with an HTTP
    Range request; the zip is unpacked into a temporary folder and renamed into place only when complete, so an
    interrupted run never leaves a half dataset that looks whole. Raises DataError with a one-line fix on failure.
    """
    dest = Path(dest) if dest is not None else DEFAULT_DATA_DIR.parent
    target = dest / "landmark_images"
    if target.is_dir() and is_dataset_root(target):
        print(f"Dataset already at {target} (delete that folder to download it again).")
        return target
    if target.exists():
        raise DataError(f"{target} exists but is not a complete dataset. Delete it and run again.")

    dest.mkdir(parents=True, exist_ok=True)
    zip_path = dest / Path(url.split("?")[0]).name
    part_path = zip_path.with_name(zip_path.name + ".part")
    manual = (
        f"Download {url} by hand, unzip it and either put landmark_images/ in {dest} "
        f"or set LANDMARK_DATA=/path/to/landmark_images."
    )
    if not zip_path.exists():
        for attempt in range(1, max_attempts + 1):
            try:
                _download_resumable(url, part_path, timeout)
                break
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                if isinstance(err, urllib.error.HTTPError):
                    reason = f"HTTP {err.code} {err.reason}"
                else:
                    reason = getattr(err, "reason", None) or err
                if isinstance(err, urllib.error.HTTPError) or attempt == max_attempts or not part_path.exists():
                    raise DataError(f"Could not download {url} ({reason}). {manual}") from None
                print(f"Download interrupted ({reason}); resuming (attempt {attempt + 1} of {max_attempts}).")
        _verify_sha256(part_path, sha256)
        part_path.replace(zip_path)

    _extract_atomically(zip_path, target)
    zip_path.unlink()
    print(f"Dataset ready at {target}")
    return target


def _download_resumable(url: str, part_path: Path, timeout: float) -> None:
    """Stream `url` into part_path, continuing from the bytes already there. Raises on an incomplete transfer."""
    have = part_path.stat().st_size if part_path.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the .part file already holds the whole file
            return
        raise
    with response:
        if response.status == 206:  # the server honoured the Range request: append
            total = int(response.headers["Content-Range"].rsplit("/", 1)[1])
            mode = "ab"
        else:  # a 200 means the server ignored Range: start over
            total, have, mode = int(response.headers.get("Content-Length", 0)), 0, "wb"
        with open(part_path, mode) as out, tqdm(
            total=total or None, initial=have, unit="B", unit_scale=True, desc=f"Downloading {part_path.stem}"
        ) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    size = part_path.stat().st_size
    if total and size != total:
        raise OSError(f"got {size:,} of {total:,} bytes")


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


def _extract_atomically(zip_path: Path, target: Path) -> None:
    """Unpack zip_path into a temp folder next to `target`, then rename the dataset folder into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".landmark_images-", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                bad_member = archive.testzip()  # CRC-checks every member
                if bad_member is not None:
                    raise zipfile.BadZipFile(f"bad CRC in {bad_member}")
                archive.extractall(tmp)
        except (zipfile.BadZipFile, EOFError) as err:
            zip_path.unlink()
            raise DataError(f"{zip_path.name} is corrupt ({err}); deleted it. Run again to download it afresh.") from None
        found = [p for p in (tmp, *tmp.iterdir(), *tmp.glob("*/*")) if p.is_dir() and is_dataset_root(p)]
        if not found:
            raise DataError(f"{zip_path.name} does not contain train/ and test/ class folders; is it the right file?")
        found[0].replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------------
# Reading images


def load_rgb_image(source: str | Path | BinaryIO, min_side: int | None = None) -> Image.Image:
    """Open an image as 8-bit RGB, upright: EXIF orientation applied, transparency flattened onto white.

    Handles grayscale, 16-bit, palette, RGBA/LA and CMYK files. Raises PIL/OS errors for unreadable data, and
    Image.DecompressionBombError for images over MAX_PIXELS (checked from the header, before decoding).
    min_side: for callers that resize the shorter side to min_side anyway, a JPEG may be decoded at 1/2, 1/4 or 1/8
    scale (libjpeg's DCT scaling) while its shorter side stays >= min_side: an 800x600 photo for a 256 px resize
    decodes at 400x300, several times faster.
    """
    with warnings.catch_warnings():  # Pillow warns from 89.5 megapixels; our own limit below is the one that counts
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(source)
    with img:
        if img.width * img.height > MAX_PIXELS:
            raise Image.DecompressionBombError(
                f"{img.width}x{img.height} is {img.width * img.height / 1e6:.0f} megapixels, "
                f"over the {MAX_PIXELS / 1e6:.0f}-megapixel limit"
            )
        if min_side is not None:  # draft() asks for at least this size; it is a no-op for formats other than JPEG
            scale = min_side / min(img.size)
            img.draft(img.mode, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
        img = ImageOps.exif_transpose(img)  # phone photos store "rotate me" in EXIF instead of rotating pixels
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 0..255, don't clip
            pixels = np.asarray(img, dtype=np.float64)
            scale = 255.0 / 65535.0 if img.mode.startswith("I;16") or pixels.max() > 255 else 1.0
            img = Image.fromarray(np.clip(pixels * scale, 0, 255).astype(np.uint8), mode="L")
        if img.mode == "P":
            img = img.convert("RGBA")  # palette images may carry transparency
        if img.mode in ("RGBA", "LA", "PA"):
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img.convert("RGBA"))
        return img.convert("RGB")  # also decodes the pixels, so a truncated file fails here, not later


class PhotoError(ValueError):
    """A photo that cannot be used; the message is one line that starts with the photo's name."""


def open_photo(source: str | Path | BinaryIO, name: str | None = None) -> Image.Image:
    """load_rgb_image for photos from people (the CLI, the app): every failure is a one-line PhotoError."""
    name = name or str(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise PhotoError(f"{name}: no such file")
        if path.is_dir():
            raise PhotoError(f"{name}: is a folder, not a photo")
        if path.stat().st_size == 0:
            raise PhotoError(f"{name}: the file is empty")
    elif isinstance(source, io.BytesIO) and source.getbuffer().nbytes == 0:
        raise PhotoError(f"{name}: the file is empty")
    try:
        return load_rgb_image(source)
    except Image.DecompressionBombError as err:
        raise PhotoError(f"{name}: too large to open safely ({err})") from None
    except Image.UnidentifiedImageError:
        raise PhotoError(f"{name}: not an image file (or a format Pillow cannot read)") from None
    except OSError as err:
        raise PhotoError(f"{name}: damaged or truncated image ({err})") from None
    except Exception as err:  # noqa: BLE001 - Pillow raises many kinds for malformed files
        raise PhotoError(f"{name}: cannot read this image ({type(err).__name__}: {err})") from None


# ----------------------------------------------------------------------------------------------------------------------
# Class names and where each landmark is


@functools.cache
def landmarks() -> dict[str, dict[str, str]]:
    """Class folder -> its row of src/landmarks.csv: name, place, country, latitude, longitude (all strings)."""
    with open(LANDMARKS_CSV, newline="", encoding="utf-8") as f:
        return {row["folder"]: row for row in csv.DictReader(f)}


def display_name(class_folder: str) -> str:
    """'16.Eiffel_Tower' -> 'Eiffel Tower' (from src/landmarks.csv when the folder is a known landmark).

    Other names lose a numeric 'NN.' prefix and underscores: '00.Synthetic_Landmark_A' -> 'Synthetic Landmark A'.
    """
    if class_folder in landmarks():
        return landmarks()[class_folder]["name"]
    prefix, dot, rest = class_folder.partition(".")
    name = rest if dot and prefix.isdigit() else class_folder
    return name.replace("_", " ")


@functools.cache
def _landmarks_by_name() -> dict[str, dict[str, str]]:
    return {row["name"]: row for row in landmarks().values()}


def landmark_info(name: str) -> dict[str, str] | None:
    """The src/landmarks.csv row for a display name or a class folder; None for anything else."""
    return landmarks().get(name) or _landmarks_by_name().get(name)


def landmark_place(name: str) -> str:
    """'Eiffel Tower' -> 'Paris, France'; '' when the name is not a known landmark."""
    info = landmark_info(name)
    return f"{info['place']}, {info['country']}" if info else ""


# ----------------------------------------------------------------------------------------------------------------------
# Dataset statistics (cached)


def files_under(folder: Path) -> list[Path]:
    """Every file below `folder`, sorted, following symlinked folders as ImageFolder does."""
    return sorted(Path(parent) / name for parent, _, names in os.walk(folder, followlinks=True) for name in names)


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under `folder`, sorted. 'Other' is what ImageFolder would silently ignore."""
    images, others = [], []
    for path in files_under(folder):
        (images if path.suffix.lower() in IMAGE_EXTENSIONS else others).append(path)
    return images, others


def _fingerprint(root: Path) -> str:
    """Changes whenever a file under train/ or test/ is added, removed, resized or touched."""
    digest = hashlib.sha1()
    for split in ("train", "test"):
        for path in files_under(root / split):
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def dataset_stats(root: str | Path | None = None) -> dict:
    """Decode every image once: per-channel mean/std of train/ (in [0,1] pixel units) and the unreadable files.

    Returns {"mean": [r,g,b], "std": [r,g,b], "n_pixels": int, "unreadable": {relative path: reason}}.
    The test split is only checked, never measured: statistics of the test set must not leak into training.
    Cached in <root>/dataset_stats.json and recomputed when the files change.
    """
    root = Path(root) if root is not None else get_data_location()
    cache = root / STATS_FILE
    fingerprint = _fingerprint(root)
    if cache.exists():
        try:
            stats = json.loads(cache.read_text())
            if stats.get("fingerprint") == fingerprint:
                return stats
        except (OSError, ValueError):
            pass  # an unreadable cache is simply recomputed

    total = np.zeros(3)
    total_sq = np.zeros(3)
    n_pixels = 0
    unreadable = {}
    files = list_images(root / "train")[0] + list_images(root / "test")[0]
    for path in tqdm(files, desc="Checking images, computing mean/std", unit="img"):
        try:
            pixels = np.asarray(load_rgb_image(path), dtype=np.float64).reshape(-1, 3) / 255.0
        except Exception as err:  # noqa: BLE001 - any decode failure means "skip this file", and we say why
            unreadable[str(path.relative_to(root))] = f"{type(err).__name__}: {err}"
            continue
        if path.relative_to(root).parts[0] == "train":
            total += pixels.sum(axis=0)
            total_sq += (pixels**2).sum(axis=0)
            n_pixels += len(pixels)
    if n_pixels == 0:
        raise DataError(f"No readable training images in {root / 'train'}. {_how_to_get_data(root)}")
    mean = total / n_pixels
    std = np.sqrt(np.maximum(total_sq / n_pixels - mean**2, 0.0))
    stats = {
        "fingerprint": fingerprint,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "n_pixels": n_pixels,
        "unreadable": unreadable,
    }
    try:
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats, indent=1))
        tmp.replace(cache)
    except OSError:
        warnings.warn(f"Could not cache dataset statistics in {cache} (read-only?); they will be recomputed next time.")
    return stats


def compute_mean_and_std(root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the training images, each a float32 tensor of shape [3], for Normalize()."""
    stats = dataset_stats(root)
    return torch.tensor(stats["mean"], dtype=torch.float32), torch.tensor(stats["std"], dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Environment


def seed_everything(seed: int = 42) -> None:
    """Seed Python, NumPy and PyTorch (CPU and every GPU) so runs are repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS


def get_device() -> torch.device:
    """The fastest device available: CUDA GPU, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup_env(seed: int = 42, download: bool = True) -> torch.device:
    """Seed everything, create checkpoints/, make sure the landmark data is there; returns the device to use."""
    seed_everything(seed)
    device = get_device()
    print(f"Using {device}" + ("" if device.type != "cpu" else " (no GPU found: training will be slow)"))
    CHECKPOINTS_DIR.mkdir(exist_ok=True)
    try:
        get_data_location()
    except DataError:
        if not download or os.environ.get("LANDMARK_DATA"):
            raise
        download_and_extract()
    return device
