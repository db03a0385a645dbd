"""Datasets and DataLoaders: everything between image files and batches of tensors (the transforms: src/presets.py).

Two datasets share one pipeline:
  - "landmarks": the course's 50-class landmark photos (ImageFolder layout, see src/helpers.py),
  - "fashion-mnist": 70,000 28x28 clothing images, a real dataset that works offline (src/fashion_mnist.py).

Usage:  python -m src.data --dataset fashion-mnist   (prints a summary; downloads what is missing)
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets
from torchvision.transforms import v2

from src.checks import OneLineParser, check_float, check_int, check_num_workers
from src.download import landmark_data
from src.fashion_mnist import FASHION_MNIST_DIR, fashion_mnist_datasets
from src.files import WriteError, check_writable
from src.helpers import (
    DataError,
    class_folders,
    cpu_cores,
    dataset_stats,
    get_data_location,
    get_device,
    is_image,
    list_images,
    scan_files,
    seed_everything,
)
from src.paths import CHECKPOINTS_DIR
from src.images import load_rgb_image
from src.landmarks import display_name
from src.splits import balanced_subset, stratified_split
from src.presets import (
    DATASETS,
    LANDMARK_IMAGE_SIZE,
    check_dataset_name,
    check_image_size,
    eval_resize_size,
    get_transforms,
)


# ----------------------------------------------------------------------------------------------------------------------
# Datasets


def get_datasets(
    dataset: str = "landmarks",
    valid_size: float = 0.2,
    limit: int = -1,
    image_size: int | None = None,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    seed: int = 42,
    train_augment: bool = True,
) -> dict[str, Dataset]:
    """{"train", "valid", "test"} datasets yielding (image [3,S,S] float32, label int).

    valid is a stratified `valid_size` fraction of the training images, the same on every call for a given seed.
    limit > 0 caps each split to a class-balanced subset of that many images (for quick runs).
    normalization = (mean, std) overrides the dataset's own statistics (e.g. a pretrained backbone's).
    train_augment=False gives train the deterministic eval transform (e.g. to compute features once).
    """
    check_dataset_name(dataset)
    check_float(valid_size, 0.0, 1.0, "valid_size", low_open=True, high_open=True)
    check_int(limit, -(2**63), "limit")  # any whole number: <= 0 means every image
    check_image_size(image_size)
    if dataset == "landmarks":
        root = get_data_location()
        train_all, valid_all, test = _landmark_folders(root, image_size, normalization, train_augment)
    else:
        train_all, valid_all, test = fashion_mnist_datasets(image_size, normalization, train_augment)

    targets = [int(label) for label in train_all.targets]  # Fashion-MNIST keeps them in a tensor
    test_targets = [int(label) for label in test.targets]
    train_idx, valid_idx = stratified_split(targets, valid_size, seed)
    for split, indices in (("validation", valid_idx), ("training", train_idx)):
        if not indices:
            raise DataError(
                f"No {split} images: {len(targets)} training images in {len(set(targets))} classes with "
                f"valid_size={valid_size} leave none for {split}. Add images, or change valid_size."
            )
    return {
        "train": Subset(train_all, balanced_subset(train_idx, targets, limit, seed)),
        "valid": Subset(valid_all, balanced_subset(valid_idx, targets, limit, seed)),
        "test": Subset(test, balanced_subset(range(len(test)), test_targets, limit, seed)),
    }


def _landmark_folders(root: Path, image_size: int | None, normalization, augment: bool) -> tuple[Dataset, Dataset, Dataset]:
    """Two views of train/ (augmented, and plain for validation) and test/, with bad files reported and skipped."""
    stats = dataset_stats(root)  # decodes each image once (cached): finds unreadable files, measures mean/std
    mean, std = normalization or (stats["mean"], stats["std"])
    transforms = get_transforms("landmarks", mean, std, image_size)
    unreadable = {root / path for path in stats["unreadable"]}
    if unreadable:
        listing = "; ".join(f"{path}: {reason}" for path, reason in stats["unreadable"].items())
        warnings.warn(f"Skipping {len(unreadable)} unreadable image(s): {listing}", stacklevel=3)
    check_class_folders(root, unreadable)
    # Every transform starts by resizing the shorter side to this, so JPEGs can be decoded at a reduced scale.
    size = LANDMARK_IMAGE_SIZE if image_size is None else image_size
    loader = functools.partial(load_rgb_image, min_side=eval_resize_size("landmarks", size))

    def folder(split: str, transform: v2.Compose) -> datasets.ImageFolder:
        return ScannedImageFolder(
            root / split, transform=transform, loader=loader,
            is_valid_file=lambda path: Path(path) not in unreadable,  # list_images already keeps only images
        )  # fmt: skip

    train_transform = transforms["train" if augment else "eval"]
    return folder("train", train_transform), folder("train", transforms["eval"]), folder("test", transforms["eval"])


class ScannedImageFolder(datasets.ImageFolder):
    """An ImageFolder that finds its classes and files with helpers.class_folders and list_images, the scan the
    statistics and check_class_folders use, so the three cannot disagree. torchvision's own walk follows symlinks
    without noticing loops (a link to a parent folder multiplies its files) and raises on a link to itself."""

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        classes = [folder.name for folder in class_folders(Path(directory))]
        return classes, {name: index for index, name in enumerate(classes)}

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        """(path, class index) of every image list_images finds in each class folder that is_valid_file accepts."""
        return [
            (str(path), class_to_idx[name]) for name in sorted(class_to_idx)
            for path in list_images(Path(directory) / name)[0] if is_valid_file is None or is_valid_file(str(path))
        ]  # fmt: skip


def check_class_folders(root: Path, unreadable: set[Path] = frozenset()) -> list[str]:
    """The class folder names, after checking that train/ and test/ agree and no class is empty.

    Raises DataError naming the offending folder. Warns once per call about non-image files, which are ignored, and
    once about links that loop or dangle and folders that cannot be read, which are skipped (see helpers.scan_files).
    """
    classes = {split: [p.name for p in class_folders(root / split)] for split in ("train", "test")}
    # A class folder that is a broken link or a link to itself is no class folder: say so, or it vanishes silently.
    skipped = [f"{p} (a link to nothing, or a loop)" for split in ("train", "test")
               for p in sorted((root / split).iterdir()) if p.is_symlink() and not p.exists()]  # fmt: skip
    if classes["train"] != classes["test"]:
        only_train = sorted(set(classes["train"]) - set(classes["test"]))
        only_test = sorted(set(classes["test"]) - set(classes["train"]))
        raise DataError(
            f"train/ and test/ in {root} must have the same class folders (only in train: {only_train or 'none'}; "
            f"only in test: {only_test or 'none'}). Add or remove folders so that they match."
        )
    ignored = []
    for split, name in itertools.product(("train", "test"), classes["train"]):
        files, problems = scan_files(root / split / name)
        skipped += problems
        ignored += [path for path in files if not is_image(path)]
        if not [path for path in files if is_image(path) and path not in unreadable]:
            raise DataError(f"Class folder {root / split / name} has no readable images: add some or delete it.")
    if ignored:
        warnings.warn(f"Ignoring {len(ignored)} non-image file(s): {', '.join(map(str, ignored))}", stacklevel=3)
    if skipped:
        listing = f"{len(skipped)} link(s) or folder(s) that loop, dangle or cannot be read: {'; '.join(skipped)}"
        warnings.warn(f"Skipping {listing}", stacklevel=3)
    return classes["train"]


# ----------------------------------------------------------------------------------------------------------------------
# DataLoaders


def get_data_loaders(
    batch_size: int = 32,
    valid_size: float = 0.2,
    num_workers: int = -1,
    limit: int = -1,
    dataset: str = "landmarks",
    image_size: int | None = None,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    seed: int = 42,
    train_augment: bool = True,
) -> dict[str, DataLoader]:
    """{"train", "valid", "test"} DataLoaders of (images [B,3,S,S] float32, labels [B] int64).

    num_workers=-1 uses every CPU core. Only "train" is shuffled (reproducibly, from `seed`). See get_datasets.
    """
    check_int(batch_size, 1, "batch_size")
    check_num_workers(num_workers)
    splits = get_datasets(dataset, valid_size, limit, image_size, normalization, seed, train_augment)
    workers = cpu_cores() if num_workers == -1 else num_workers
    common = dict(
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),  # page-locked memory makes host->GPU copies faster and async
        persistent_workers=workers > 0,  # don't pay worker start-up again every epoch
    )
    return {
        # drop_last: a final batch of 1 image would make BatchNorm fail in training mode.
        "train": DataLoader(
            splits["train"], shuffle=True, drop_last=len(splits["train"]) > batch_size,
            generator=torch.Generator().manual_seed(seed), **common,
        ),  # fmt: skip
        "valid": DataLoader(splits["valid"], shuffle=False, **common),
        "test": DataLoader(splits["test"], shuffle=False, **common),
    }


def base_dataset(dataset: Dataset) -> Dataset:
    """The dataset under any Subset wrappers (it knows the class names and the transform)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def get_class_names(data_loaders: dict[str, DataLoader]) -> list[str]:
    """Readable class names in label order, e.g. ["Haleakala National Park", ...]."""
    return [display_name(name) for name in base_dataset(data_loaders["train"].dataset).classes]


