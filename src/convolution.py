"""What a convolution computes, and what the network's convolutions learned.

    conv_output_size, conv_layer_table      the output-size and parameter formulas, checked against real layers
                                            (convolutions and pooling)
    macs_per_stage                          where the computation goes: multiply-accumulates per part of the model
    classic_kernels, apply_filters          hand-made filters on a photo
    first_layer_filters, feature_maps       the learned filters and the maps they produce

plot_feature_maps and first_layer_filters return a matplotlib Figure; the computations return CPU tensors.
(src/visualize.py draws the data and the training curves; src/saliency.py shows which pixels a prediction depends on.)
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Sequence

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

from src.model import conv_parameter_count

LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights: how bright R, G and B look to people


# ----------------------------------------------------------------------------------------------------------------------
# Convolution arithmetic


def conv_output_size(i: int, k: int, s: int = 1, p: int = 0) -> int:
    """Output length of a convolution (or pooling) along one axis: o = floor((i + 2p - k) / s) + 1."""
    return (i + 2 * p - k) // s + 1


POOLING = (nn.MaxPool2d, nn.AvgPool2d)  # fixed-window pooling: the output-size formula holds, and there are no weights


def conv_layer_table(model: nn.Module, image_size: int, within: Sequence[nn.Module] | None = None) -> list[dict]:
    """One row per nn.Conv2d, nn.MaxPool2d and nn.AvgPool2d (inside `within`, default the whole model), in the order
    they run in a forward pass of a [1,3,S,S] image.

    Each row holds the layer's name and type, channels in/out, kernel k, stride s, padding p, input size i (px), the
    output size from the formula and from the real layer, and the parameter count from the formula and from numel:
    n_p = n_k(c*k^2 + 1) for a convolution (without the +1 when it has no bias), 0 for pooling.
    """
    containers = list(within) if within is not None else [model]
    layers = {m for container in containers for m in container.modules() if isinstance(m, (nn.Conv2d, *POOLING))}
    names = {module: name for name, module in model.named_modules()}
    rows = []

    def record(layer: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        i, c_in, c_out = inputs[0].shape[-1], inputs[0].shape[1], output.shape[1]
        k, s, p = (first_axis(value) for value in (layer.kernel_size, layer.stride, layer.padding))
        is_conv = isinstance(layer, nn.Conv2d)
        rows.append({
            "layer": names[layer], "type": type(layer).__name__, "c_in": c_in, "c_out": c_out, "k": k, "s": s, "p": p,
            "i": i, "o (formula)": conv_output_size(i, k, s, p), "o (real)": output.shape[-1],
            "params (formula)": conv_parameter_count(c_in, c_out, k, layer.bias is not None) if is_conv else 0,
            "params (real)": sum(param.numel() for param in layer.parameters()),
        })  # fmt: skip

    _probe(model, image_size, [(module, record) for module in model.modules() if module in layers])
    return rows


def first_axis(value: int | tuple[int, ...]) -> int:
    """A layer's kernel size, stride or padding along the first axis (pooling layers may store a plain int)."""
    return value if isinstance(value, int) else value[0]


def macs_per_stage(model: nn.Module, image_size: int) -> dict[str, int]:
    """Multiply-accumulates of every convolution for one image_size x image_size image, summed per top-level part of
    the model ("stem", "stages.0", ...): where a CNN spends its computation. A conv costs output pixels x kernel
    height x kernel width x input channels / groups x output channels."""
    totals: dict[str, int] = {}

    def counter(part: str):
        def count(conv: nn.Conv2d, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
            kernel = conv.kernel_size[0] * conv.kernel_size[1] * conv.in_channels // conv.groups
            totals[part] = totals.get(part, 0) + output[0].numel() * kernel

        return count

    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            hooks.append((module, counter(".".join(name.split(".")[:2 if name.startswith("stages.") else 1]))))
    _probe(model, image_size, hooks)
    return totals


def _probe(model: nn.Module, image_size: int, hooks: list[tuple[nn.Module, Callable]]) -> None:
    """Run one blank [1,3,S,S] image through the model in eval mode with forward hooks (module, fn) attached."""
    handles = [module.register_forward_hook(fn) for module, fn in hooks]
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=device_of(model)))
    finally:
        for handle in handles:
            handle.remove()


# ----------------------------------------------------------------------------------------------------------------------
# Hand-made filters


def classic_kernels() -> dict[str, torch.Tensor]:
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
    """A grid of 2-D maps [K,H,W], each with its own gray scale. A map with negative values is scaled symmetrically,
    so that mid-gray is 0 and black and white are equally strong responses of opposite sign; a map without them runs
    from black at 0 to white at its highest value."""
    titles = titles if titles is not None else [f"channel {k}" for k in range(len(maps))]
    columns = min(columns, len(maps))
    rows = math.ceil(len(maps) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.2 * columns, 2.3 * rows + 0.5), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, feature_map, title in zip(axes.flat, maps, titles):
        values = feature_map.detach().cpu().float()
        low, high = min(values.min().item(), 0.0), max(values.max().item(), 0.0)
        if low < 0:  # symmetric: 0 is mid-gray
            low, high = -max(-low, high), max(-low, high)
        ax.imshow(values.numpy(), cmap="gray", vmin=low, vmax=high if high > low else low + 1)
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
        with eval_mode(model), torch.no_grad():
            model(image.to(device_of(model)))
    finally:
        handle.remove()
    return captured[0][0].cpu()


# ----------------------------------------------------------------------------------------------------------------------
# The model on its device, in eval mode (also used by src/saliency.py)


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's parameters."""
    return next(model.parameters()).device


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode (BatchNorm running statistics, no dropout) inside the block, its old mode after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
