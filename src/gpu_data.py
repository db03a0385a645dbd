"""The fast path for GPUs: decode every image once into a uint8 cache on the device, then augment whole batches there
(src/augment.py: the recipe of src.presets.LANDMARK_AUGMENTATION, crop, flip, TrivialAugmentWide) and normalize them.
No JPEG decoding and no worker processes after the first pass.

    loaders = get_data_loaders(...)                      # the standard loaders (they define the splits)
    fast = device_loaders(loaders, torch.device("cuda"))  # same splits and labels, batches made on the GPU
    fast = fastest_loaders(loaders, device)               # the same on CUDA; the standard loaders elsewhere

On a 2,000-image epoch most of the standard loader's time goes into decoding JPEGs and starting workers; here an epoch
costs only the model's compute. The functions work on any device, so the CPU tests exercise the same code.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import ImageFolder

from src.augment import augment, center_crop
from src.data import base_dataset, get_normalization
from src.helpers import cpu_cores
from src.images import load_rgb_image
from src.presets import (
    LANDMARK_IMAGE_SIZE,
    LANDMARK_RESIZE_SIZE,
    AugmentationRecipe,
    augmentation_recipe,
    eval_resize_size,
)
from src.progress import tqdm


def cache_side(short_side: int) -> int:
    """Side of the square each cached image is padded into: 4/3 of short_side (the dataset's photos are 4:3)."""
    return math.ceil(short_side * 4 / 3)


class ImageCache:
    """N images resized to shorter side `short_side`, each padded into an S x S square of one uint8 tensor [N,3,S,S]
    on the device, S = cache_side(short_side).

    sizes[i] = (height, width) of image i inside its padding; labels [N] int64 on the device.
    """

    def __init__(self, images: torch.Tensor, sizes: torch.Tensor, labels: torch.Tensor):
        self.images, self.sizes, self.labels = images, sizes, labels

    def __len__(self) -> int:
        return len(self.labels)


class _ResizedImages(torch.utils.data.Dataset):
    """(uint8 [3,h,w] with shorter side short_side and longer side at most max_side, label) per ImageFolder sample."""

    def __init__(self, samples: list[tuple[str, int]], short_side: int, max_side: int):
        self.samples, self.short_side, self.max_side = samples, short_side, max_side

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = load_rgb_image(path, min_side=self.short_side)
        # the same arithmetic as torchvision's Resize(short_side): the longer side is truncated, not rounded
        short, long = sorted(image.size)
        long = int(self.short_side * long / short)
        size = (self.short_side, long) if image.width <= image.height else (long, self.short_side)
        pixels = torch.from_numpy(np.array(image.resize(size, Image.BILINEAR))).permute(2, 0, 1)
        height, width = pixels.shape[1:]  # cut a longer side to max_side around the centre
        top, left = max(0, (height - self.max_side) // 2), max(0, (width - self.max_side) // 2)
        return pixels[:, top : top + self.max_side, left : left + self.max_side].contiguous(), label


def build_cache(
    subset: Subset, device: torch.device, short_side: int = LANDMARK_RESIZE_SIZE, num_workers: int = -1
) -> ImageCache:
    """Decode the images of an ImageFolder subset once (in parallel) into an ImageCache on `device`.

    Images are resized like the standard path (PIL, shorter side to short_side); longer sides are cut to 4/3 of
    short_side around the centre (the dataset's photos are 4:3), so the cache is one dense padded uint8 tensor
    [N,3,341,341] for short_side 256: 1.7 GB for 5,000 photos.
    """
    folder = base_dataset(subset)
    indices = subset.indices if isinstance(subset, Subset) else range(len(folder))
    max_side = cache_side(short_side)
    workers = cpu_cores() if num_workers == -1 else num_workers
    resized = _ResizedImages([folder.samples[i] for i in indices], short_side, max_side)
    decoder = DataLoader(resized, batch_size=32, num_workers=workers, collate_fn=list)
    images = torch.zeros((len(resized), 3, max_side, max_side), dtype=torch.uint8, device=device)
    sizes = torch.zeros((len(resized), 2), dtype=torch.int64)
    labels = torch.zeros(len(resized), dtype=torch.int64)
    row = 0
    for batch in tqdm(decoder, desc="Decoding images into the device cache", unit="batch"):
        for pixels, label in batch:
            images[row, :, : pixels.shape[1], : pixels.shape[2]] = pixels.to(device)
            sizes[row], labels[row] = torch.tensor(pixels.shape[1:]), label
            row += 1
    return ImageCache(images, sizes.to(device), labels.to(device))


class DeviceLoader:
    """Batches (images [B,3,S,S] float normalized, labels [B]) made on the cache's device; a drop-in for DataLoader
    in src.train.run_epoch. `dataset` is the original Subset, for class names and normalization."""

    def __init__(self, cache: ImageCache, dataset: Subset, batch_size: int, train: bool, mean, std,
                 image_size: int = LANDMARK_IMAGE_SIZE, seed: int = 42,
                 recipe: AugmentationRecipe | None = None):  # fmt: skip
        self.cache, self.dataset, self.batch_size, self.train = cache, dataset, batch_size, train
        self.image_size, self.recipe = image_size, augmentation_recipe(recipe)
        device = cache.images.device
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __len__(self) -> int:
        if self.train and len(self.cache) > self.batch_size:  # drop_last, as the standard train loader
            return len(self.cache) // self.batch_size
        return math.ceil(len(self.cache) / self.batch_size)

    def __iter__(self):
        device = self.cache.images.device
        order = (
            torch.randperm(len(self.cache), generator=self.generator, device=device)
            if self.train
            else torch.arange(len(self.cache), device=device)
        )
        for batch in range(len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            images, sizes = self.cache.images[index], self.cache.sizes[index]
            if self.train:
                images = augment(images, sizes, self.image_size, self.recipe, self.generator)
            else:
                images = center_crop(images, sizes, self.image_size)
            images = (images - self.mean) / self.std
            yield images.contiguous(memory_format=torch.channels_last), self.cache.labels[index]


def device_loaders(
    data_loaders: dict[str, DataLoader],
    device: torch.device,
    image_size: int = LANDMARK_IMAGE_SIZE,
    num_workers: int = -1,
    recipe: AugmentationRecipe | None = None,
) -> dict[str, DeviceLoader]:
    """Device-resident versions of landmark loaders from get_data_loaders: the same splits, labels, normalization,
    and augmentation recipe (src.presets.LANDMARK_AUGMENTATION unless `recipe` is given).

    num_workers decode the images for the cache (-1: every core); afterwards no workers are needed."""
    mean, std = get_normalization(data_loaders["test"])
    resize = eval_resize_size("landmarks", image_size)
    loaders = {}
    for split, loader in data_loaders.items():
        cache = build_cache(loader.dataset, device, short_side=resize, num_workers=num_workers)
        train = split == "train"
        loaders[split] = DeviceLoader(cache, loader.dataset, loader.batch_size, train, mean, std, image_size,
                                      recipe=recipe)  # fmt: skip
    return loaders


def fastest_loaders(
    data_loaders: dict[str, DataLoader], device: torch.device, image_size: int = LANDMARK_IMAGE_SIZE
) -> dict[str, DataLoader | DeviceLoader]:
    """device_loaders for photo folders on a CUDA GPU (the fast path); the given loaders anywhere else.

    On a CPU the model's compute, not decoding, limits an epoch; Fashion-MNIST is already decoded in memory.
    A cache that would fill more than half of the GPU's free memory (a small laptop GPU) is not built either:
    the model needs the rest.
    """
    photos = isinstance(base_dataset(data_loaders["train"].dataset), ImageFolder)
    if device.type != "cuda" or not photos:
        return data_loaders
    side = cache_side(eval_resize_size("landmarks", image_size))
    cache_bytes = sum(len(loader.dataset) for loader in data_loaders.values()) * 3 * side * side
    free_bytes, _ = torch.cuda.mem_get_info(device)
    if cache_bytes > free_bytes / 2:
        print(f"GPU fast path skipped: its image cache would need {cache_bytes / 1e9:.1f} GB of the "
              f"{free_bytes / 1e9:.1f} GB free on the GPU; training uses the standard loaders.")  # fmt: skip
        return data_loaders
    return device_loaders(data_loaders, device, image_size)
