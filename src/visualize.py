"""Teaching visualizations: the data, what a convolution computes, what a CNN learned, and where it looks.

    plot_class_counts, image_sizes, ...     the dataset, augmentation, and training histories side by side
    conv_output_size, conv_layer_table      the output-size and parameter formulas, checked against real layers
    sobel_kernels, apply_filters            hand-made filters on a photo
    first_layer_filters, feature_maps       the learned filters and the maps they produce
    effective_receptive_field               which input pixels a deep feature actually depends on
    grad_cam                                which image regions a class score depends on

The plot_* functions and first_layer_filters return a matplotlib Figure; the computations return CPU tensors.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections import Counter
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.colors import LogNorm
from matplotlib.ticker import MaxNLocator
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Subset

from src.data import base_dataset, denormalize, get_class_names
from src.model import conv_parameter_count

LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights: how bright R, G and B look to people


# ----------------------------------------------------------------------------------------------------------------------
# The data


def plot_class_counts(data_loaders: dict[str, DataLoader], split: str = "train") -> plt.Figure:
    """A bar chart of the number of images per class in one split."""
    subset = data_loaders[split].dataset
    base = base_dataset(subset)
    indices = subset.indices if isinstance(subset, Subset) else range(len(base))
    targets = [int(label) for label in base.targets]
    counts = Counter(targets[i] for i in indices)
    names = get_class_names(data_loaders)
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(names)), 4), layout="constrained")
    ax.bar(range(len(names)), [counts[k] for k in range(len(names))])
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set(title=f"Images per class ({split} split, {len(indices)} images)", xlabel="class", ylabel="images")
    return fig


def image_sizes(paths: Sequence[str | Path]) -> np.ndarray:
    """[N, 2] (width, height) in pixels as displayed, read from the file headers (EXIF rotation applied)."""
    sizes = []
    for path in paths:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientations that turn the photo by 90 degrees
                width, height = height, width
        sizes.append((width, height))
    return np.array(sizes)


def plot_image_sizes(sizes: np.ndarray) -> plt.Figure:
    """A scatter plot of image widths against heights ([N, 2] pixels, from image_sizes)."""
    fig, ax = plt.subplots(figsize=(5, 4.5), layout="constrained")
    ax.scatter(sizes[:, 0], sizes[:, 1], s=8, alpha=0.5)
    ax.set(title=f"Width and height of {len(sizes)} training photos", xlabel="width (px)", ylabel="height (px)")
    ax.set_aspect("equal", adjustable="datalim")
    return fig


def raw_image(data_loader: DataLoader, index: int) -> tuple[Image.Image, int]:
    """The index-th (image, label) of the loader's dataset before any transform: a PIL image at its original size."""
    subset = data_loader.dataset
    raw = copy.copy(base_dataset(subset))  # the same files, without the transform
    raw.transform = None
    return raw[subset.indices[index] if isinstance(subset, Subset) else index]