def get_normalization(data_loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std), each [3], of the Normalize step in the loader's transform (to undo it for display)."""
    for step in base_dataset(data_loader.dataset).transform.transforms:
        if isinstance(step, v2.Normalize):
            return torch.as_tensor(step.mean), torch.as_tensor(step.std)
    raise ValueError("The loader's transform has no Normalize step.")


def denormalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Undo Normalize on [B,3,H,W] (or [3,H,W]) images; the result is clipped to [0,1] for display."""
    return (images * std[:, None, None] + mean[:, None, None]).clamp(0, 1)


def visualize_one_batch(data_loaders: dict[str, DataLoader], max_n: int = 5) -> plt.Figure:
    """A figure of up to max_n augmented training images, titled with their class names."""
    images, labels = next(iter(data_loaders["train"]))
    images = denormalize(images[:max_n], *get_normalization(data_loaders["train"]))
    class_names = get_class_names(data_loaders)
    fig, axes = plt.subplots(1, len(images), figsize=(2.6 * len(images), 3.2), squeeze=False)
    for ax, image, label in zip(axes[0], images, labels):
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(class_names[label], fontsize=9)
        ax.axis("off")
    fig.suptitle("A batch of augmented training images")
    fig.tight_layout()
    return fig


def setup_env(seed: int = 42, download: bool = True) -> torch.device:
    """The notebooks' first call: seed everything, check that checkpoints/ can be written, make sure the landmark
    data is there (downloading it unless download=False or LANDMARK_DATA is set); returns the device to use."""
    seed_everything(seed)
    device = get_device()
    print(f"Using {device}" + ("" if device.type != "cpu" else " (no GPU found: training will be slow)"))
    check_writable(CHECKPOINTS_DIR)  # a read-only project folder: one line now, not a failed save hours later
    landmark_data() if download else get_data_location()
    return device


# ----------------------------------------------------------------------------------------------------------------------
# Summary (make run)


def dataset_summary(dataset: str = "landmarks", valid_size: float = 0.2) -> str:
    """A few lines describing the dataset: where it is, class and split sizes, normalization statistics."""
    splits = get_datasets(dataset, valid_size)
    base = base_dataset(splits["train"])
    names = [display_name(name) for name in base.classes]
    targets = [int(label) for label in base.targets]
    per_class = Counter(names[targets[i]] for i in splits["train"].indices).most_common()
    mean, std = (values.tolist() for values in get_normalization(DataLoader(splits["train"])))
    location = get_data_location() if dataset == "landmarks" else FASHION_MNIST_DIR
    return "\n".join(
        [
            f"Dataset: {dataset} ({location})",
            f"Classes: {len(names)} ({', '.join(names[:3])}, ...)",
            f"Images: {len(splits['train'])} train, {len(splits['valid'])} valid, {len(splits['test'])} test",
            f"Train images per class: {per_class[-1][1]} ({per_class[-1][0]}) to {per_class[0][1]} ({per_class[0][0]})",
            f"Normalization (train split): mean {[round(m, 4) for m in mean]}, std {[round(s, 4) for s in std]}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(description="Fetch/verify a dataset and print a summary of it.")
    parser.add_argument("--dataset", choices=DATASETS, default="landmarks")
    args = parser.parse_args(argv)
    try:
        if args.dataset == "landmarks":
            landmark_data()
        print(dataset_summary(args.dataset))
    except (DataError, WriteError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
