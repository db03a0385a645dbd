"""Specification of src/fashion_mnist.py: Fashion-MNIST from Debian's package (or the official download), unpacked
atomically and checked, and the loaders src.data makes of it."""

import gzip
from collections import Counter
from pathlib import Path

import pytest
import torch
from torchvision import datasets

from src import fashion_mnist
from src.data import get_class_names, get_data_loaders, get_datasets
from src.fashion_mnist import FASHION_MNIST_DIR, FASHION_MNIST_SIZES, prepare_fashion_mnist
from src.files import WriteError
from src.helpers import DataError
from tests.conftest import tmpfs
from tests.test_data import labels_of

FASHION_FILES = [name for name, _ in datasets.FashionMNIST.resources]  # the four *-ubyte.gz names
DEBIAN_HAS_FASHION_MNIST = all((fashion_mnist.DEBIAN_FASHION_MNIST / name).exists() for name in FASHION_FILES)
PROJECT_HAS_FASHION_MNIST = all(
    (FASHION_MNIST_DIR / "FashionMNIST" / "raw" / name.removesuffix(".gz")).exists() for name in FASHION_FILES
)
requires_fashion_mnist = pytest.mark.skipif(
    not (DEBIAN_HAS_FASHION_MNIST or PROJECT_HAS_FASHION_MNIST),
    reason=f"Fashion-MNIST is neither installed in {fashion_mnist.DEBIAN_FASHION_MNIST} (apt-get install dataset-fashion-mnist) "
    f"nor prepared in {FASHION_MNIST_DIR}, and tests must not download",
)
requires_debian_fashion_mnist = pytest.mark.skipif(
    not DEBIAN_HAS_FASHION_MNIST,
    reason=f"Debian's Fashion-MNIST is not installed in {fashion_mnist.DEBIAN_FASHION_MNIST} "
    "(apt-get install dataset-fashion-mnist)",
)


@requires_debian_fashion_mnist
def test_prepare_fashion_mnist_unpacks_debians_four_files(tmp_path):
    assert prepare_fashion_mnist(tmp_path) == tmp_path
    raw = tmp_path / "FashionMNIST" / "raw"
    assert {p.name: p.stat().st_size for p in raw.iterdir()} == FASHION_MNIST_SIZES


def test_a_corrupt_debian_fashion_mnist_is_an_error_and_leaves_no_unpacked_file(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    debian.mkdir()
    for name in FASHION_FILES:
        with gzip.open(debian / name, "wb") as f:
            f.write(b"\x00" * 100)  # valid gzip, far too small to be the dataset
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST", debian)
    with pytest.raises(DataError, match="corrupt"):
        prepare_fashion_mnist(tmp_path / "fashion_mnist")
    raw = tmp_path / "fashion_mnist" / "FashionMNIST" / "raw"
    assert not any((raw / name.removesuffix(".gz")).exists() for name in FASHION_FILES)


def fake_debian_fashion_mnist(folder: Path, monkeypatch, content: bytes = b"\x07" * 100) -> None:
    """Debian's four .gz files in `folder`, each holding `content` (sizes scaled down to match)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FASHION_FILES:
        with gzip.open(folder / name, "wb") as f:
            f.write(content)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST", folder)
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_SIZES", {name.removesuffix(".gz"): len(content) for name in FASHION_FILES})


def test_debian_fashion_mnist_is_unpacked_atomically(tmp_path, monkeypatch):
    fake_debian_fashion_mnist(tmp_path / "debian", monkeypatch)
    raw = prepare_fashion_mnist(tmp_path / "fashion_mnist") / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(name.removesuffix(".gz") for name in FASHION_FILES)
    assert all(p.read_bytes() == b"\x07" * 100 for p in raw.iterdir()), "no temp file left, every file complete"


def test_a_debian_fashion_mnist_file_that_is_not_gzip_is_a_one_line_error(tmp_path, monkeypatch):
    fake_debian_fashion_mnist(tmp_path / "debian", monkeypatch)
    (tmp_path / "debian" / FASHION_FILES[0]).write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="corrupt .*reinstall the dataset-fashion-mnist package"):
        prepare_fashion_mnist(tmp_path / "fashion_mnist")


def test_fashion_mnist_in_a_read_only_folder_is_a_one_line_error(tmp_path, monkeypatch):
    fake_debian_fashion_mnist(tmp_path / "debian", monkeypatch)
    with tmpfs(tmp_path / "disk", "1m", read_only=True) as disk:
        with pytest.raises(WriteError, match="read-only") as caught:
            prepare_fashion_mnist(disk / "fashion_mnist")
        assert str(disk) in str(caught.value) and "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def fashion_loaders():
    return get_data_loaders(dataset="fashion-mnist", limit=200, batch_size=16, num_workers=0)


@requires_fashion_mnist
def test_fashion_mnist_batches_are_3x28x28(fashion_loaders):
    for split in ("train", "valid", "test"):
        images, labels = next(iter(fashion_loaders[split]))
        assert images.shape == (16, 3, 28, 28), split
        assert images.dtype == torch.float32
        assert labels.dtype == torch.int64
        assert 0 <= labels.min() and labels.max() < 10


@requires_fashion_mnist
def test_fashion_mnist_has_10_named_classes(fashion_loaders):
    names = get_class_names(fashion_loaders)
    assert len(names) == 10
    assert "T-shirt/top" in names


@requires_fashion_mnist
def test_fashion_mnist_limit_caps_every_split(fashion_loaders):
    for split in ("train", "valid", "test"):
        assert 0 < len(fashion_loaders[split].dataset) <= 200, split


@requires_fashion_mnist
def test_fashion_mnist_limit_takes_an_equal_share_of_every_class(fashion_loaders):
    for split in ("train", "valid", "test"):
        assert Counter(labels_of(fashion_loaders[split].dataset)) == {label: 20 for label in range(10)}, split


@requires_fashion_mnist
def test_fashion_mnist_validation_split_is_stratified():
    splits = get_datasets("fashion-mnist", valid_size=0.2)
    assert len(splits["train"]) == 48_000 and len(splits["valid"]) == 12_000 and len(splits["test"]) == 10_000
    assert Counter(labels_of(splits["valid"])) == {label: 1_200 for label in range(10)}