def plot_augmentations(image: Image.Image, transform, mean: torch.Tensor, std: torch.Tensor, n: int = 5) -> plt.Figure:
    """The original image next to n outputs of a random (training) transform, denormalized for display."""
    fig, axes = plt.subplots(1, n + 1, figsize=(2.4 * (n + 1), 2.8), layout="constrained")
    axes[0].imshow(image.convert("RGB"))
    axes[0].set_title(f"original {image.width}x{image.height}", fontsize=9)
    for i, ax in enumerate(axes[1:], start=1):
        augmented = denormalize(transform(image), mean, std)
        ax.imshow(augmented.permute(1, 2, 0).numpy())
        ax.set_title(f"augmented #{i}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle("One training image through the augmentation pipeline")
    return fig


def plot_histories(
    histories: Mapping[str, Mapping[str, Sequence[float]]], metric: str = "valid_accuracy"
) -> plt.Figure:
    """One curve per model (name -> history from src.train.optimize) of a per-epoch metric, e.g. "valid_loss"."""
    accuracy = metric.endswith("accuracy")
    label = metric.replace("valid_", "validation_").replace("_", " ")
    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    for name, history in histories.items():
        values = np.asarray(history[metric]) * (100 if accuracy else 1)
        ax.plot(range(1, len(values) + 1), values, "o-", label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set(title=f"{label.capitalize()} per epoch", xlabel="epoch", ylabel=label + (" (%)" if accuracy else ""))
    ax.legend()
    return fig


# ----------------------------------------------------------------------------------------------------------------------
# Convolution arithmetic


def conv_output_size(i: int, k: int, s: int = 1, p: int = 0) -> int:
    """Output length of a convolution (or pooling) along one axis: o = floor((i + 2p - k) / s) + 1."""
    return (i + 2 * p - k) // s + 1


def conv_layer_table(model: nn.Module, image_size: int, within: Sequence[nn.Module] | None = None) -> list[dict]:
    """One row per nn.Conv2d (inside `within`, default the whole model), from a forward pass of a [1,3,S,S] image.

    Each row holds the layer's name, channels in/out, kernel k, stride s, padding p, input size i (px), the output
    size from the formula and from the real layer, and the parameter count from n_p = n_k(c*k^2 + 1) and from numel.
    """
    containers = list(within) if within is not None else [model]
    convs = {m for container in containers for m in container.modules() if isinstance(m, nn.Conv2d)}
    names = {module: name for name, module in model.named_modules()}
    rows, handles = [], []

    def record(conv: nn.Conv2d, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        i, k, s, p = inputs[0].shape[-1], conv.kernel_size[0], conv.stride[0], conv.padding[0]
        rows.append({
            "layer": names[conv], "c_in": conv.in_channels, "c_out": conv.out_channels, "k": k, "s": s, "p": p,
            "i": i, "o (formula)": conv_output_size(i, k, s, p), "o (real)": output.shape[-1],
            "params (formula)": conv_parameter_count(conv.in_channels, conv.out_channels, k, conv.bias is not None),
            "params (real)": sum(param.numel() for param in conv.parameters()),
        })  # fmt: skip

    # model.modules() order, so the hooks are registered, and the rows come out, in forward order for MyModel
    for module in (m for m in model.modules() if m in convs):
        handles.append(module.register_forward_hook(record))
    try:
        with _eval_mode(model), torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=_device_of(model)))
    finally:
        for handle in handles:
            handle.remove()
    return rows


def format_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Rows of equal keys as a plain-text table with a header line, columns right-aligned."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[j]) for r in cells)) for j, c in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join("  ".join(value.rjust(w) for value, w in zip(line, widths)) for line in lines)


# ----------------------------------------------------------------------------------------------------------------------
# Hand-made filters


def sobel_kernels() -> dict[str, torch.Tensor]:
    """Four classic 3x3 kernels, name -> [3,3] float32: Sobel vertical and horizontal edges, a blur and a sharpen."""
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])  # left-right change: vertical edges
    return {
        "vertical edges": sobel_x,
        "horizontal edges": sobel_x.T.contiguous(),
        "blur": torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16,
        "sharpen": torch.tensor([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]]),
    }


