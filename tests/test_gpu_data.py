"""Specification of src/gpu_data.py, the GPU fast path: on CPU tensors everywhere, and on a CUDA GPU where there is one
(the `device` fixture)."""

import pytest
import torch

import src.gpu_data as gpu_data
from src import presets
from src.data import denormalize, get_data_loaders, get_normalization
from src.gpu_data import DeviceLoader, cache_side, device_loaders, fastest_loaders
from src.model import MyModel
from src.optimization import get_loss, get_optimizer
from src.presets import AugmentationRecipe, eval_resize_size
from src.train import run_epoch

CPU = torch.device("cpu")


@pytest.fixture
def loaders(landmark_data):
    return get_data_loaders(batch_size=8, num_workers=0)


@pytest.fixture
def fast(loaders, device):
    return device_loaders(loaders, device, num_workers=0)


def test_eval_batches_equal_the_standard_loaders_batches(loaders, fast, device):
    for split in ("valid", "test"):
        assert len(fast[split]) == len(loaders[split])
        for (standard, labels), (cached, cached_labels) in zip(loaders[split], fast[split]):
            assert cached.device.type == cached_labels.device.type == device.type
            assert torch.equal(labels, cached_labels.cpu())
            assert (standard - cached.cpu()).abs().max() < 1e-5


def test_train_batches_are_augmented_normalized_and_cover_the_split_once_per_epoch(loaders, fast, device):
    batches = list(fast["train"])
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert images.device.type == labels.device.type == device.type
    assert len(batches) == len(loaders["train"]) and images.shape[1:] == (3, 224, 224)
    assert torch.isfinite(images).all() and -3 < images.mean() < 3
    all_labels = sorted(fast["train"].cache.labels.tolist())
    assert len(labels) == len(all_labels) - len(all_labels) % 8  # drop_last, like the standard train loader
    second_epoch = next(iter(fast["train"]))[0]
    assert not torch.equal(batches[0][0], second_epoch), "a new shuffle and new augmentations each epoch"


def test_the_device_loaders_keep_the_original_datasets_for_names_and_normalization(loaders, fast):
    assert fast["test"].dataset is loaders["test"].dataset


def test_a_model_learns_from_the_fast_path_as_it_does_from_the_standard_loaders(landmark_data, device):
    """On CUDA run_epoch trains in bf16 autocast (src.train._autocast): it must learn as well."""
    accuracy = {}
    for path in ("standard", "fast"):
        loaders = get_data_loaders(batch_size=8, num_workers=0, image_size=32)
        if path == "fast":
            loaders = device_loaders(loaders, device, image_size=32, num_workers=0)
        torch.manual_seed(0)
        model = MyModel(num_classes=3, dropout=0.0, stem_stride=1, widths=(16, 32), blocks_per_stage=(1, 1))
        optimizer = get_optimizer(model.to(device), "Adam", 3e-3)
        for _ in range(15):
            run_epoch(loaders["train"], model, get_loss(), optimizer, device)
        accuracy[path] = run_epoch(loaders["valid"], model, get_loss(), device=device)[1]
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


@pytest.mark.cuda
def test_on_a_gpu_the_cache_is_built_when_it_fits_and_skipped_when_the_gpu_memory_is_taken(loaders, capsys):
    """The real free memory (torch.cuda.mem_get_info), not a stand-in: another tensor holding all but 1.5 caches'
    worth of the GPU leaves too little for the cache and the model."""
    cuda = torch.device("cuda")
    chosen = fastest_loaders(loaders, cuda)
    assert isinstance(chosen["train"], DeviceLoader) and chosen["train"].cache.images.is_cuda
    del chosen
    side = cache_side(eval_resize_size("landmarks", 224))
    cache_bytes = sum(len(loader.dataset) for loader in loaders.values()) * 3 * side * side
    free, _ = torch.cuda.mem_get_info(cuda)
    taken = torch.empty(free - int(1.5 * cache_bytes), dtype=torch.uint8, device=cuda)
    try:
        assert fastest_loaders(loaders, cuda) is loaders
        assert "GPU fast path skipped: its image cache would need" in capsys.readouterr().out
    finally:
        del taken
        torch.cuda.empty_cache()


@pytest.fixture
def fixed_recipe(monkeypatch):
    """A deterministic recipe in src.data: always the whole central square of a photo, always mirrored."""
    recipe = AugmentationRecipe(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=1.0, trivial_augment=False)
    monkeypatch.setattr(presets, "LANDMARK_AUGMENTATION", recipe)
    return recipe


def test_a_changed_recipe_changes_both_the_standard_and_the_fast_path(landmark_data, fixed_recipe, device):
    loaders = get_data_loaders(batch_size=8, num_workers=0, image_size=64)
    fast = device_loaders(loaders, device, image_size=64, num_workers=0)
    assert fast["train"].recipe is fixed_recipe
    subset = loaders["train"].dataset
    standard = torch.stack([subset[i][0] for i in range(len(subset))])  # in the cache's order
    again = torch.stack([subset[i][0] for i in range(len(subset))])
    assert (standard - again).abs().mean() < 0.02, "nothing random is left but a pixel of rounding"
    for images, labels in fast["train"]:  # shuffled: find each image's standard twin
        images, labels = images.cpu(), labels.cpu()
        distance = (images[:, None] - standard[None]).abs().mean(dim=(2, 3, 4))  # [batch, N]
        nearest = distance.argmin(dim=1)
        assert torch.equal(fast["train"].cache.labels.cpu()[nearest], labels)
        # two resamplings of the same mirrored square (a pixel apart at worst); other images are ~1.0 away
        assert (distance.min(dim=1).values < 0.3).all()
        mirrored = (images.flip(-1) - standard[nearest]).abs().mean(dim=(1, 2, 3))
        assert (mirrored > 2 * distance.min(dim=1).values).all(), "both paths mirror every image"


def test_the_fast_paths_augmented_images_have_the_standard_paths_statistics(landmark_data, device):
    """Mean brightness per image and its spread over ~600 augmented images of each path, with the default recipe.

    TrivialAugmentWide's solarize, equalize and brightness ops make the spread heavy-tailed: a few hundred images
    estimate it to about 10%. Without TrivialAugmentWide on one path the spreads differ twofold."""
    torch.manual_seed(0)
    loaders = get_data_loaders(batch_size=8, num_workers=0, image_size=32)
    fast = device_loaders(loaders, device, image_size=32, num_workers=0)["train"]
    mean, std = get_normalization(loaders["train"])
    subset = loaders["train"].dataset
    cached = torch.cat([images.cpu() for _ in range(600 // (len(fast) * fast.batch_size) + 1) for images, _ in fast])
    standard = torch.stack([subset[i % len(subset)][0] for i in range(len(cached))])  # each photo as often
    brightness = {path: denormalize(images, mean, std).mean(dim=(1, 2, 3)) for path, images in
                  (("standard", standard), ("fast", cached))}  # fmt: skip
    assert abs(brightness["standard"].mean() - brightness["fast"].mean()) < 0.03, brightness
    assert 0.85 < brightness["standard"].std() / brightness["fast"].std() < 1.18
