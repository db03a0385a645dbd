"""Environment and data plumbing: where the data and the models live, and the data's statistics (src/download.py gets
the data; src/images.py reads images).

Everything here is independent of the model. The landmark dataset layout is the course's:

    landmark_images/
        train/00.Haleakala_National_Park/*.jpg ... train/49.Temple_of_Olympian_Zeus/*.jpg
        test/ (same class folders)
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.datasets.folder import IMG_EXTENSIONS

from src.checks import check_int
from src.files import WriteError, save_json
from src.images import load_rgb_image
from src.paths import PROJECT_ROOT
from src.progress import tqdm

DEFAULT_DATA_DIR = PROJECT_ROOT / "landmark_images"
STATS_FILE = "dataset_stats.json"  # cached mean/std and unreadable files, written into the dataset root

MAX_SEED = 2**32 - 1  # NumPy's legacy seeding takes 0 to 2**32 - 1


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
        f"Run `make run` (or call src.download.download_and_extract()) to download it into {looked_at}, "
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
# Dataset statistics (cached)


def class_folders(split: Path) -> list[Path]:
    """The class folders of a split (train/ or test/), sorted by name: its sub-folders, symlinked ones included."""
    return sorted((path for path in split.iterdir() if path.is_dir()), key=lambda path: path.name)


def scan_files(folder: Path) -> tuple[list[Path], list[str]]:
    """(every file below `folder`, the entries skipped as 'path (why)'): the one scan every reader of the data uses.

    Follows symlinked folders (class folders may be links) but reads each real folder once, so a link back to a
    parent cannot loop and a second link to a folder cannot count its files twice. Dangling links, links to
    themselves, unreadable folders and special files (pipes, devices) are skipped. Files come in ImageFolder's
    order: by folder path, then by name.
    """
    files: list[tuple[str, str]] = []
    skipped: list[str] = []
    seen: set[tuple[int, int]] = set()  # (device, inode) of every folder read
    # (folder, the folders that contain it). A link up to train/ or above would also bring in the other classes'
    # files, so the folders above `folder` count as containing it too.
    stack: list[tuple[str, frozenset]] = [(str(folder), _ids_above(Path(folder)))]
    while stack:
        directory, parents = stack.pop()
        try:
            info = os.stat(directory)
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as err:
            skipped.append(f"{directory} ({_why(err)})")
            continue
        key = (info.st_dev, info.st_ino)
        if key in parents or key in seen:
            why = "a link to a folder that contains it" if key in parents else "a second link to a folder already read"
            skipped.append(f"{directory} ({why})")
            continue
        seen.add(key)
        real, linked = [], []
        for entry in entries:
            try:
                if entry.is_dir():
                    (linked if entry.is_symlink() else real).append(entry.path)
                elif entry.is_file():
                    files.append((directory, entry.name))
                else:
                    why = "a link to nothing" if entry.is_symlink() else "not a regular file"
                    skipped.append(f"{entry.path} ({why})")
            except OSError as err:  # a link to itself, or no permission to look
                skipped.append(f"{entry.path} ({_why(err)})")
        # Pushed so that they pop in name order, real folders before links: of a link and the folder it points to in
        # the same tree, the link is the one skipped.
        stack += [(path, parents | {key}) for path in reversed(real + linked)]
    return [Path(directory, name) for directory, name in sorted(files)], skipped


def _ids_above(folder: Path) -> frozenset[tuple[int, int]]:
    """(device, inode) of every folder above `folder`, as written and as resolved (it may be a link)."""
    above = set(folder.absolute().parents)
    try:
        above |= set(folder.resolve().parents)
    except (OSError, RuntimeError):  # a link loop: it is skipped anyway
        pass
    ids = set()
    for path in above:
        try:
            ids.add((path.stat().st_dev, path.stat().st_ino))
        except OSError:
            pass
    return frozenset(ids)


def _why(err: OSError) -> str:
    return "a symlink loop" if err.errno == errno.ELOOP else err.strerror or str(err)


def files_under(folder: Path) -> list[Path]:
    """Every file below `folder`, as scan_files lists them (what it skips is reported by data.check_class_folders)."""
    return scan_files(folder)[0]


def is_image(path: Path) -> bool:
    """Whether ImageFolder would load this file (by its extension)."""
    return path.suffix.lower() in IMG_EXTENSIONS  # torchvision's own list: the scan sees what ImageFolder would


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under `folder`, in scan order. 'Other' is what ImageFolder would silently ignore."""
    files = files_under(folder)
    return [path for path in files if is_image(path)], [path for path in files if not is_image(path)]