def apply_filters(image: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve the luminance of an image [3,H,W] with K kernels [K,kh,kw]; returns [K, H-kh+1, W-kw+1].

    No padding and stride 1, so the output size follows o = i - k + 1. (Like nn.Conv2d this is cross-correlation:
    the kernel is not flipped.)
    """
    gray = torch.einsum("c,chw->hw", torch.tensor(LUMINANCE, dtype=image.dtype), image)
    return F.conv2d(gray[None, None], kernels[:, None].to(image.dtype))[0]


def plot_feature_maps(
    maps: torch.Tensor, titles: Sequence[str] | None = None, suptitle: str = "Feature maps", columns: int = 8
) -> plt.Figure:
    """A grid of 2-D maps [K,H,W], each with its own gray scale (black = lowest, white = highest value)."""
    titles = titles if titles is not None else [f"channel {k}" for k in range(len(maps))]
    columns = min(columns, len(maps))
    rows = math.ceil(len(maps) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.2 * columns, 2.3 * rows + 0.5), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, feature_map, title in zip(axes.flat, maps, titles):
        ax.imshow(feature_map.detach().cpu().numpy(), cmap="gray")
        ax.set_title(title, fontsize=9)
    fig.suptitle(suptitle)
    return fig


# ----------------------------------------------------------------------------------------------------------------------
# What the CNN learned


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The model's first nn.Conv2d (in registration order, which is forward order for sequential models)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ValueError("The model has no nn.Conv2d layer.")


def first_layer_filters(model: nn.Module, columns: int = 8) -> plt.Figure:
    """The first convolution's kernels as small RGB images, each min-max scaled to [0, 1] on its own."""
    conv = first_conv(model)
    weights = conv.weight.detach().cpu()  # [n_k, c, k, k]
    if weights.shape[1] != 3:
        raise ValueError(f"The first conv has {weights.shape[1]} input channels; RGB display needs 3.")
    low = weights.amin(dim=(1, 2, 3), keepdim=True)
    high = weights.amax(dim=(1, 2, 3), keepdim=True)
    scaled = (weights - low) / (high - low).clamp_min(1e-12)
    rows = math.ceil(len(scaled) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.2 * columns, 1.2 * rows + 0.6), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, kernel in zip(axes.flat, scaled):
        ax.imshow(kernel.permute(1, 2, 0).numpy(), interpolation="nearest")
    k = conv.kernel_size[0]
    fig.suptitle(f"First-layer filters: {len(scaled)} kernels of {k}x{k}x3, each scaled to its own range")
    return fig


def feature_maps(model: nn.Module, image: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """The output of `layer` for one normalized image [1,3,H,W] (model in eval mode), as [C,h,w] on the CPU."""
    captured = []
    # a copy: a later in-place operation (ReLU(inplace=True)) could otherwise change the captured tensor
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(output.clone()))
    try:
        with _eval_mode(model), torch.no_grad():
            model(image.to(_device_of(model)))
    finally:
        handle.remove()
    return captured[0][0].cpu()


def effective_receptive_field(
    model: nn.Module, image_size: int = 224, layer: nn.Module | None = None, n_inputs: int = 8, seed: int = 0
) -> torch.Tensor:
    """How strongly each input pixel moves the centre of a deep feature map: [image_size, image_size], max 1.

    The gradient of the centre pixel of `layer`'s output (summed over channels) with respect to n_inputs random
    N(0,1) images (the statistics of normalized photos), in absolute value, summed over colour channels, averaged
    over the inputs. layer=None: the map that enters the model's global average pooling (or the last Conv2d's output).
    """
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n_inputs, 3, image_size, image_size, generator=generator).to(_device_of(model))
    images.requires_grad_(True)
    with _eval_mode(model), torch.enable_grad():
        features = _capture(model, layer, images)
        h, w = features.shape[-2:]
        (gradient,) = torch.autograd.grad(features[:, :, h // 2, w // 2].sum(), images)
    erf = gradient.abs().sum(dim=1).mean(dim=0).cpu()
    return erf / erf.max().clamp_min(1e-12)


def erf_radius(erf: torch.Tensor) -> float:
    """Spread of a receptive-field map [H,W] in pixels: the root-mean-square distance from its centre of mass."""
    weights = erf / erf.sum()
    y, x = torch.meshgrid(torch.arange(erf.shape[0]), torch.arange(erf.shape[1]), indexing="ij")
    cy, cx = (weights * y).sum(), (weights * x).sum()
    return float(((weights * ((y - cy) ** 2 + (x - cx) ** 2)).sum()).sqrt())


def plot_receptive_fields(erfs: Mapping[str, torch.Tensor], floor: float = 1e-3) -> plt.Figure:
    """Side-by-side heat maps of effective receptive fields (name -> [H,W] from effective_receptive_field).

    The colour scale is logarithmic from `floor` to 1, so the faint outer part of a field, where it grows during
    training, is visible too. All panels show the same square window around the pixels above `floor` in any map, since
    a field is often a small spot in a large image; the axes are in input pixels.
    """
    rows, columns = torch.nonzero(torch.stack(list(erfs.values())).amax(dim=0) > floor, as_tuple=True)
    height, width = next(iter(erfs.values())).shape
    centre_y, centre_x = (rows.min() + rows.max()).item() / 2, (columns.min() + columns.max()).item() / 2
    half = max(rows.max() - rows.min(), columns.max() - columns.min()).item() * 0.6 + 4  # a margin of 20%, >= 4 px
    top, bottom = max(0, round(centre_y - half)), min(height, round(centre_y + half) + 1)
    left, right = max(0, round(centre_x - half)), min(width, round(centre_x + half) + 1)

    fig, axes = plt.subplots(1, len(erfs), figsize=(4.2 * len(erfs), 4.4), squeeze=False, layout="constrained")
    for ax, (name, erf) in zip(axes[0], erfs.items()):
        window = erf[top:bottom, left:right].clamp_min(floor).numpy()
        extent = (left - 0.5, right - 0.5, bottom - 0.5, top - 0.5)  # pixel centres at integer coordinates
        image = ax.imshow(
            window, cmap="magma", norm=LogNorm(vmin=floor, vmax=1), extent=extent, interpolation="nearest"
        )
        ax.set_title(f"{name} (spread {erf_radius(erf):.1f} px)", fontsize=10)
        ax.set(xlabel="input x (px)", ylabel="input y (px)")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="|gradient| (max = 1, log scale)")
    fig.suptitle(
        f"Effective receptive field of the centre of the deepest feature map (zoomed: image is {width}x{height} px)"
    )
    return fig


# ----------------------------------------------------------------------------------------------------------------------
# Where the model looks


def grad_cam(
    model: nn.Module, images: torch.Tensor, target_layer: nn.Module, class_index: list[int] | None = None
) -> torch.Tensor:
    """Grad-CAM heat maps [B,H,W] in [0, 1] for normalized images [B,3,H,W] (model in eval mode).

    For each image: the gradients of the class score (logit) with respect to target_layer's activations [C,h,w] are
    averaged over h and w to weigh each channel; the ReLU of the weighted sum of channels, bilinearly upsampled to
    H x W and divided by its maximum, is the heat map (all zeros where nothing supports the class).
    class_index: the class to explain for each image; None explains each image's predicted class.
    """
    # The input requires a gradient so that the activations do too, even inside a frozen (requires_grad=False) backbone.
    images = images.detach().to(_device_of(model)).requires_grad_(True)
    captured = []
    handle = target_layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        with _eval_mode(model), torch.enable_grad():
            logits = model(images)
            if class_index is None:
                classes = logits.argmax(dim=1)
            else:
                classes = torch.as_tensor(class_index, device=logits.device)
            scores = logits[torch.arange(len(images), device=logits.device), classes]
            activations = captured[0]
            # In eval mode the images do not interact, so one backward pass gives every image its own gradients.
            (gradients,) = torch.autograd.grad(scores.sum(), activations)
    finally:
        handle.remove()
    weights = gradients.mean(dim=(2, 3), keepdim=True)  # [B,C,1,1]
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True)).detach()  # [B,1,h,w]
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0].clamp_min(0)
    peak = cam.amax(dim=(1, 2), keepdim=True)
    return (cam / peak.clamp_min(1e-12)).cpu()


