"""Specification of src/data.py: from image files to batches of tensors.

Landmark tests run on the small synthetic dataset from conftest.py (3 classes; train has 10 images per class plus an
EXIF-rotated JPEG and a 16-bit PNG in class 00, so 32 images; test has 4 per class).
"""

import os
import pickle
import re
import warnings
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import SequentialSampler
from torchvision.transforms import v2

from src import download, presets
from src.data import (
    base_dataset,
    dataset_summary,
    denormalize,
    get_class_names,
    get_data_loaders,
    get_normalization,
    setup_env,
    visualize_one_batch,
)
from src.helpers import DataError, dataset_stats
from src.paths import CHECKPOINTS_DIR
from src.images import load_rgb_image
from src.presets import AugmentationRecipe, get_transforms
from tests.conftest import N_CLASSES, N_TEST, N_TRAIN, SAMPLES, requires_samples

# What the synthetic dataset must split into with the default valid_size=0.2: class 00 has 2 extra train images.
TRAIN_PER_CLASS = [N_TRAIN + 2] + [N_TRAIN] * (N_CLASSES - 1)
N_TRAIN_IMAGES = sum(TRAIN_PER_CLASS)  # 32
N_VALID = sum(round(0.2 * n) for n in TRAIN_PER_CLASS)  # 6: 20% of every class
N_TEST_IMAGES = N_CLASSES * N_TEST  # 12
CLASS_NAMES = ["Synthetic Landmark A", "Synthetic Landmark B", "Synthetic Landmark C"]

def loaders_for_test(**kwargs):
    """get_data_loaders with the quick settings most tests want: no worker processes."""
    return get_data_loaders(**{"batch_size": 4, "num_workers": 0, **kwargs})


def labels_of(subset) -> list[int]:
    """The labels of a Subset's images, in the Subset's order, read without decoding any image."""
    targets = base_dataset(subset).targets
    return [int(targets[i]) for i in subset.indices]


def image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A noise image of the given size and mode."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


# ----------------------------------------------------------------------------------------------------------------------
# Loaders: keys, shapes, dtypes


def test_loaders_are_train_valid_and_test(landmark_data):
    assert set(loaders_for_test()) == {"train", "valid", "test"}


def test_a_train_batch_is_float_images_and_int64_labels_in_range(landmark_data):
    images, labels = next(iter(loaders_for_test()["train"]))
    assert images.shape == (4, 3, 224, 224)
    assert images.dtype == torch.float32
    assert labels.shape == (4,)
    assert labels.dtype == torch.int64
    assert labels.min() >= 0 and labels.max() < N_CLASSES


@pytest.mark.parametrize("split", ["valid", "test"])
def test_valid_and_test_batches_have_the_same_shape_as_train(landmark_data, split):
    images, labels = next(iter(loaders_for_test()[split]))
    assert images.shape == (4, 3, 224, 224)
    assert images.dtype == torch.float32
    assert labels.dtype == torch.int64


def test_image_size_sets_the_side_of_every_batch(landmark_data):
    loaders = loaders_for_test(image_size=64)
    for split in ("train", "valid", "test"):
        images, _ = next(iter(loaders[split]))
        assert images.shape == (4, 3, 64, 64), split


def test_datasets_can_be_pickled_so_workers_also_start_under_spawn(landmark_data):
    """macOS and Windows start DataLoader workers by pickling the dataset: no lambdas or open files allowed in it."""
    loaders = loaders_for_test()
    for split in ("train", "valid", "test"):
        restored = pickle.loads(pickle.dumps(loaders[split].dataset))
        assert restored[0][0].shape == (3, 224, 224)


# ----------------------------------------------------------------------------------------------------------------------
# Validation split


def test_validation_split_is_identical_on_every_call(landmark_data):
    first, second = loaders_for_test(), loaders_for_test()
    assert first["valid"].dataset.indices == second["valid"].dataset.indices
    assert first["train"].dataset.indices == second["train"].dataset.indices


