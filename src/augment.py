"""Training augmentation for whole batches on any device: the recipe of src.presets.LANDMARK_AUGMENTATION (crop, flip,
TrivialAugmentWide) done as torchvision does it per image, for every image of a batch at once. src/gpu_data.py uses it
on its GPU-resident cache; tests/test_augment.py checks each operation against torchvision's.

    images = augment(cache_images, sizes, 224, recipe, generator)   # uint8 [B,3,S,L] -> float [B,3,224,224] in [0,1]
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.ops import roi_align
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from src.presets import AugmentationRecipe


def augment(
    images: torch.Tensor, sizes: torch.Tensor, size: int, recipe: AugmentationRecipe,
    generator: torch.Generator | None = None,
) -> torch.Tensor:  # fmt: skip
    """A training batch: uint8 images [B,3,S,L] whose content is (height, width) = sizes [B,2] -> float [B,3,size,size]
    in [0,1], each randomly cropped, flipped and (if the recipe says so) TrivialAugment-ed."""
    images = crop_and_resize(images, random_crop_boxes(sizes, recipe, generator), size)
    images = random_flip(images, recipe.flip_p, generator)
    return trivial_augment(images, recipe.magnitude_bins, generator) if recipe.trivial_augment else images


def center_crop(images: torch.Tensor, sizes: torch.Tensor, size: int) -> torch.Tensor:
    """An evaluation batch: the central size x size crop of each image -> float [B,3,size,size] in [0,1]."""
    return crop_and_resize(images, center_crop_boxes(sizes, size), size)


# The table the standard transform's TrivialAugmentWide draws from: {op name: (magnitudes(bins, height, width) or
# None, signed)}. Reading torchvision's own table keeps the strengths identical; tests/test_gpu_data.py checks each
# batched op below against torchvision's, so a change in torchvision fails there rather than drifting silently.
TRIVIAL_AUGMENT_OPS = v2.TrivialAugmentWide._AUGMENTATION_SPACE
GEOMETRIC_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
RESIZED_CROP_TRIES = 10  # RandomResizedCrop's attempts at a box that fits before it falls back to a central crop


def random_crop_boxes(
    sizes: torch.Tensor, recipe: AugmentationRecipe, generator: torch.Generator | None = None
) -> torch.Tensor:
    """RandomResizedCrop boxes for images of the given (height, width) [B,2]: [B,4] float (x1, y1, x2, y2) in pixels.

    The same draw as torchvision's, for every image at once: up to RESIZED_CROP_TRIES boxes of a uniform
    recipe.crop_scale fraction of the area and log-uniform recipe.crop_ratio, rounded to whole pixels; the first that
    fits is placed uniformly at random, and an image where none fits gets the central crop of the nearest ratio.
    """
    batch, device = len(sizes), sizes.device
    heights, widths = sizes[:, 0:1].float(), sizes[:, 1:2].float()  # [B,1]
    rand = torch.rand((batch, RESIZED_CROP_TRIES, 2), generator=generator, device=device)
    (low, high), (ratio_low, ratio_high) = recipe.crop_scale, recipe.crop_ratio
    area = heights * widths * (low + rand[..., 0] * (high - low))
    ratio = torch.exp(math.log(ratio_low) + rand[..., 1] * (math.log(ratio_high) - math.log(ratio_low)))
    crop_w, crop_h = torch.round(torch.sqrt(area * ratio)), torch.round(torch.sqrt(area / ratio))  # [B,tries]
    fits = (crop_w > 0) & (crop_w <= widths) & (crop_h > 0) & (crop_h <= heights)
    first = fits.float().argmax(dim=1, keepdim=True)  # the first try that fits (0 when none does)
    crop_w, crop_h = crop_w.gather(1, first)[:, 0], crop_h.gather(1, first)[:, 0]
    heights, widths = heights[:, 0], widths[:, 0]
    # torchvision's fallback: the whole image, cut to the nearest allowed aspect ratio
    image_ratio = widths / heights
    fallback_w = torch.where(image_ratio > ratio_high, torch.round(heights * ratio_high), widths)
    fallback_h = torch.where(image_ratio < ratio_low, torch.round(widths / ratio_low), heights)
    none_fit = ~fits.any(dim=1)
    crop_w, crop_h = torch.where(none_fit, fallback_w, crop_w), torch.where(none_fit, fallback_h, crop_h)
    place = torch.rand((batch, 2), generator=generator, device=device)
    x1 = torch.where(none_fit, ((widths - crop_w) / 2).floor(), (place[:, 0] * (widths - crop_w + 1)).floor())
    y1 = torch.where(none_fit, ((heights - crop_h) / 2).floor(), (place[:, 1] * (heights - crop_h + 1)).floor())
    return torch.stack([x1, y1, x1 + crop_w, y1 + crop_h], dim=1)


def center_crop_boxes(sizes: torch.Tensor, crop: int) -> torch.Tensor:
    """The central crop x crop box of each image, at whole-pixel offsets like torchvision's CenterCrop."""
    top = torch.round((sizes[:, 0] - crop).float() / 2)
    left = torch.round((sizes[:, 1] - crop).float() / 2)
    return torch.stack([left, top, left + crop, top + crop], dim=1)


