"""Specification of src/augment.py: the training augmentation done for a whole batch at once, checked against
torchvision's per-image transforms (crop, flip, each TrivialAugmentWide op)."""

import pytest
import torch
from torchvision.transforms import v2

from src.augment import (
    TRIVIAL_AUGMENT_OPS,
    apply_trivial_augment_ops,
    augment,
    center_crop,
    center_crop_boxes,
    crop_and_resize,
    random_crop_boxes,
    random_flip,
    trivial_augment,
)
from src.presets import LANDMARK_AUGMENTATION, AugmentationRecipe, get_transforms


def crop_fractions(recipe: AugmentationRecipe, n: int = 600) -> dict[str, torch.Tensor]:
    """The fraction of a 341x256 photo's area kept by n crops of each path's RandomResizedCrop."""
    torch.manual_seed(0)
    steps = get_transforms("landmarks", (0, 0, 0), (1, 1, 1), recipe=recipe)["train"].transforms
    crop = next(step for step in steps if isinstance(step, v2.RandomResizedCrop))
    photo = v2.functional.to_pil_image(torch.zeros(3, 256, 341, dtype=torch.uint8))
    standard = [crop.make_params([photo]) for _ in range(n)]
    boxes = random_crop_boxes(torch.tensor([[256, 341]]).repeat(n, 1), recipe, torch.Generator().manual_seed(0))
    return {
        "standard": torch.tensor([p["height"] * p["width"] / (256 * 341) for p in standard]),
        "fast": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (256 * 341),
    }


def test_random_crops_stay_inside_the_image_and_cover_the_configured_area():
    sizes = torch.tensor([[256, 341], [341, 256], [256, 256]]).repeat(200, 1)
    boxes = random_crop_boxes(sizes, LANDMARK_AUGMENTATION, torch.Generator().manual_seed(0))
    heights, widths = sizes[:, 0].float(), sizes[:, 1].float()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= widths).all() and (boxes[:, 3] <= heights).all()
    assert torch.equal(boxes, boxes.round()), "whole pixels, as RandomResizedCrop"
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (heights * widths)
    low, high = LANDMARK_AUGMENTATION.crop_scale
    assert area.max() <= high + 0.01 and area.min() >= low - 0.01  # rounding to pixels moves the area a little


@pytest.mark.parametrize("scale", [LANDMARK_AUGMENTATION.crop_scale, (0.05, 0.1)])
def test_both_paths_draw_crops_of_the_same_sizes(scale):
    fractions = crop_fractions(AugmentationRecipe(crop_scale=scale))
    quantiles = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    standard, fast = (torch.quantile(fractions[path], quantiles) for path in ("standard", "fast"))
    assert (standard - fast).abs().max() < 0.06 * scale[1], (standard, fast)
    assert fractions["fast"].min() >= scale[0] * 0.95 and fractions["fast"].max() <= scale[1] * 1.05


def test_an_exact_size_crop_returns_the_pixels_unchanged():
    images = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8)
    boxes = center_crop_boxes(torch.tensor([[40, 50], [40, 50]]), 32)
    crops = crop_and_resize(images, boxes, 32)
    assert torch.allclose(crops * 255, images[:, :, 4:36, 9:41].float(), atol=1e-3)


@pytest.mark.parametrize("p, low, high", [(0.5, 150, 250), (0.0, 0, 0), (1.0, 400, 400)])
def test_random_flip_mirrors_a_fraction_p_of_a_batch(p, low, high):
    images = torch.rand(400, 3, 4, 4)
    flipped = random_flip(images, p, torch.Generator().manual_seed(0))
    mirrored = (flipped == images.flip(-1)).flatten(1).all(dim=1)
    assert low <= mirrored.sum() <= high


@pytest.mark.parametrize("op", list(TRIVIAL_AUGMENT_OPS))
def test_each_batched_trivial_augment_op_matches_torchvisions(op):
    """Every op at several strengths, each image of the batch at its own, against torchvision's op on uint8 images."""
    torch.manual_seed(0)
    small = torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8)  # smooth images with edges, not noise
    images = torch.nn.functional.interpolate(small.float(), size=(30, 40), mode="bilinear").round().to(torch.uint8)
    magnitudes, signed = TRIVIAL_AUGMENT_OPS[op]
    table = magnitudes(31, 30, 40)
    levels = torch.tensor([0, 3, 10, 15, 20, 25, 30, 30])
    strength = torch.zeros(8) if table is None else table[levels].float() * (torch.tensor([1, -1] * 4) if signed else 1)
    index = torch.full((8,), list(TRIVIAL_AUGMENT_OPS).index(op))
    batched = apply_trivial_augment_ops(images.float() / 255, index, strength)
    transform = v2.TrivialAugmentWide()
    for image, magnitude, result in zip(images, strength.tolist(), batched):
        expected = transform._apply_image_or_video_transform(
            image, op, magnitude, interpolation=transform.interpolation, fill=transform._fill
        )
        # torchvision rounds to uint8 after each step, the batched ops stay in float: at most 2 levels apart
        torch.testing.assert_close(result, expected.float() / 255, atol=2.01 / 255, rtol=0)


def test_trivial_augment_changes_most_images_and_keeps_the_range():
    images = torch.rand(700, 3, 12, 12)
    out = trivial_augment(images, 31, torch.Generator().manual_seed(0))
    changed = (out - images).abs().flatten(1).amax(dim=1) > 1e-6
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    tiny = torch.rand(14, 3, 1, 1)  # 1x1 images (image_size=1 is allowed): every op must cope
    assert apply_trivial_augment_ops(tiny, torch.arange(14), torch.full((14,), 0.5)).shape == tiny.shape
    assert 0.80 < changed.float().mean() < 0.97  # Identity (1 op in 14) and zero strengths leave an image as it is


def test_augment_crops_flips_and_trivial_augments_as_its_recipe_says():
    images = torch.randint(0, 256, (6, 3, 40, 50), dtype=torch.uint8)
    sizes = torch.tensor([[40, 50]]).repeat(6, 1)
    whole_mirrored = AugmentationRecipe(crop_scale=(1.0, 1.0), crop_ratio=(1.25, 1.25), flip_p=1.0, trivial_augment=False)
    out = augment(images, sizes, 20, whole_mirrored, torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 20, 20) and out.dtype == torch.float32
    expected = crop_and_resize(images, torch.tensor([[0.0, 0.0, 50.0, 40.0]]).repeat(6, 1), 20).flip(-1)
    assert torch.allclose(out, expected)
    augmented = augment(images, sizes, 20, LANDMARK_AUGMENTATION, torch.Generator().manual_seed(0))
    assert 0 <= augmented.min() and augmented.max() <= 1 and not torch.allclose(augmented, out)


def test_center_crop_takes_the_middle():
    images = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8)
    crops = center_crop(images, torch.tensor([[40, 50], [40, 50]]), 32)
    assert torch.allclose(crops * 255, images[:, :, 4:36, 9:41].float(), atol=1e-3)
