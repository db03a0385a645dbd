"""Specification of src/synthetic.py: a small landmark-style ImageFolder that varies like real data."""

import numpy as np

from src.images import load_rgb_image
from src.synthetic import make_synthetic_dataset


def test_make_synthetic_dataset_writes_an_image_folder_of_mixed_formats(tmp_path):
    root = make_synthetic_dataset(tmp_path / "synthetic", n_classes=2, n_train=5, n_test=2)
    assert root == tmp_path / "synthetic"
    for split, count in (("train", 5), ("test", 2)):
        folders = sorted(p for p in (root / split).iterdir())
        assert [p.name for p in folders] == ["00.Synthetic_Landmark_A", "01.Synthetic_Landmark_B"]
        for folder in folders:
            assert len(list(folder.iterdir())) == count
    files = [p for p in (root / "train").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".jpg", ".png"}
    for path in files:
        assert load_rgb_image(path).mode == "RGB"


def test_make_synthetic_dataset_is_reproducible_for_a_seed(tmp_path):
    first = make_synthetic_dataset(tmp_path / "a", n_classes=2, n_train=2, n_test=1, seed=3)
    second = make_synthetic_dataset(tmp_path / "b", n_classes=2, n_train=2, n_test=1, seed=3)
    files = sorted(p for p in first.rglob("*") if p.is_file())
    assert len(files) == 2 * (2 + 1)
    for path in files:
        other = second / path.relative_to(first)
        assert np.array_equal(np.asarray(load_rgb_image(path)), np.asarray(load_rgb_image(other)))