def crop_and_resize(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Cut boxes [B,4] out of images [B,3,H,W] (uint8 or float) and resize each to size x size: float [B,3,size,size] 0-1."""
    indexed = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None], boxes], dim=1)
    # roi_align averages bilinear samples in each output pixel's bin: aligned=True puts them on pixel centres and
    # sampling_ratio=0 takes ceil(box/size) samples per bin, so a box of exactly size x size returns the pixels
    # unchanged (the eval crop) and larger boxes are downscaled with some antialiasing.
    return roi_align(images.float() / 255, indexed, output_size=size, spatial_scale=1.0, sampling_ratio=0, aligned=True)


def random_flip(images: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image of [B,C,H,W] left-right with probability p."""
    flip = torch.rand(len(images), generator=generator, device=images.device) < p
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def trivial_augment(images: torch.Tensor, bins: int = 31, generator: torch.Generator | None = None) -> torch.Tensor:
    """TrivialAugmentWide for a batch, float [B,3,H,W] in 0-1: each image gets one op of TRIVIAL_AUGMENT_OPS, drawn
    uniformly, at one of `bins` strengths (negated with probability 1/2 for signed ops), as torchvision draws them."""
    batch, device = len(images), images.device
    op = torch.randint(len(TRIVIAL_AUGMENT_OPS), (batch,), generator=generator, device=device)
    level = torch.randint(bins, (batch,), generator=generator, device=device)
    sign = torch.where(torch.rand(batch, generator=generator, device=device) <= 0.5, -1.0, 1.0)
    magnitude = torch.zeros(batch, device=device)
    for index, (magnitudes, signed) in enumerate(TRIVIAL_AUGMENT_OPS.values()):
        table = magnitudes(bins, *images.shape[-2:])
        if table is not None:
            values = table.to(device=device, dtype=torch.float32)[level] * (sign if signed else 1.0)
            magnitude = torch.where(op == index, values, magnitude)
    return apply_trivial_augment_ops(images, op, magnitude)


def apply_trivial_augment_ops(images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Apply op number op[i] of TRIVIAL_AUGMENT_OPS with magnitude[i] to image i of float [B,3,H,W] in 0-1.

    The batch is grouped by op (one host sync per batch for the group sizes, no loop over images); every op takes
    its images' magnitudes by broadcasting. The results match torchvision's ops on uint8 images up to rounding.
    """
    names = list(TRIVIAL_AUGMENT_OPS)
    order = torch.argsort(op)
    counts = torch.bincount(op, minlength=len(names)).tolist()
    output = images.clone()
    starts = np.cumsum([0] + counts).tolist()
    geometric = torch.cat([order[starts[k] : starts[k + 1]] for k, name in enumerate(names) if name in GEOMETRIC_OPS])
    if len(geometric):
        output[geometric] = _affine(images[geometric], op[geometric], magnitude[geometric])
    for name, count, start in zip(names, counts, starts):
        index = order[start : start + count]
        if count and name not in GEOMETRIC_OPS and name != "Identity":
            output[index] = _photometric(name, images[index], magnitude[index].view(-1, 1, 1, 1))
    return output


def _photometric(name: str, images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """torchvision's TrivialAugmentWide op `name` on float [G,3,H,W] in 0-1 with per-image magnitudes [G,1,1,1]."""
    factor = 1.0 + magnitude
    gray = F.rgb_to_grayscale(images)  # [G,1,H,W], torchvision's own weights
    if name == "Brightness":
        return (images * factor).clamp(0, 1)
    if name == "Color":
        return (factor * images + (1 - factor) * gray).clamp(0, 1)
    if name == "Contrast":
        return (factor * images + (1 - factor) * gray.mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)
    if name == "Sharpness":  # blend with a 3x3 blur (1s around a 5, /13) inside a 1-pixel border, as torchvision
        if min(images.shape[-2:]) <= 2:  # no inside: torchvision leaves such images alone
            return images
        kernel = torch.ones(3, 1, 3, 3, device=images.device, dtype=images.dtype) / 13
        kernel[:, :, 1, 1] = 5 / 13
        blurred = images.clone()
        blurred[..., 1:-1, 1:-1] = torch.nn.functional.conv2d(images, kernel, groups=3)
        return (factor * images + (1 - factor) * blurred).clamp(0, 1)
    if name == "Posterize":  # keep the top `magnitude` bits of each 8-bit value
        mask = (255 - (2 ** (8 - magnitude) - 1)).to(torch.uint8)
        return ((images * 255).round().to(torch.uint8) & mask).float() / 255
    if name == "Solarize":
        return torch.where(images >= magnitude, 1 - images, images)
    if name == "AutoContrast":
        return F.autocontrast(images)
    if name == "Equalize":
        return F.equalize(images)
    raise ValueError(f"Unknown TrivialAugmentWide op {name!r}")


def _affine(images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Geometric ops op [G] (shears, translations, rotations) of float [G,3,H,W], one affine resampling for all.

    Per image the inverse matrix that torchvision's F.affine / F.rotate compute (torchvision's
    _get_inverse_affine_matrix, vectorized), nearest-neighbour sampling, black outside the image.
    """
    height, width = images.shape[-2:]
    is_op = {name: op == list(TRIVIAL_AUGMENT_OPS).index(name) for name in GEOMETRIC_OPS}
    zero = torch.zeros_like(magnitude)
    shear_x = torch.where(is_op["ShearX"], torch.atan(magnitude), zero)  # radians; TrivialAugment passes atan(m)
    shear_y = torch.where(is_op["ShearY"], torch.atan(magnitude), zero)
    rotation = torch.where(is_op["Rotate"], torch.deg2rad(-magnitude), zero)  # F.rotate turns the other way
    tx = torch.where(is_op["TranslateX"], torch.trunc(magnitude), zero)  # int(magnitude) pixels
    ty = torch.where(is_op["TranslateY"], torch.trunc(magnitude), zero)
    sheared = is_op["ShearX"] | is_op["ShearY"]  # shears turn about the top-left corner, the rest about the centre
    cx, cy = torch.where(sheared, -width / 2, zero), torch.where(sheared, -height / 2, zero)
    a = torch.cos(rotation - shear_y) / torch.cos(shear_y)
    b = -(a * torch.tan(shear_x) + torch.sin(rotation))
    c = torch.sin(rotation - shear_y) / torch.cos(shear_y)
    d = torch.cos(rotation) - c * torch.tan(shear_x)
    row_x = torch.stack([d, -b, cx - d * (cx + tx) + b * (cy + ty)], dim=1)
    row_y = torch.stack([-c, a, cy + c * (cx + tx) - a * (cy + ty)], dim=1)
    theta = torch.stack([row_x, row_y], dim=1)  # [G,2,3], in pixels about the image centre
    # torchvision's _affine_grid: output pixel centres about the image centre, mapped, then scaled to -1..1
    xs = torch.linspace((1 - width) / 2, (width - 1) / 2, width, device=images.device)
    base_x = xs.expand(height, width)
    ys = torch.linspace((1 - height) / 2, (height - 1) / 2, height, device=images.device)
    base = torch.stack([base_x, ys[:, None].expand(height, width), torch.ones_like(base_x)], dim=-1)
    scale = torch.tensor([0.5 * width, 0.5 * height], device=images.device)
    grid = base.view(1, -1, 3).expand(len(images), -1, -1).bmm(theta.transpose(1, 2) / scale)
    grid = grid.view(len(images), height, width, 2)
    return torch.nn.functional.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)