def dataset_files(root: Path) -> list[Path]:
    """Every file in the class folders of root/train and root/test: exactly the files the loaders can see."""
    folders = [folder for split in ("train", "test") for folder in class_folders(root / split)]
    return [path for folder in folders for path in files_under(folder)]


def _fingerprint(root: Path, files: list[Path]) -> str:
    """Changes whenever one of `files` (see dataset_files) is added, removed, resized or touched."""
    digest = hashlib.sha1()
    for path in files:
        try:
            stat = path.stat()
            state = f"{stat.st_size}|{stat.st_mtime_ns}"
        except OSError:  # removed since the scan: the fingerprint must still change, not crash
            state = "gone"
        digest.update(f"{path.relative_to(root)}|{state}\n".encode())
    return digest.hexdigest()


class _PixelCounts(torch.utils.data.Dataset):
    """Per image path: (how often each 0-255 value occurs in each channel [3, 256] int64, None), or (None, why the
    file cannot be decoded)."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[np.ndarray | None, str | None]:
        try:
            pixels = np.asarray(load_rgb_image(self.paths[index])).reshape(-1, 3)
        except Exception as err:  # noqa: BLE001 - any decode failure means "skip this file", and we say why
            return None, f"{type(err).__name__}: {err}"
        return np.stack([np.bincount(pixels[:, channel], minlength=256) for channel in range(3)]), None


def dataset_stats(root: str | Path | None = None) -> dict:
    """Decode every image once: per-channel mean/std of train/ (in [0,1] pixel units) and the unreadable files.

    Returns {"mean": [r,g,b], "std": [r,g,b], "n_pixels": int, "unreadable": {relative path: reason}}.
    The test split is only checked, never measured: statistics of the test set must not leak into training.
    Cached in <root>/dataset_stats.json and recomputed when the files change.
    """
    root = Path(root) if root is not None else get_data_location()
    cache = root / STATS_FILE
    files = dataset_files(root)
    fingerprint = _fingerprint(root, files)
    if cache.exists():
        try:
            stats = json.loads(cache.read_text(encoding="utf-8"))
            if stats.get("fingerprint") == fingerprint:
                return stats
        except (OSError, ValueError):
            pass  # an unreadable cache is simply recomputed

    counts = np.zeros((3, 256), dtype=np.int64)  # how often each 0-255 value occurs in each channel of train/
    unreadable = {}
    images = [path for path in files if is_image(path)]
    # Decoding dominates, so one process per core: 1,000 photos took 5.1 s on 2 cores, 5.6 s in one process (22 s
    # when the pixels were summed as float64). A few hundred images, about a second, stay in this process.
    workers = cpu_cores() if len(images) >= 300 else 0
    decoded = DataLoader(_PixelCounts(images), batch_size=8, num_workers=workers, collate_fn=list)
    results = (result for batch in decoded for result in batch)
    for path, (image_counts, error) in zip(tqdm(images, desc="Checking images, computing mean/std", unit="img"), results):
        if error:
            unreadable[str(path.relative_to(root))] = error
        elif path.relative_to(root).parts[0] == "train":
            counts += image_counts
    n_pixels = int(counts[0].sum())
    if n_pixels == 0:
        raise DataError(f"No readable training images in {root / 'train'}. {_how_to_get_data(root)}")
    values = np.arange(256) / 255.0
    mean = counts @ values / n_pixels
    std = np.sqrt(np.maximum(counts @ values**2 / n_pixels - mean**2, 0.0))
    stats = {
        "fingerprint": fingerprint,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "n_pixels": n_pixels,
        "unreadable": unreadable,
    }
    try:
        save_json(stats, cache)
    except WriteError as err:  # only a cache: the statistics are still right, just not saved
        warnings.warn(f"{err} Dataset statistics not cached: they will be recomputed next time.", stacklevel=2)
    return stats


def compute_mean_and_std(root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the training images, each a float32 tensor of shape [3], for Normalize().
    (Required by the course, with this name.)"""
    stats = dataset_stats(root)
    return torch.tensor(stats["mean"], dtype=torch.float32), torch.tensor(stats["std"], dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Environment


def seed_everything(seed: int = 42) -> None:
    """Seed Python, NumPy and PyTorch (CPU and every GPU) so runs are repeatable. seed: 0 to 2**32 - 1 (NumPy's range)."""
    check_int(seed, 0, "seed", maximum=MAX_SEED)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS


def cpu_cores() -> int:
    """The CPU cores this process may use: its affinity where the system has one (Linux: a container's share, not the
    host's cores), else os.cpu_count() (macOS and Windows have no os.sched_getaffinity)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def get_device() -> torch.device:
    """The fastest device available: CUDA GPU, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