def test_train_and_valid_are_disjoint_and_together_cover_every_training_image(landmark_data):
    loaders = loaders_for_test()
    train, valid = loaders["train"].dataset, loaders["valid"].dataset
    assert base_dataset(train).samples == base_dataset(valid).samples  # both index the same train/ images
    assert len(base_dataset(train)) == N_TRAIN_IMAGES
    assert not set(train.indices) & set(valid.indices)
    assert sorted(train.indices + valid.indices) == list(range(N_TRAIN_IMAGES))
    assert len(valid) == N_VALID
    assert len(loaders["test"].dataset) == N_TEST_IMAGES


def test_validation_split_is_stratified_so_every_class_is_in_it(landmark_data):
    valid = loaders_for_test()["valid"].dataset
    per_class = Counter(labels_of(valid))
    assert per_class == {label: round(0.2 * n) for label, n in enumerate(TRAIN_PER_CLASS)}


@pytest.mark.parametrize("valid_size", [0, 1, -0.1, 1.5, float("nan")])
def test_valid_size_outside_0_1_is_rejected(landmark_data, valid_size):
    with pytest.raises(ValueError, match=r"valid_size must be (in \(0, 1\)|a finite number), got"):
        loaders_for_test(valid_size=valid_size)


@pytest.mark.parametrize(
    "setting, message",
    [({"batch_size": 0}, "batch_size must be at least 1, got 0"),
     ({"batch_size": 2.5}, "batch_size must be a whole number, got 2.5"),
     ({"num_workers": -2}, "num_workers must be at least -1, got -2"),
     ({"image_size": 0}, "image_size must be in [1, 1024], got 0"),
     ({"image_size": -64}, "image_size must be in [1, 1024], got -64"),
     ({"image_size": 100_000}, "image_size must be in [1, 1024], got 100000"),
     ({"image_size": "224"}, "image_size must be a whole number, got '224'"),
     ({"limit": 0.5}, "limit must be a whole number, got 0.5"),
     ({"valid_size": "0.2"}, "valid_size must be a finite number, got '0.2'")],
)  # fmt: skip
def test_bad_settings_are_one_line_errors_before_any_work(tmp_path, monkeypatch, setting, message):
    monkeypatch.setenv("LANDMARK_DATA", str(tmp_path / "no_data_here"))  # looking for the data would be a DataError
    with pytest.raises(ValueError) as caught:
        loaders_for_test(**setting)
    assert str(caught.value) == message


@pytest.mark.parametrize("image_size", [0, -1])
def test_get_transforms_rejects_an_image_size_below_1(image_size):
    with pytest.raises(ValueError, match=r"image_size must be in \[1, 1024\]"):
        get_transforms("landmarks", MEAN, STD, image_size=image_size)


@pytest.mark.parametrize("dataset", ["landmarks", "fashion-mnist"])
def test_the_smallest_image_size_works(dataset):
    for kind in ("train", "eval"):
        assert get_transforms(dataset, MEAN, STD, image_size=1)[kind](image(28, 28)).shape == (3, 1, 1)


def test_negative_limit_still_means_every_image(landmark_data):
    loaders = loaders_for_test(limit=-5)
    assert len(loaders["train"].dataset) + len(loaders["valid"].dataset) == N_TRAIN_IMAGES


@pytest.mark.parametrize("valid_size, empty", [(0.01, "validation"), (0.99, "training")])
def test_a_split_left_empty_by_valid_size_is_a_data_error_naming_the_fix(landmark_data, valid_size, empty):
    with pytest.raises(DataError, match=f"No {empty} images: .* Add images, or change valid_size"):
        loaders_for_test(valid_size=valid_size)


# ----------------------------------------------------------------------------------------------------------------------
# limit: small class-balanced subsets for quick runs


def test_limit_caps_every_split(landmark_data):
    loaders = loaders_for_test(limit=5)
    for split in ("train", "valid", "test"):
        assert 0 < len(loaders[split].dataset) <= 5, split


def test_limit_keeps_every_class_represented(landmark_data):
    loaders = loaders_for_test(limit=N_CLASSES)
    for split in ("train", "valid", "test"):
        assert sorted(labels_of(loaders[split].dataset)) == list(range(N_CLASSES)), split


