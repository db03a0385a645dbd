"""Specification of src/gpu_data.py, the GPU fast path, run here on CPU tensors (the same code runs on CUDA)."""

import pytest
import torch
from torchvision.transforms import v2

import src.gpu_data as gpu_data
from src import data
from src.data import LANDMARK_AUGMENTATION, AugmentationRecipe, denormalize, get_data_loaders, get_normalization
from src.model import MyModel
from src.optimization import get_loss, get_optimizer
from src.train import run_epoch
from src.gpu_data import (
    TRIVIAL_AUGMENT_OPS,
    apply_trivial_augment_ops,
    center_crop_boxes,
    crop_and_resize,
    device_loaders,
    fastest_loaders,
    random_crop_boxes,
    random_flip,
    trivial_augment,
)

CPU = torch.device("cpu")


@pytest.fixture
def loaders(landmark_data):
    return get_data_loaders(batch_size=8, num_workers=0)


@pytest.fixture
def fast(loaders):
    return device_loaders(loaders, CPU, num_workers=0)


def test_eval_batches_equal_the_standard_loaders_batches(loaders, fast):
    for split in ("valid", "test"):
        assert len(fast[split]) == len(loaders[split])
        for (standard, labels), (cached, cached_labels) in zip(loaders[split], fast[split]):
            assert torch.equal(labels, cached_labels)
            assert (standard - cached).abs().max() < 1e-5


def test_train_batches_are_augmented_normalized_and_cover_the_split_once_per_epoch(loaders, fast):
    batches = list(fast["train"])
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert len(batches) == len(loaders["train"]) and images.shape[1:] == (3, 224, 224)
    assert torch.isfinite(images).all() and -3 < images.mean() < 3
    all_labels = sorted(fast["train"].cache.labels.tolist())
    assert len(labels) == len(all_labels) - len(all_labels) % 8  # drop_last, like the standard train loader
    second_epoch = next(iter(fast["train"]))[0]
    assert not torch.equal(batches[0][0], second_epoch), "a new shuffle and new augmentations each epoch"


def test_the_device_loaders_keep_the_original_datasets_for_names_and_normalization(loaders, fast):
    assert fast["test"].dataset is loaders["test"].dataset


def test_a_model_learns_from_the_fast_path_as_it_does_from_the_standard_loaders(landmark_data):
    accuracy = {}
    for path in ("standard", "fast"):
        loaders = get_data_loaders(batch_size=8, num_workers=0, image_size=32)
        if path == "fast":
            loaders = device_loaders(loaders, CPU, image_size=32, num_workers=0)
        torch.manual_seed(0)
        model = MyModel(num_classes=3, dropout=0.0, stem_stride=1, widths=(16, 32), blocks_per_stage=(1, 1))
        optimizer = get_optimizer(model, "Adam", 3e-3)
        for _ in range(15):
            run_epoch(loaders["train"], model, get_loss(), optimizer, CPU)
        accuracy[path] = run_epoch(loaders["valid"], model, get_loss(), device=CPU)[1]
    assert accuracy["fast"] > 0.6 and accuracy["standard"] > 0.6, f"both well above the 1/3 of guessing: {accuracy}"


def test_the_fast_path_is_chosen_only_for_photos_on_a_cuda_gpu(loaders):
    assert fastest_loaders(loaders, CPU) is loaders
    fashion = {"train": torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(2, 1)))}
    assert fastest_loaders(fashion, torch.device("cuda")) is fashion  # not a photo folder: nothing to decode


@pytest.mark.parametrize("free_gb, fast", [(80.0, True), (0.001, False)])
def test_the_fast_path_is_skipped_with_a_message_when_its_cache_would_crowd_the_gpu(
    loaders, monkeypatch, capsys, free_gb, fast
):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (int(free_gb * 1e9), int(80e9)))
    monkeypatch.setattr(gpu_data, "device_loaders", lambda data_loaders, device, image_size: "device loaders")
    chosen = fastest_loaders(loaders, torch.device("cuda"))
    assert chosen == ("device loaders" if fast else loaders)
    assert ("GPU fast path skipped: its image cache would need" in capsys.readouterr().out) is not fast


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


