"""Specification of src/visualize.py: plots of the data, training curves (side by side and live), results, tables."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from src.data import get_data_loaders
from src.presets import get_transforms
from src.visualize import (
    LivePlot,
    accuracy_table,
    format_table,
    image_sizes,
    most_confused_pairs,
    plot_augmentations,
    plot_class_counts,
    plot_confusion_matrix,
    plot_histories,
    plot_image_sizes,
    plot_test_accuracies,
    plot_top_classes,
    raw_image,
)
from tests.conftest import exif_rotated_jpeg
from tests.test_convolution import assert_titled


# ----------------------------------------------------------------------------------------------------------------------
# The data


def test_plot_class_counts(landmark_data):
    loaders = get_data_loaders(batch_size=4, num_workers=0, image_size=32)
    fig = plot_class_counts(loaders)
    ax = fig.axes[0]
    assert_titled(fig)
    assert ax.get_xlabel() and ax.get_ylabel()
    heights = [bar.get_height() for bar in ax.patches]
    assert len(heights) == 3 and sum(heights) == len(loaders["train"].dataset)


def test_image_sizes_apply_exif_rotation(tmp_path):
    exif_rotated_jpeg(tmp_path / "rotated.jpg", width=80, height=40)
    np.testing.assert_array_equal(image_sizes([tmp_path / "rotated.jpg"]), [[40, 80]])
    fig = plot_image_sizes(np.array([[40, 80], [100, 50]]))
    assert_titled(fig)
    assert fig.axes[0].get_xlabel() == "width (px)" and fig.axes[0].get_ylabel() == "height (px)"


def test_plot_augmentations_shows_the_original_and_n_versions():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    mean, std = torch.tensor([0.5] * 3), torch.tensor([0.25] * 3)
    transform = get_transforms("landmarks", mean, std, image_size=32)["train"]
    fig = plot_augmentations(image, transform, mean, std, n=3)
    assert_titled(fig)
    assert [ax.get_title() for ax in fig.axes] == ["original 60x40", "augmented #1", "augmented #2", "augmented #3"]
    assert fig.axes[1].images[0].get_array().shape == (32, 32, 3)


def test_raw_image_is_the_untransformed_file(landmark_data):
    loaders = get_data_loaders(batch_size=4, num_workers=0, image_size=32)
    image, label = raw_image(loaders["train"], 0)
    subset = loaders["train"].dataset
    path, expected_label = subset.dataset.samples[subset.indices[0]]
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert label == expected_label and image.size == Image.open(path).size
    assert subset[0][0].shape == (3, 32, 32)  # the loader's own dataset keeps its transform


def test_plot_histories_one_curve_per_model():
    histories = {"MLP": {"valid_accuracy": [0.1, 0.2]}, "CNN": {"valid_accuracy": [0.3, 0.5]}}
    fig = plot_histories(histories)
    ax = fig.axes[0]
    assert ax.get_title() == "Validation accuracy per epoch" and ax.get_xlabel() == "epoch"
    assert ax.get_ylabel() == "validation accuracy (%)"
    assert [line.get_label() for line in ax.lines] == ["MLP", "CNN"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [30, 50])


def test_plot_histories_of_consecutive_stages_draws_each_after_the_previous_one_and_skips_empty_ones():
    frozen = {"valid_loss": [1.0, 0.8], "valid_accuracy": [0.5, 0.6]}
    tuned = {"valid_loss": [0.7, 0.65, 0.6], "valid_accuracy": [0.7, 0.75, 0.8]}
    fig = plot_histories({"frozen": frozen, "skipped": None, "fine-tuned": tuned}, ("valid_loss", "valid_accuracy"), True)
    loss_ax, accuracy_ax = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["Validation loss per epoch", "Validation accuracy per epoch"]
    for ax in fig.axes:
        assert [line.get_label() for line in ax.lines] == ["frozen", "fine-tuned"]
        assert [list(line.get_xdata()) for line in ax.lines] == [[1, 2], [3, 4, 5]]
    np.testing.assert_allclose(accuracy_ax.lines[1].get_ydata(), [70, 75, 80])
    np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), [1.0, 0.8])
    plt.close(fig)
    empty = plot_histories({"skipped": None}, ("valid_loss", "valid_accuracy"), consecutive=True)  # nothing to draw: no lines, and no legend (which would warn)
    assert not empty.axes[0].lines and empty.axes[0].get_legend() is None
    plt.close(empty)


def test_plot_histories_draws_validation_loss_accuracy_and_learning_rate_per_run():
    histories = {"plateau": {"valid_loss": [0.9, 0.6], "valid_accuracy": [0.5, 0.75], "lr": [2e-3, 2e-3]},
                 "cosine": {"valid_loss": [0.8, 0.5], "valid_accuracy": [0.6, 0.8], "lr": [1e-3, 2e-3]}}  # fmt: skip
    loss_ax, accuracy_ax, lr_ax = plot_histories(histories, ("valid_loss", "valid_accuracy", "lr")).axes
    assert [ax.get_title() for ax in (loss_ax, accuracy_ax, lr_ax)] == [
        "Validation loss per epoch", "Validation accuracy per epoch", "Learning rate per epoch"]  # fmt: skip
    assert lr_ax.get_ylabel() == "learning rate"
    for ax in (loss_ax, accuracy_ax, lr_ax):
        assert [line.get_label() for line in ax.lines] == ["plateau", "cosine"]
    assert list(accuracy_ax.lines[1].get_ydata()) == pytest.approx([60, 80])
    assert list(lr_ax.lines[1].get_ydata()) == pytest.approx([1e-3, 2e-3])


# ----------------------------------------------------------------------------------------------------------------------
# Fine-tuning


def test_format_table_aligns_columns():
    text = format_table([{"name": "a", "n": 1}, {"name": "bcd", "n": 1234}])
    assert text.splitlines() == ["name     n", "   a     1", " bcd  1234"]


def test_live_plot_draws_train_and_valid_loss_and_accuracy_like_plot_histories():
    plot = LivePlot()
    assert plot.handle is None, "outside a notebook nothing is displayed"
    history = {"train_loss": [2.0, 1.5], "valid_loss": [1.8, 1.6], "train_accuracy": [0.2, 0.4],
               "valid_accuracy": [0.25, 0.5]}  # fmt: skip
    plot.update(history)
    plot.update(history)  # redraws in place: still one line per split
    assert [ax.get_title() for ax in (plot.loss_ax, plot.acc_ax)] == ["Loss per epoch", "Accuracy per epoch"]
    assert [line.get_label() for line in plot.loss_ax.lines] == ["train", "valid"]
    np.testing.assert_allclose(plot.loss_ax.lines[1].get_ydata(), [1.8, 1.6])
    np.testing.assert_allclose(plot.acc_ax.lines[1].get_ydata(), [25, 50])  # in percent, as in plot_histories
    assert plot.acc_ax.get_ylabel() == "accuracy (%)"
    plot.close()
    assert not plt.fignum_exists(plot.fig.number)


def test_plot_top_classes_puts_the_most_likely_class_on_top():
    photo = torch.rand(3, 20, 30)
    fig = plot_top_classes(photo, "a photo", ["palace", "tower", "cliff"], [0.6, 0.3, 0.1], "Top-3 classes")
    photo_ax, bar_ax = fig.axes
    assert photo_ax.get_title() == "a photo" and bar_ax.get_title() == "Top-3 classes"
    assert photo_ax.images[0].get_array().shape == (20, 30, 3)
    bars = sorted(bar_ax.patches, key=lambda bar: bar.get_y(), reverse=True)  # top to bottom
    assert [bar.get_width() for bar in bars] == pytest.approx([0.6, 0.3, 0.1])
    assert [tick.get_text() for tick in bar_ax.get_yticklabels()][::-1] == ["palace", "tower", "cliff"]


def test_test_accuracies_as_a_table_and_as_bars_in_percent():
    accuracies = {"Transfer": 0.8125, "From scratch": 0.5}
    assert accuracy_table(accuracies, 16).splitlines() == [
        "       model  test accuracy (16 photos)",
        "    Transfer                      81.2%",
        "From scratch                      50.0%",
    ]
    fig = plot_test_accuracies(accuracies, 16)
    ax = fig.axes[0]
    assert "16 test photos" in ax.get_title() and ax.get_xlabel() == "test accuracy (%)"
    assert [bar.get_width() for bar in ax.patches] == pytest.approx([81.25, 50])
    assert [text.get_text() for text in ax.texts] == ["81.2%", "50.0%"]
    assert ax.yaxis_inverted(), "the first model is on top"


def test_most_confused_pairs_lists_the_largest_mistakes_first():
    confusion = np.array([[5, 3, 0], [1, 7, 0], [0, 4, 2]])
    assert most_confused_pairs(confusion, ["A", "B", "C"], k=5) == [("C", "B", 4), ("A", "B", 3), ("B", "A", 1)]


def test_the_confusion_matrix_plot_is_titled_and_labelled():
    fig = plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["Eiffel Tower", "Atomium"])
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() == "predicted landmark" and ax.get_ylabel() == "true landmark"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Eiffel Tower", "Atomium"]
    plt.close(fig)
