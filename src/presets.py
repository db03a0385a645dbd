"""Transform presets: the one place that says how images become tensors, and how training photos are augmented.

    get_transforms("landmarks", mean, std)   # {"train": augmenting transform, "eval": resize + centre crop}
    LANDMARK_AUGMENTATION                    # the augmentation recipe; src/augment.py does the same on the GPU

Sizes: the network sees LANDMARK_IMAGE_SIZE crops of photos whose shorter side was resized to LANDMARK_RESIZE_SIZE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torchvision.transforms import v2

from src.checks import check_int

DATASETS = ("landmarks", "fashion-mnist")
LANDMARK_IMAGE_SIZE = 224  # the crop the network sees
LANDMARK_RESIZE_SIZE = 256  # shorter side before cropping: the usual 256 -> 224 ImageNet recipe
# Larger crops are refused: the photos are about 800 x 600, and memory grows with the square of the side (one
# 100,000 px crop would take 120 GB as float32).
MAX_IMAGE_SIZE = 1024
FASHION_MNIST_IMAGE_SIZE = 28


@dataclass(frozen=True)
class AugmentationRecipe:
    """How a training photo is augmented, in this order: crop, flip, one photometric/geometric op.

    The one definition both training pipelines read: get_transforms builds the standard (PIL, CPU) transform from
    it and src.gpu_data does the same operations batched on the GPU, so a change here changes both.
    """

    # Crops of 25-100% of the photo: the landmark must stay recognisable, so not the ImageNet default of 8%.
    crop_scale: tuple[float, float] = (0.25, 1.0)  # fraction of the resized photo's area the crop keeps
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # width/height of the crop, drawn log-uniformly
    flip_p: float = 0.5  # probability of a left-right mirror
    # TrivialAugmentWide: one random op (brightness, contrast, rotation, shear, ...) of random strength per image:
    # strong, and nothing to tune. Kept rather than a simpler colour jitter because both pipelines can do it exactly
    # (src.gpu_data applies it to whole batches, grouped by op); False leaves the colours and geometry alone.
    trivial_augment: bool = True
    magnitude_bins: int = 31  # strengths TrivialAugmentWide chooses from (torchvision's default)


LANDMARK_AUGMENTATION = AugmentationRecipe()


def augmentation_recipe(recipe: AugmentationRecipe | None = None) -> AugmentationRecipe:
    """recipe, or LANDMARK_AUGMENTATION when None (looked up at call time, so a changed module value counts)."""
    return LANDMARK_AUGMENTATION if recipe is None else recipe


def get_transforms(
    dataset: str,
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int | None = None,
    recipe: AugmentationRecipe | None = None,
) -> dict[str, v2.Compose]:
    """{"train": augmenting transform, "eval": deterministic transform}; both map a PIL image to a float [3,S,S].

    image_size overrides the preset's size S (224 for landmarks, 28 for Fashion-MNIST); recipe overrides
    LANDMARK_AUGMENTATION for landmarks.
    """
    check_dataset_name(dataset)
    check_image_size(image_size)
    if dataset == "landmarks":
        size = LANDMARK_IMAGE_SIZE if image_size is None else image_size
        resize = eval_resize_size(dataset, size)
        recipe = augmentation_recipe(recipe)
        train = [
            v2.Resize(resize),
            v2.RandomResizedCrop(size, scale=recipe.crop_scale, ratio=recipe.crop_ratio),
            v2.RandomHorizontalFlip(p=recipe.flip_p),
        ]
        if recipe.trivial_augment:
            train.append(v2.TrivialAugmentWide(num_magnitude_bins=recipe.magnitude_bins))
        evaluation = [v2.Resize(resize), v2.CenterCrop(size)]
    else:
        size = FASHION_MNIST_IMAGE_SIZE if image_size is None else image_size
        # Small shifts and left-right flips; no colour ops, the images are grayscale.
        train = [v2.Resize(size), v2.RandomCrop(size, padding=size // 7), v2.RandomHorizontalFlip()]
        evaluation = [v2.Resize(size)]
    to_tensor = [v2.ToImage(), v2.RGB(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return {"train": v2.Compose(train + to_tensor), "eval": v2.Compose(evaluation + to_tensor)}


def eval_resize_size(dataset: str, image_size: int) -> int:
    """The shorter side the eval transform resizes to before its central image_size crop (256 for 224 photos)."""
    return round(image_size * LANDMARK_RESIZE_SIZE / LANDMARK_IMAGE_SIZE) if dataset == "landmarks" else image_size


def check_dataset_name(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}.")


def check_image_size(image_size: int | None) -> None:
    """None (the preset's size) or a side of 1 to MAX_IMAGE_SIZE px."""
    if image_size is not None:
        check_int(image_size, 1, "image_size", maximum=MAX_IMAGE_SIZE)