def crop_fractions(recipe: AugmentationRecipe, n: int = 600) -> dict[str, torch.Tensor]:
    """The fraction of a 341x256 photo's area kept by n crops of each path's RandomResizedCrop."""
    torch.manual_seed(0)
    steps = data.get_transforms("landmarks", (0, 0, 0), (1, 1, 1), recipe=recipe)["train"].transforms
    crop = next(step for step in steps if isinstance(step, v2.RandomResizedCrop))
    photo = v2.functional.to_pil_image(torch.zeros(3, 256, 341, dtype=torch.uint8))
    standard = [crop.make_params([photo]) for _ in range(n)]
    boxes = random_crop_boxes(torch.tensor([[256, 341]]).repeat(n, 1), recipe, torch.Generator().manual_seed(0))
    return {
        "standard": torch.tensor([p["height"] * p["width"] / (256 * 341) for p in standard]),
        "fast": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (256 * 341),
    }


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


@pytest.fixture
def fixed_recipe(monkeypatch):
    """A deterministic recipe in src.data: always the whole central square of a photo, always mirrored."""
    recipe = AugmentationRecipe(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=1.0, trivial_augment=False)
    monkeypatch.setattr(data, "LANDMARK_AUGMENTATION", recipe)
    return recipe


def test_a_changed_recipe_changes_both_the_standard_and_the_fast_path(landmark_data, fixed_recipe):
    loaders = get_data_loaders(batch_size=8, num_workers=0, image_size=64)
    fast = device_loaders(loaders, CPU, image_size=64, num_workers=0)
    assert fast["train"].recipe is fixed_recipe
    subset = loaders["train"].dataset
    standard = torch.stack([subset[i][0] for i in range(len(subset))])  # in the cache's order
    again = torch.stack([subset[i][0] for i in range(len(subset))])
    assert (standard - again).abs().mean() < 0.02, "nothing random is left but a pixel of rounding"
    for images, labels in fast["train"]:  # shuffled: find each image's standard twin
        distance = (images[:, None] - standard[None]).abs().mean(dim=(2, 3, 4))  # [batch, N]
        nearest = distance.argmin(dim=1)
        assert torch.equal(fast["train"].cache.labels[nearest], labels)
        # two resamplings of the same mirrored square (a pixel apart at worst); other images are ~1.0 away
        assert (distance.min(dim=1).values < 0.3).all()
        mirrored = (images.flip(-1) - standard[nearest]).abs().mean(dim=(1, 2, 3))
        assert (mirrored > 2 * distance.min(dim=1).values).all(), "both paths mirror every image"


def test_the_fast_paths_augmented_images_have_the_standard_paths_statistics(landmark_data):
    """Mean brightness per image and its spread over ~600 augmented images of each path, with the default recipe.

    TrivialAugmentWide's solarize, equalize and brightness ops make the spread heavy-tailed: a few hundred images
    estimate it to about 10%. Without TrivialAugmentWide on one path the spreads differ twofold."""
    torch.manual_seed(0)
    loaders = get_data_loaders(batch_size=8, num_workers=0, image_size=32)
    fast = device_loaders(loaders, CPU, image_size=32, num_workers=0)["train"]
    mean, std = get_normalization(loaders["train"])
    subset = loaders["train"].dataset
    device = torch.cat([images for _ in range(600 // (len(fast) * fast.batch_size) + 1) for images, _ in fast])
    standard = torch.stack([subset[i % len(subset)][0] for i in range(len(device))])  # each photo as often
    brightness = {path: denormalize(images, mean, std).mean(dim=(1, 2, 3)) for path, images in
                  (("standard", standard), ("fast", device))}  # fmt: skip
    assert abs(brightness["standard"].mean() - brightness["fast"].mean()) < 0.03, brightness
    assert 0.85 < brightness["standard"].std() / brightness["fast"].std() < 1.18