def test_no_limit_gives_the_full_splits(landmark_data):
    loaders = loaders_for_test(limit=-1)
    assert len(loaders["train"].dataset) + len(loaders["valid"].dataset) == N_TRAIN_IMAGES
    assert len(loaders["test"].dataset) == N_TEST_IMAGES


# ----------------------------------------------------------------------------------------------------------------------
# Order and workers


def test_train_loader_shuffles_reproducibly_for_a_seed(landmark_data):
    first = next(iter(loaders_for_test(batch_size=N_TRAIN_IMAGES, seed=7)["train"]))[1]
    second = next(iter(loaders_for_test(batch_size=N_TRAIN_IMAGES, seed=7)["train"]))[1]
    assert first.tolist() == second.tolist()
    in_file_order = labels_of(loaders_for_test(seed=7)["train"].dataset)
    assert sorted(first.tolist()) == sorted(in_file_order)  # one batch holds the whole split
    assert first.tolist() != in_file_order  # shuffled (files are listed class by class)


def test_train_loader_reshuffles_every_epoch(landmark_data):
    train = loaders_for_test(batch_size=N_TRAIN_IMAGES)["train"]
    epoch_1 = torch.cat([labels for _, labels in train]).tolist()
    epoch_2 = torch.cat([labels for _, labels in train]).tolist()
    assert sorted(epoch_1) == sorted(epoch_2)
    assert epoch_1 != epoch_2


@pytest.mark.parametrize("split", ["valid", "test"])
def test_valid_and_test_loaders_are_not_shuffled(landmark_data, split):
    loader = loaders_for_test()[split]
    assert isinstance(loader.sampler, SequentialSampler)
    seen = torch.cat([labels for _, labels in loader]).tolist()
    assert seen == labels_of(loader.dataset)


def test_train_loader_drops_a_last_partial_batch(landmark_data):
    """A final batch of 1 image would break BatchNorm in training mode."""
    train = loaders_for_test(batch_size=4)["train"]
    n_train = len(train.dataset)
    assert [len(labels) for _, labels in train] == [4] * (n_train // 4)


def test_num_workers_minus_one_uses_every_usable_core(landmark_data):
    loaders = get_data_loaders(batch_size=4, num_workers=-1)
    for split in ("train", "valid", "test"):
        assert loaders[split].num_workers == len(os.sched_getaffinity(0)), split
        assert loaders[split].persistent_workers is True, split


def test_no_workers_means_no_persistent_workers(landmark_data):
    assert loaders_for_test()["train"].persistent_workers is False


def test_worker_processes_load_batches(landmark_data):
    loaders = get_data_loaders(batch_size=4, num_workers=2)
    assert loaders["train"].num_workers == 2
    images, labels = next(iter(loaders["train"]))
    assert images.shape == (4, 3, 224, 224)
    assert labels.shape == (4,)


# ----------------------------------------------------------------------------------------------------------------------
# Transforms


MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.15)


@pytest.mark.parametrize("width, height", [(800, 600), (600, 800), (50, 50)], ids=["landscape", "portrait", "tiny"])
@pytest.mark.parametrize("kind", ["train", "eval"])
def test_landmark_transforms_give_224_squares_from_any_photo_size(kind, width, height):
    torch.manual_seed(0)
    out = get_transforms("landmarks", MEAN, STD)[kind](image(width, height))
    assert out.shape == (3, 224, 224)
    assert out.dtype == torch.float32


def test_landmark_train_transform_augments():
    torch.manual_seed(0)
    train = get_transforms("landmarks", MEAN, STD)["train"]
    photo = image(300, 200)
    assert not torch.equal(train(photo), train(photo))


def test_landmark_eval_transform_is_deterministic():
    evaluation = get_transforms("landmarks", MEAN, STD)["eval"]
    photo = image(300, 200)
    assert torch.equal(evaluation(photo), evaluation(photo))


