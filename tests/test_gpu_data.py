"""Specification of src/gpu_data.py, the GPU fast path, run here on CPU tensors (the same code runs on CUDA)."""

import pytest
import torch

import src.gpu_data as gpu_data
from src.data import get_data_loaders
from src.model import MyModel
from src.optimization import get_loss, get_optimizer
from src.train import run_epoch
from src.gpu_data import (
    CROP_SCALE,
    center_crop_boxes,
    colour_jitter,
    crop_and_resize,
    device_loaders,
    fastest_loaders,
    random_crop_boxes,
    random_flip,
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
    boxes = random_crop_boxes(sizes, torch.Generator().manual_seed(0))
    heights, widths = sizes[:, 0].float(), sizes[:, 1].float()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= widths + 1e-4).all() and (boxes[:, 3] <= heights + 1e-4).all()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (heights * widths)
    assert area.max() <= CROP_SCALE[1] + 1e-4 and area.min() >= 0.15  # clipping at the edges can only shrink a bit


def test_an_exact_size_crop_returns_the_pixels_unchanged():
    images = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8)
    boxes = center_crop_boxes(torch.tensor([[40, 50], [40, 50]]), 32)
    crops = crop_and_resize(images, boxes, 32)
    assert torch.allclose(crops * 255, images[:, :, 4:36, 9:41].float(), atol=1e-3)


def test_random_flip_mirrors_about_half_of_a_batch():
    images = torch.rand(400, 3, 4, 4)
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    mirrored = (flipped == images.flip(-1)).flatten(1).all(dim=1)
    assert 150 < mirrored.sum() < 250


def test_colour_jitter_stays_in_range_and_zero_strength_changes_nothing():
    images = torch.rand(8, 3, 16, 16)
    assert torch.allclose(colour_jitter(images, strength=0.0), images, atol=1e-6)
    jittered = colour_jitter(images, strength=0.4, generator=torch.Generator().manual_seed(0))
    assert jittered.min() >= 0 and jittered.max() <= 1 and not torch.allclose(jittered, images)
