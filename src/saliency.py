"""Which input pixels a prediction depends on: effective receptive fields and Grad-CAM.

    theoretical_receptive_field             which input pixels a deep feature can depend on
    effective_receptive_field, erf_radius   which input pixels a deep feature actually depends on
    grad_cam, explain_predictions           which image regions a class score depends on
    correct_and_wrong                       right and wrong predictions to explain

The plot_* functions and explain_predictions return a matplotlib Figure; the computations return CPU tensors.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.colors import LogNorm
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from src.convolution import POOLING, device_of, eval_mode, first_axis
from src.data import denormalize


# ----------------------------------------------------------------------------------------------------------------------
# Receptive fields: theoretical and effective


def theoretical_receptive_field(model: nn.Module, parallel: Sequence[str] = ("shortcut", "downsample")) -> int:
    """Side (px) of the square of input pixels that one pixel of the model's last feature map can depend on (for
    MyModel: the map that enters global average pooling, as in effective_receptive_field).

    The recurrence over the Conv2d, MaxPool2d and AvgPool2d layers in registration order (forward order for sequential
    models and MyModel), from r = 1, j = 1 (one input pixel; neighbouring pixels 1 px apart):
        r_out = r_in + (k - 1) * j_in,    j_out = j_in * s
    k: kernel size (d * (k - 1) + 1 with dilation d), s: stride, j: the distance in input pixels between neighbouring
    pixels of the current map. Padding does not change it. Layers inside a module named in `parallel` are skipped: a
    residual block's shortcut runs beside its main branch and sees a subset of what that branch sees. The layers are
    taken as square (their first axis is used).
    """
    r, j = 1, 1
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, *POOLING)) and not set(name.split(".")) & set(parallel):
            k, s = first_axis(module.kernel_size), first_axis(module.stride)
            k = first_axis(getattr(module, "dilation", 1)) * (k - 1) + 1
            r, j = r + (k - 1) * j, j * s
    return r


def effective_receptive_field(
    model: nn.Module, image_size: int = 224, layer: nn.Module | None = None, n_inputs: int = 8, seed: int = 0
) -> torch.Tensor:
    """How strongly each input pixel moves the centre of a deep feature map: [image_size, image_size], max 1.

    The gradient of the centre pixel of `layer`'s output (summed over channels) with respect to n_inputs random
    N(0,1) images (the statistics of normalized photos), in absolute value, summed over colour channels, averaged
    over the inputs. layer=None: the map that enters the model's global average pooling (or the last Conv2d's output).
    """
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n_inputs, 3, image_size, image_size, generator=generator).to(device_of(model))
    images.requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
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
    images = images.detach().to(device_of(model)).requires_grad_(True)
    captured = []
    handle = target_layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        with eval_mode(model), torch.enable_grad():
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



def correct_and_wrong(
    model: nn.Module, dataset: Dataset, n_each: int = 3, seed: int = 0
) -> list[tuple[torch.Tensor, int, int]]:
    """Up to n_each correctly and n_each wrongly classified (image, label, predicted) of the dataset, correct first.

    The images are visited in a random (seeded) order, one at a time, until both kinds are complete or the dataset
    ends, so a large test set is not run through the model in full.
    """
    device = device_of(model)
    correct, wrong = [], []
    with eval_mode(model), torch.no_grad():
        for index in np.random.default_rng(seed).permutation(len(dataset)).tolist():
            image, label = dataset[index]
            predicted = int(model(image.unsqueeze(0).to(device)).argmax())
            (correct if predicted == label else wrong).append((image, int(label), predicted))
            if len(correct) >= n_each and len(wrong) >= n_each:
                break
    return correct[:n_each] + wrong[:n_each]


def explain_predictions(
    model: nn.Module, examples: Sequence[tuple[torch.Tensor, int, int]], target_layer: nn.Module,
    class_names: Sequence[str], mean: torch.Tensor, std: torch.Tensor,
) -> plt.Figure:  # fmt: skip
    """Grad-CAM of each (normalized image, label, predicted) from correct_and_wrong, explaining the predicted class;
    titled "✓ predicted" when right, "✗ predicted (true: label)" when wrong."""
    images = torch.stack([image for image, _, _ in examples])
    heatmaps = grad_cam(model, images, target_layer, class_index=[predicted for _, _, predicted in examples])
    titles = [
        f"✓ {class_names[predicted]}" if predicted == label
        else f"✗ {class_names[predicted]}\n(true: {class_names[label]})"
        for _, label, predicted in examples
    ]  # fmt: skip
    return plot_grad_cam(denormalize(images, mean, std), heatmaps, titles)


# ----------------------------------------------------------------------------------------------------------------------
# Internals


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
