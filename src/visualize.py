"""Teaching visualizations of the data, the training and the results.

    plot_class_counts, image_sizes, ...     the dataset and its augmentation
    plot_histories, LivePlot                training curves: several runs side by side or one after the other, or one
                                            run as it trains
    plot_top_classes, plot_test_accuracies  a model's guesses for one photo; test accuracies of several models
    format_table                            rows of values as a plain-text table
    plot_confusion_matrix, most_confused_pairs  what a model confuses with what

The plot_* functions return a matplotlib Figure. What the network's convolutions compute is in src/convolution.py,
which pixels a prediction depends on in src/saliency.py.
"""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from src.data import base_dataset, denormalize, get_class_names


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


# ----------------------------------------------------------------------------------------------------------------------
# Training curves


def plot_histories(
    histories: Mapping[str, Mapping[str, Sequence[float]] | None],
    metrics: str | Sequence[str] = "valid_accuracy",
    consecutive: bool = False,
) -> plt.Figure:
    """One panel per per-epoch metric (e.g. "valid_loss", "valid_accuracy", "lr"), one curve per run (name -> history
    from src.train.optimize; None or no epochs: a skipped run, not drawn). consecutive: the runs followed one another
    (training stages), so each curve starts after the previous run's last epoch."""
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    ran = {name: history for name, history in histories.items() if history and history[metrics[0]]}
    starts = np.cumsum([1, *(len(history[metrics[0]]) for history in ran.values())]).tolist() if consecutive else []
    fig, axes = plt.subplots(1, len(metrics), figsize=(1 + 5 * len(metrics), 3.8), layout="constrained", squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        draw_curves(ax, {name: history[metric] for name, history in ran.items()}, metric, dict(zip(ran, starts)))
    return fig


def draw_curves(
    ax: plt.Axes, curves: Mapping[str, Sequence[float]], metric: str, first_epochs: Mapping[str, int] | None = None
) -> None:
    """One line per entry (label -> per-epoch values) of a metric such as "valid_loss" or "accuracy" on ax, with
    title, axis labels and legend; accuracies (fractions) are drawn in percent. first_epochs: the epoch number of a
    curve's first value (label -> number; default 1)."""
    accuracy = metric.endswith("accuracy")
    label = "learning rate" if metric == "lr" else metric.replace("valid_", "validation_").replace("_", " ")
    for name, values in curves.items():
        values = np.asarray(values) * (100 if accuracy else 1)
        first = (first_epochs or {}).get(name, 1)
        ax.plot(range(first, first + len(values)), values, "o-", label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set(title=f"{label.capitalize()} per epoch", xlabel="epoch", ylabel=label + (" (%)" if accuracy else ""))
    if curves:  # a legend without lines would warn
        ax.legend()


class LivePlot:
    """Loss and accuracy curves (train and valid) that redraw in place in a Jupyter notebook (and are only drawn,
    never shown, elsewhere). src.train.optimize(..., interactive_tracking=True) updates one after every epoch."""

    def __init__(self):
        from IPython.display import display  # only needed, and only meaningful, in a notebook

        self.fig, (self.loss_ax, self.acc_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
        self.handle = display(self.fig, display_id=True) if _in_notebook() else None

    def update(self, history: dict[str, list[float]]) -> None:
        for ax, metric in ((self.loss_ax, "loss"), (self.acc_ax, "accuracy")):
            ax.clear()
            draw_curves(ax, {split: history[f"{split}_{metric}"] for split in ("train", "valid")}, metric)
        self.fig.tight_layout()
        if self.handle:
            self.handle.update(self.fig)

    def close(self) -> None:
        plt.close(self.fig)  # the handle keeps showing the last drawing; closing stops a duplicate at cell end


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


# ----------------------------------------------------------------------------------------------------------------------
# Results


def plot_top_classes(
    photo: torch.Tensor, photo_title: str, names: Sequence[str], probabilities: Sequence[float], title: str
) -> plt.Figure:
    """A photo [3,H,W] in [0,1] next to a bar chart of a model's top classes for it, the most likely at the top."""
    fig, (photo_ax, bar_ax) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 1.6]})
    photo_ax.imshow(photo.permute(1, 2, 0).numpy())
    photo_ax.set_title(photo_title, fontsize=10)
    photo_ax.axis("off")
    bar_ax.barh(list(names)[::-1], list(probabilities)[::-1])
    bar_ax.set(title=title, xlabel="probability", ylabel="class", xlim=(0, 1))
    fig.tight_layout()
    return fig


def accuracy_table(accuracies: Mapping[str, float], n_test: int) -> str:
    """Model name -> test accuracy (a fraction) as a text table in percent."""
    column = f"test accuracy ({n_test} photos)"
    return format_table([{"model": name, column: f"{100 * accuracy:.1f}%"} for name, accuracy in accuracies.items()])


def plot_test_accuracies(accuracies: Mapping[str, float], n_test: int) -> plt.Figure:
    """Horizontal bars of model name -> test accuracy (a fraction), in percent, in the mapping's order from the top."""
    fig, ax = plt.subplots(figsize=(8, 1.8 + 0.6 * len(accuracies)), layout="constrained")
    colours = ["#3b7dd8", "#999999"] * len(accuracies)  # the first model stands out
    bars = ax.barh(list(accuracies), [100 * a for a in accuracies.values()], color=colours[: len(accuracies)])
    ax.bar_label(bars, fmt="%.1f%%", padding=3)
    ax.invert_yaxis()  # the first model on top
    ax.set(title=f"Test accuracy of the exported models ({n_test} test photos)", xlabel="test accuracy (%)",
           ylabel="model", xlim=(0, 110))  # fmt: skip
    return fig


def format_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Rows of equal keys as a plain-text table with a header line, columns right-aligned."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[j]) for r in cells)) for j, c in enumerate(columns)]
    lines = [columns, *cells]
    return "\n".join("  ".join(value.rjust(w) for value, w in zip(line, widths)) for line in lines)


def plot_confusion_matrix(confusion: np.ndarray, class_names: list[str]) -> plt.Figure:
    """A heat map of the confusion matrix, each row normalized to the fraction of that class's images."""
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = max(6, 0.22 * len(class_names))
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set(xlabel="predicted landmark", ylabel="true landmark", title="Confusion matrix (fraction of each true class)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    return fig


def most_confused_pairs(confusion: np.ndarray, class_names: list[str], k: int = 10) -> list[tuple[str, str, int]]:
    """The k largest off-diagonal counts as (true class, predicted class, number of test images), largest first."""
    off_diagonal = confusion.copy()
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(off_diagonal, axis=None)[::-1][:k]
    pairs = [(class_names[i], class_names[j], int(off_diagonal[i, j])) for i, j in zip(*np.unravel_index(order, confusion.shape))]
    return [pair for pair in pairs if pair[2] > 0]