def test_landmark_eval_transform_is_a_center_crop():
    """A 768x256 photo striped red | green | blue: the 224 px centre crop is all green."""
    photo = Image.new("RGB", (768, 256))
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        photo.paste(colour, (256 * i, 0, 256 * (i + 1), 256))
    out = get_transforms("landmarks", (0, 0, 0), (1, 1, 1))["eval"](photo)
    assert out.shape == (3, 224, 224)
    expected = torch.tensor([0.0, 1.0, 0.0])[:, None, None].expand(3, 224, 224)
    torch.testing.assert_close(out, expected)


def test_image_size_overrides_the_preset_size():
    for kind in ("train", "eval"):
        assert get_transforms("landmarks", MEAN, STD, image_size=64)[kind](image(300, 200)).shape == (3, 64, 64)


def train_steps(recipe: AugmentationRecipe | None = None) -> dict[type, v2.Transform]:
    """The landmark train transform's steps, by type."""
    return {type(step): step for step in get_transforms("landmarks", MEAN, STD, recipe=recipe)["train"].transforms}


def test_the_landmark_train_transform_is_built_from_the_augmentation_recipe(monkeypatch):
    steps = train_steps()  # the default recipe: what the notebook teaches
    assert (steps[v2.RandomResizedCrop].scale, steps[v2.RandomHorizontalFlip].p) == ((0.25, 1.0), 0.5)
    assert steps[v2.TrivialAugmentWide].num_magnitude_bins == 31
    recipe = AugmentationRecipe(crop_scale=(0.5, 0.6), crop_ratio=(1.0, 1.2), flip_p=0.0, trivial_augment=False)
    for steps in (train_steps(recipe), None):
        if steps is None:  # a changed module-level recipe is the new default
            monkeypatch.setattr(presets, "LANDMARK_AUGMENTATION", recipe)
            steps = train_steps()
        crop = steps[v2.RandomResizedCrop]
        assert (crop.scale, crop.ratio, steps[v2.RandomHorizontalFlip].p) == ((0.5, 0.6), (1.0, 1.2), 0.0)
        assert v2.TrivialAugmentWide not in steps


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_fashion_mnist_transforms_give_3_identical_28x28_channels(kind):
    torch.manual_seed(0)
    out = get_transforms("fashion-mnist", [0.3] * 3, [0.35] * 3)[kind](image(28, 28, mode="L"))
    assert out.shape == (3, 28, 28)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


