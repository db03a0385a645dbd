"""Fashion-MNIST: 70,000 28x28 clothing images in 10 classes, a real dataset that works offline (Debian packages it),
for proving that training really learns.

    prepare_fashion_mnist()     # Debian's copy (apt-get install dataset-fashion-mnist), else the official download
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from torch.utils.data import Dataset
from torchvision import datasets

from src.files import write_atomically
from src.helpers import DataError
from src.paths import PROJECT_ROOT
from src.presets import get_transforms

FASHION_MNIST_DIR = PROJECT_ROOT / "fashion_mnist"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # `apt-get install dataset-fashion-mnist`
FASHION_MNIST_SIZES = {  # bytes of each unpacked IDX file: a 16/8-byte header + 28*28 pixels or 1 label per image
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
}


def fashion_mnist_datasets(image_size: int | None, normalization, augment: bool) -> tuple[Dataset, Dataset, Dataset]:
    """(train with the train transform if augment else the eval one, train with the eval transform, test): the three
    views src.data.get_datasets splits; normalization None means the training pixels' own mean and std."""
    root = prepare_fashion_mnist()
    train = datasets.FashionMNIST(root, train=True)
    if normalization is None:  # mean/std of the training pixels (in [0,1]), the same value on all 3 channels
        pixels = train.data.double() / 255
        normalization = ([pixels.mean().item()] * 3, [pixels.std().item()] * 3)
    transforms = get_transforms("fashion-mnist", *normalization, image_size)
    return (
        datasets.FashionMNIST(root, train=True, transform=transforms["train" if augment else "eval"]),
        datasets.FashionMNIST(root, train=True, transform=transforms["eval"]),
        datasets.FashionMNIST(root, train=False, transform=transforms["eval"]),
    )


def prepare_fashion_mnist(root: Path = FASHION_MNIST_DIR) -> Path:
    """Make Fashion-MNIST readable by torchvision under `root`; returns root.

    Uses Debian's copy (`apt-get install dataset-fashion-mnist`) when present, else downloads the official files.
    """
    raw = root / "FashionMNIST" / "raw"
    resources = datasets.FashionMNIST.resources  # [(file name .gz, md5)]
    if all((raw / name.removesuffix(".gz")).exists() for name, _ in resources):
        return root
    if all((DEBIAN_FASHION_MNIST / name).exists() for name, _ in resources):
        for name, _ in resources:  # Debian recompressed the .gz files, so check the unpacked size, not the md5
            source, unpacked = DEBIAN_FASHION_MNIST / name, raw / name.removesuffix(".gz")
            try:
                with gzip.open(source) as compressed:
                    content = compressed.read(FASHION_MNIST_SIZES[unpacked.name] + 1)  # at most 47 MB
            except (OSError, EOFError, zlib.error) as err:
                raise DataError(f"{source} is corrupt ({err}): reinstall the dataset-fashion-mnist package.") from None
            if len(content) != FASHION_MNIST_SIZES[unpacked.name]:
                raise DataError(f"{source} is corrupt (wrong size): reinstall the dataset-fashion-mnist package.")
            write_atomically(unpacked, content)
        return root
    try:
        datasets.FashionMNIST(root, train=True, download=True)
    except Exception as err:  # noqa: BLE001 - torchvision raises many kinds; all mean "could not download"
        raise DataError(
            f"Could not download Fashion-MNIST ({err}). Install it with `apt-get install dataset-fashion-mnist` "
            f"or put the four *-ubyte.gz files in {raw}."
        ) from None
    return root