def plot_grad_cam(images: torch.Tensor, heatmaps: torch.Tensor, titles: Sequence[str]) -> plt.Figure:
    """Each image [B,3,H,W] in [0,1] shown with its Grad-CAM heat map [B,H,W] in [0,1] laid over it."""
    fig, axes = plt.subplots(1, len(images), figsize=(2.8 * len(images), 3.7), squeeze=False, layout="constrained")
    for ax, image, heatmap, title in zip(axes[0], images, heatmaps, titles):
        ax.imshow(image.detach().cpu().permute(1, 2, 0).numpy())
        ax.imshow(heatmap.detach().cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle("Grad-CAM: the regions that raise the class score (red = most)")
    return fig


# ----------------------------------------------------------------------------------------------------------------------
# Internals


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode (BatchNorm running statistics, no dropout) inside the block, its old mode after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _capture(model: nn.Module, layer: nn.Module | None, images: torch.Tensor) -> torch.Tensor:
    """Run the model on images and return `layer`'s output (layer=None: see effective_receptive_field)."""
    captured = []
    if layer is None:
        pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
        if pools:
            handle = pools[0].register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        else:
            handle = _last_conv(model).register_forward_hook(lambda module, inputs, output: captured.append(output))
    else:
        handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        model(images)
    finally:
        handle.remove()
    return captured[0]


def _last_conv(model: nn.Module) -> nn.Conv2d:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("The model has no nn.Conv2d layer.")
    return convs[-1]