@pytest.mark.parametrize("dataset", ["landmarks", "fashion-mnist"])
def test_eval_transform_normalizes_with_the_given_mean_and_std(dataset):
    rgb = (51, 102, 153)
    out = get_transforms(dataset, MEAN, STD)["eval"](Image.new("RGB", (300, 300), rgb))
    expected = (torch.tensor(rgb) / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(out, expected[:, None, None].expand_as(out), atol=1e-5, rtol=0)


def test_loaders_normalize_with_the_training_images_statistics_by_default(landmark_data):
    stats = dataset_stats(landmark_data)
    loaders = loaders_for_test()
    for split in ("train", "valid", "test"):
        mean, std = get_normalization(loaders[split])
        torch.testing.assert_close(mean, torch.tensor(stats["mean"]), check_dtype=False)
        torch.testing.assert_close(std, torch.tensor(stats["std"]), check_dtype=False)


def test_normalization_argument_reaches_every_loader(landmark_data):
    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    loaders = loaders_for_test(normalization=imagenet)
    for split in ("train", "valid", "test"):
        mean, std = get_normalization(loaders[split])
        torch.testing.assert_close(mean, torch.tensor(imagenet[0]), check_dtype=False)
        torch.testing.assert_close(std, torch.tensor(imagenet[1]), check_dtype=False)


def test_valid_and_test_images_are_not_augmented(landmark_data):
    loaders = loaders_for_test()
    for split in ("valid", "test"):
        dataset = loaders[split].dataset
        assert torch.equal(dataset[0][0], dataset[0][0]), split


def test_unknown_dataset_name_lists_the_valid_choices(landmark_data):
    with pytest.raises(ValueError, match=r"'cifar10'.*landmarks.*fashion-mnist"):
        get_transforms("cifar10", MEAN, STD)
    with pytest.raises(ValueError, match=r"'cifar10'.*landmarks.*fashion-mnist"):
        loaders_for_test(dataset="cifar10")


def test_denormalize_inverts_normalize():
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    images = torch.rand(2, 3, 8, 8)
    normalized = v2.Normalize(list(MEAN), list(STD))(images)
    torch.testing.assert_close(denormalize(normalized, mean, std), images, atol=1e-6, rtol=0)
    torch.testing.assert_close(denormalize(normalized[0], mean, std), images[0], atol=1e-6, rtol=0)  # one image


def test_denormalize_clips_to_the_displayable_range():
    out = denormalize(torch.tensor([-10.0, 0.0, 10.0])[:, None, None], torch.tensor(MEAN), torch.tensor(STD))
    assert out.min() >= 0 and out.max() <= 1


# ----------------------------------------------------------------------------------------------------------------------
# Reading the image files


def test_exif_rotated_photo_loads_upright(landmark_data):
    train_images = base_dataset(loaders_for_test()["train"].dataset)
    [path] = [path for path, _ in train_images.samples if Path(path).name == "exif_rotated.jpg"]
    assert train_images.loader.func is load_rgb_image
    assert train_images.loader(path).size == (40, 80)  # stored 80 wide x 40 high, EXIF says rotate 90 degrees


def test_every_image_of_every_split_becomes_a_finite_224_tensor(landmark_data):
    """The synthetic files are RGB, grayscale, RGBA, palette and CMYK JPEG/PNG, plus a 16-bit PNG and an EXIF JPEG."""
    modes = {Image.open(path).mode for path in (landmark_data / "train").rglob("*") if path.is_file()}
    assert {"RGB", "L", "RGBA", "P", "CMYK", "I;16"} <= modes
    loaders = loaders_for_test()
    for split in ("train", "valid", "test"):
        for image_tensor, label in loaders[split].dataset:
            assert image_tensor.shape == (3, 224, 224), split
            assert torch.isfinite(image_tensor).all(), split
            assert 0 <= label < N_CLASSES


# ----------------------------------------------------------------------------------------------------------------------
# Class names and the batch preview


def test_class_names_are_readable_and_in_label_order(landmark_data):
    loaders = loaders_for_test()
    assert get_class_names(loaders) == CLASS_NAMES
    assert base_dataset(loaders["train"].dataset).class_to_idx["00.Synthetic_Landmark_A"] == 0


def test_visualize_one_batch_shows_max_n_images_titled_with_their_class(landmark_data):
    names = get_class_names(loaders_for_test())
    _, labels = next(iter(loaders_for_test()["train"]))  # the same first batch, thanks to the seeded shuffle
    fig = visualize_one_batch(loaders_for_test(), max_n=3)
    try:
        assert isinstance(fig, plt.Figure)
        assert len(fig.axes) == 3
        assert [ax.get_title() for ax in fig.axes] == [names[label] for label in labels[:3]]
        for ax in fig.axes:
            [shown] = ax.get_images()
            pixels = np.asarray(shown.get_array())
            assert pixels.shape == (224, 224, 3)
            assert pixels.min() >= 0 and pixels.max() <= 1  # denormalized for display
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------------
# Bad data


def first_class(root: Path, split: str = "train") -> Path:
    return sorted((root / split).iterdir())[0]


def test_non_image_files_are_reported_in_one_warning_and_ignored(writable_landmark_data):
    root = writable_landmark_data
    (first_class(root, "train") / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (first_class(root, "test") / "README.md").write_text("# notes\n")
    with pytest.warns(UserWarning) as caught:
        loaders = loaders_for_test()
    about_non_images = [str(w.message) for w in caught if "non-image" in str(w.message)]
    assert len(about_non_images) == 1
    assert ".DS_Store" in about_non_images[0] and "README.md" in about_non_images[0]
    assert len(loaders["train"].dataset) + len(loaders["valid"].dataset) == N_TRAIN_IMAGES
    assert len(loaders["test"].dataset) == N_TEST_IMAGES
    images, _ = next(iter(loaders["train"]))
    assert images.shape == (4, 3, 224, 224)


def test_unreadable_images_are_reported_and_left_out(writable_landmark_data):
    root = writable_landmark_data
    folder = first_class(root, "train")
    a_jpeg = next(p for p in sorted(folder.glob("*.jpg")) if p.name != "exif_rotated.jpg")
    (folder / "truncated.jpg").write_bytes(a_jpeg.read_bytes()[:200])
    (folder / "fake.jpg").write_text("this is not a JPEG")
    with pytest.warns(UserWarning, match="unreadable") as caught:
        loaders = get_data_loaders(batch_size=4, num_workers=2)
    message = " ".join(str(w.message) for w in caught if "unreadable" in str(w.message))
    assert "truncated.jpg" in message and "fake.jpg" in message
    samples = {Path(path).name for path, _ in base_dataset(loaders["train"].dataset).samples}
    assert "truncated.jpg" not in samples and "fake.jpg" not in samples
    assert len(samples) == N_TRAIN_IMAGES
    n_batches = sum(1 for _ in loaders["train"])  # every remaining image decodes, in worker processes too
    assert n_batches == len(loaders["train"].dataset) // 4


def test_an_empty_class_folder_is_an_error_naming_it(writable_landmark_data):
    root = writable_landmark_data
    for split in ("train", "test"):
        (root / split / "03.Empty_Landmark").mkdir()
    with pytest.raises(DataError, match=re.escape(str(root / "train" / "03.Empty_Landmark"))):
        loaders_for_test()


def test_a_class_whose_images_are_all_unreadable_counts_as_empty(writable_landmark_data):
    root = writable_landmark_data
    for split in ("train", "test"):
        (root / split / "03.Broken_Landmark").mkdir()
        (root / split / "03.Broken_Landmark" / "fake.jpg").write_text("not an image")
    with pytest.warns(UserWarning, match="unreadable"), pytest.raises(DataError, match="03.Broken_Landmark"):
        loaders_for_test()


def test_train_and_test_with_different_class_folders_is_an_error_naming_both_sides(writable_landmark_data):
    root = writable_landmark_data
    (root / "test" / "02.Synthetic_Landmark_C").rename(root / "test" / "02.Other_Landmark")
    with pytest.raises(DataError, match="same class folders") as error:
        loaders_for_test()
    assert "02.Synthetic_Landmark_C" in str(error.value)  # only in train
    assert "02.Other_Landmark" in str(error.value)  # only in test


def test_class_folders_may_be_symlinks(synthetic_root, tmp_path, monkeypatch):
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        for folder in sorted((synthetic_root / split).iterdir()):
            (tmp_path / split / folder.name).symlink_to(folder, target_is_directory=True)
    monkeypatch.setenv("LANDMARK_DATA", str(tmp_path))
    loaders = loaders_for_test()
    assert len(loaders["train"].dataset) + len(loaders["valid"].dataset) == N_TRAIN_IMAGES
    assert dataset_stats(tmp_path)["n_pixels"] == dataset_stats(synthetic_root)["n_pixels"]


def test_symlink_loops_and_broken_links_are_skipped_with_one_warning_and_images_counted_once(writable_landmark_data):
    root = writable_landmark_data
    folder = first_class(root, "train")
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # os.walk(followlinks=True) would repeat it
    (folder / "up").symlink_to(root / "train", target_is_directory=True)  # would bring in the other classes
    (folder / "self.jpg").symlink_to(folder / "self.jpg")  # stat() raises "Too many levels of symbolic links"
    (folder / "dangling.jpg").symlink_to(folder / "deleted.jpg")
    (root / "train" / "03.Self_Link").symlink_to(root / "train" / "03.Self_Link")  # a class folder linking to itself
    (root / "test" / "04.File_Link").symlink_to(next(folder.glob("*.jpg")))  # a "class folder" that is a file
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaders = loaders_for_test()
    about_links = [str(w.message) for w in caught if "loop, dangle" in str(w.message)]
    assert len(about_links) == 1, [str(w.message) for w in caught]
    for name in ("loop", "up", "self.jpg", "dangling.jpg", "03.Self_Link"):
        assert name in about_links[0], name
    assert "\n" not in about_links[0]
    train = base_dataset(loaders["train"].dataset)
    assert len(train.samples) == N_TRAIN_IMAGES and len({path for path, _ in train.samples}) == N_TRAIN_IMAGES
    assert train.classes == [p.name for p in sorted((root / "test").iterdir()) if p.is_dir()]
    assert len(loaders["test"].dataset) == N_TEST_IMAGES
    assert sum(len(labels) for _, labels in loaders["train"]) > 0  # every listed image loads


def test_the_loader_statistics_and_checks_list_the_same_files(writable_landmark_data):
    from src.helpers import dataset_files

    folder = first_class(writable_landmark_data, "train")
    (folder / "sub").mkdir()
    (folder / "sub" / "nested.png").write_bytes((next(folder.glob("*.png"))).read_bytes())
    (writable_landmark_data / "train" / "stray.jpg").write_bytes(b"outside any class: not loaded, not measured")
    loaders = loaders_for_test()
    loaded = [Path(path) for split in ("train", "test") for path, _ in base_dataset(loaders[split].dataset).samples]
    assert loaded == dataset_files(writable_landmark_data)  # what the statistics measure, in the same order
    assert folder / "sub" / "nested.png" in loaded
    assert dataset_stats(writable_landmark_data)["unreadable"] == {}


# ----------------------------------------------------------------------------------------------------------------------
# Summary


def test_dataset_summary_gives_the_class_count_and_split_sizes(landmark_data):
    summary = dataset_summary("landmarks")
    assert re.search(rf"\b{N_CLASSES}\b.*Synthetic Landmark A", summary)
    n_train = N_TRAIN_IMAGES - N_VALID
    for count, split in ((n_train, "train"), (N_VALID, "valid"), (N_TEST_IMAGES, "test")):
        assert re.search(rf"\b{count} {split}\b", summary), (split, summary)


# ----------------------------------------------------------------------------------------------------------------------
# Real landmark photos (only where the team's samples are present)


@requires_samples
def test_real_photos_become_224_batches_with_a_readable_class_name(tmp_path, monkeypatch):
    name = "00.Haleakala_National_Park"
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        source = SAMPLES / split / name if (SAMPLES / split / name).is_dir() else SAMPLES / "train" / name
        (tmp_path / split / name).symlink_to(source, target_is_directory=True)
    monkeypatch.setenv("LANDMARK_DATA", str(tmp_path))
    loaders = get_data_loaders(batch_size=8, num_workers=0, limit=16)
    images, labels = next(iter(loaders["train"]))
    assert images.shape == (8, 3, 224, 224)
    assert torch.isfinite(images).all()
    assert get_class_names(loaders) == ["Haleakalā National Park"]


@requires_samples
def test_every_real_photo_loads_as_rgb_of_at_least_100_px():
    photos = sorted(p for p in SAMPLES.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    assert len(photos) >= 100
    for path in photos:
        photo = load_rgb_image(path)
        assert photo.mode == "RGB", path
        assert min(photo.size) >= 100, (path, photo.size)


def test_train_augment_false_gives_the_training_images_the_deterministic_eval_transform(landmark_data):
    loaders = get_data_loaders(batch_size=4, num_workers=0, train_augment=False)
    train = loaders["train"].dataset
    first, again = train[0][0], train[0][0]
    assert torch.equal(first, again) and first.shape == (3, 224, 224)


# ----------------------------------------------------------------------------------------------------------------------
# setup_env


def test_setup_env_seeds_everything_and_returns_a_device(landmark_data):
    device = setup_env(seed=7)
    first = (torch.rand(3), np.random.rand(), __import__("random").random())
    setup_env(seed=7)
    second = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert isinstance(device, torch.device)
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]
    assert CHECKPOINTS_DIR.is_dir()


def test_setup_env_does_not_download_over_an_explicit_LANDMARK_DATA(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDMARK_DATA", str(tmp_path / "missing"))
    monkeypatch.setattr(download, "download_and_extract", lambda *a, **k: pytest.fail("must not download"))
    with pytest.raises(DataError, match="LANDMARK_DATA"):
        setup_env()
