"""Specification of src/visualize.py: convolution arithmetic, filters, feature maps, receptive fields, Grad-CAM."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from src.data import get_data_loaders, get_transforms
from src.model import MyModel
from src.visualize import (
    apply_filters,
    conv_layer_table,
    conv_output_size,
    effective_receptive_field,
    erf_radius,
    feature_maps,
    first_conv,
    first_layer_filters,
    format_table,
    grad_cam,
    image_sizes,
    plot_augmentations,
    plot_class_counts,
    plot_feature_maps,
    plot_grad_cam,
    plot_histories,
    plot_image_sizes,
    plot_receptive_fields,
    raw_image,
    sobel_kernels,
)
from tests.conftest import exif_rotated_jpeg

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def assert_titled(fig: plt.Figure) -> None:
    assert fig.get_suptitle() or any(ax.get_title() for ax in fig.axes), "figure has no title"


def small_model() -> MyModel:
    torch.manual_seed(0)
    model = MyModel(num_classes=3, dropout=0.3, widths=(8, 16), blocks_per_stage=(1, 1))
    for module in model.modules():  # switch the zero-initialized residual branches on
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
    return model


# ----------------------------------------------------------------------------------------------------------------------
# Convolution arithmetic


@pytest.mark.parametrize(
    "i, k, s, p",
    [(224, 3, 1, 1), (224, 3, 2, 1), (28, 5, 1, 0), (57, 3, 2, 1), (32, 7, 3, 2), (10, 1, 2, 0), (5, 5, 1, 0)],
)
def test_conv_output_size_matches_nn_conv2d(i, k, s, p):
    conv = nn.Conv2d(1, 1, kernel_size=k, stride=s, padding=p)
    assert conv_output_size(i, k, s, p) == conv(torch.zeros(1, 1, i, i)).shape[-1]


def test_conv_layer_table_formulas_agree_with_the_real_layers():
    model = small_model().train()
    rows = conv_layer_table(model, 64, within=[model.stem, model.stages[0]])
    assert [row["layer"] for row in rows] == [
        "stem.0.0", "stem.1.0", "stages.0.0.conv1", "stages.0.0.conv2"
    ]  # fmt: skip
    assert [row["i"] for row in rows] == [64, 32, 16, 16]  # the stem halves twice (stride-2 conv, then max-pool)
    for row in rows:
        assert row["o (formula)"] == row["o (real)"]
        assert row["params (formula)"] == row["params (real)"]
    assert model.training  # the forward pass ran in eval mode, and the mode was restored
    assert len(conv_layer_table(model, 64)) == 7  # whole model: 2 stem + 2 x 2 block convs + 1 projection shortcut


def test_format_table_aligns_columns():
    text = format_table([{"name": "a", "n": 1}, {"name": "bcd", "n": 1234}])
    assert text.splitlines() == ["name     n", "   a     1", " bcd  1234"]


# ----------------------------------------------------------------------------------------------------------------------
# Hand-made filters


def test_sobel_kernels():
    kernels = sobel_kernels()
    assert list(kernels) == ["vertical edges", "horizontal edges", "blur", "sharpen"]
    assert all(k.shape == (3, 3) for k in kernels.values())
    assert kernels["blur"].sum() == pytest.approx(1) and kernels["sharpen"].sum() == pytest.approx(1)


def test_apply_filters_shape_and_edge_directions():
    image = torch.zeros(3, 20, 30)
    image[:, :, 15:] = 1.0  # dark left half, bright right half: one vertical edge
    kernels = sobel_kernels()
    maps = apply_filters(image, torch.stack(list(kernels.values())))
    assert maps.shape == (4, 18, 28)  # no padding: o = i - k + 1
    vertical, horizontal, blur, _ = maps
    assert vertical.abs().max() == pytest.approx(4.0)  # (1 + 2 + 1) * brightness step of 1
    assert vertical[:, 13:15].abs().min() == pytest.approx(4.0)  # along the whole edge...
    assert vertical[:, :12].abs().max() == 0 and vertical[:, 16:].abs().max() == 0  # ...and nowhere else
    assert horizontal.abs().max() == pytest.approx(0, abs=1e-6)
    assert blur.min() >= 0 and blur.max() == pytest.approx(1.0)


def test_apply_filters_uses_luminance():
    green = torch.zeros(3, 5, 5)
    green[1] = 1.0
    identity = torch.zeros(1, 3, 3)
    identity[0, 1, 1] = 1.0
    assert torch.allclose(apply_filters(green, identity), torch.full((1, 3, 3), 0.587))


def test_plot_feature_maps_grid_and_titles():
    fig = plot_feature_maps(torch.rand(10, 6, 6), suptitle="Ten maps", columns=4)
    assert fig.get_suptitle() == "Ten maps"
    assert len(fig.axes) == 12  # 3 rows of 4, two of them empty
    assert [ax.get_title() for ax in fig.axes[:2]] == ["channel 0", "channel 1"]
    fig = plot_feature_maps(torch.rand(2, 6, 6), ["a", "b"], "Two maps")
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]


# ----------------------------------------------------------------------------------------------------------------------
# What the CNN learned


def test_first_layer_filters_finds_the_first_conv_anywhere():
    model = nn.Sequential(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 6, 5)), nn.Conv2d(6, 2, 3))
    assert first_conv(model) is model[0][1]
    fig = first_layer_filters(model, columns=4)
    assert_titled(fig)
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(images) == 6 and images[0].shape == (5, 5, 3)
    for image in images:  # each filter min-max scaled on its own
        assert image.min() == pytest.approx(0) and image.max() == pytest.approx(1)


def test_first_layer_filters_of_my_model():
    model = small_model()
    fig = first_layer_filters(model)
    assert sum(1 for ax in fig.axes if ax.images) == model.stem[0][0].out_channels == 8
    assert "3x3x3" in fig.get_suptitle()


def test_first_layer_filters_needs_rgb_input():
    with pytest.raises(ValueError, match="1 input channels"):
        first_layer_filters(nn.Conv2d(1, 4, 3))


def test_feature_maps_equal_the_layer_output_of_a_forward_pass():
    model = small_model().train()
    image = torch.randn(1, 3, 64, 64)
    maps = feature_maps(model, image, model.stem)
    model.eval()
    with torch.no_grad():
        expected = model.stem(image)[0]
    assert maps.shape == expected.shape == (8, 16, 16)
    assert torch.allclose(maps, expected)


def test_feature_maps_restore_training_mode():
    model = small_model().train()
    feature_maps(model, torch.randn(1, 3, 32, 32), model.stages[0])
    assert model.training


def test_effective_receptive_field_is_centred_and_finite():
    model = small_model()
    erf = effective_receptive_field(model, image_size=64, n_inputs=4)
    assert erf.shape == (64, 64)
    assert erf.max() == pytest.approx(1.0) and erf.min() >= 0
    peak = torch.nonzero(erf == erf.max())[0]
    assert (peak - 32).abs().max() <= 8  # the centre of an 8x8 map sits at input pixel ~32 (stride 8)
    # theoretical receptive field of that small model: 49 px, so the corners cannot influence the centre
    for corner in (erf[:6, :6], erf[:6, -6:], erf[-6:, :6], erf[-6:, -6:]):
        assert corner.max() < 1e-6
    # most of the gradient lies within 16 px of the centre: Gaussian-like, not uniform over the field
    assert erf[16:48, 16:48].sum() > 0.8 * erf.sum()


def test_effective_receptive_field_of_a_chosen_layer_is_smaller():
    model = small_model()
    shallow = effective_receptive_field(model, image_size=64, layer=model.stem)
    deep = effective_receptive_field(model, image_size=64)
    assert erf_radius(shallow) < erf_radius(deep)
    assert (shallow > 0).sum() < (deep > 0).sum()


def test_erf_radius_of_a_point_and_a_square():
    point = torch.zeros(9, 9)
    point[4, 4] = 1
    assert erf_radius(point) == 0
    square = torch.zeros(9, 9)
    square[[3, 3, 5, 5], [3, 5, 3, 5]] = 1  # four pixels at distance sqrt(2) from the centre
    assert erf_radius(square) == pytest.approx(2**0.5)


def test_plot_receptive_fields_labels_each_panel():
    model = small_model()
    erfs = {"untrained": effective_receptive_field(model, 32, n_inputs=2), "trained": torch.rand(32, 32)}
    fig = plot_receptive_fields(erfs)
    assert_titled(fig)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title().split(" (")[0] for ax in panels] == ["untrained", "trained"]
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in panels)


def test_plot_receptive_fields_zooms_on_the_fields_in_input_pixels():
    small, large = torch.zeros(100, 100), torch.zeros(100, 100)
    small[40, 40] = 1.0
    large[36:45, 36:45] = 0.5
    large[40, 40] = 1.0
    fig = plot_receptive_fields({"small": small, "large": large})
    for ax in (ax for ax in fig.axes if ax.images):
        (left, right), (bottom, top) = ax.get_xlim(), ax.get_ylim()
        assert left <= 36 and right >= 44 and top <= 36 and bottom >= 44  # both fields fully visible...
        assert right - left < 40 and bottom - top < 40  # ...in a window much smaller than the image
    assert "100x100" in fig.get_suptitle()


# ----------------------------------------------------------------------------------------------------------------------
# Grad-CAM


class TwoPatchModel(nn.Module):
    """Class 0 = how red the top-left quadrant is, class 1 = how green the bottom-right quadrant is.

    features: a stride-2 conv that copies R and G into channels 0 and 1 (averaged over 2x2 pixels).
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 2, kernel_size=2, stride=2, bias=False)
        self.features.weight.data.zero_()
        self.features.weight.data[0, 0] = 0.25
        self.features.weight.data[1, 1] = 0.25

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        h, w = f.shape[-2] // 2, f.shape[-1] // 2
        return torch.stack([f[:, 0, :h, :w].mean(dim=(1, 2)), f[:, 1, h:, w:].mean(dim=(1, 2))], dim=1)


def two_patch_images(n: int = 2) -> torch.Tensor:
    """[n,3,32,32]: a red square in the top-left quadrant, a green one in the bottom-right."""
    images = torch.zeros(n, 3, 32, 32)
    images[:, 0, 4:12, 4:12] = 1.0
    images[:, 1, 20:28, 20:28] = 1.0
    return images


def quadrant_shares(heatmap: torch.Tensor) -> tuple[float, float]:
    """(share of the heat in the top-left quadrant, share in the bottom-right)."""
    total = heatmap.sum()
    return float(heatmap[:16, :16].sum() / total), float(heatmap[16:, 16:].sum() / total)


def test_grad_cam_highlights_the_region_the_class_depends_on():
    model = TwoPatchModel()
    heatmaps = grad_cam(model, two_patch_images(), model.features, class_index=[0, 1])
    assert heatmaps.shape == (2, 32, 32)  # upsampled from the 16x16 feature map
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    assert heatmaps[0].max() == pytest.approx(1) and heatmaps[1].max() == pytest.approx(1)
    top_left, bottom_right = quadrant_shares(heatmaps[0])
    assert top_left > 0.95 and bottom_right < 0.01
    top_left, bottom_right = quadrant_shares(heatmaps[1])
    assert bottom_right > 0.95 and top_left < 0.01


def test_grad_cam_explains_the_predicted_class_by_default():
    model = TwoPatchModel()
    images = two_patch_images(1)
    images[:, 1] *= 2  # greener: class 1 wins
    assert model(images).argmax().item() == 1
    explained = grad_cam(model, images, model.features)
    assert torch.allclose(explained, grad_cam(model, images, model.features, class_index=[1]))


def test_grad_cam_works_with_a_frozen_model_and_leaves_it_untouched():
    model = small_model().train()
    model.requires_grad_(False)  # like a frozen transfer-learning backbone
    heatmaps = grad_cam(model, torch.randn(3, 3, 48, 48), model.stages[-1], class_index=[0, 1, 2])
    assert heatmaps.shape == (3, 48, 48)
    assert torch.isfinite(heatmaps).all() and heatmaps.min() >= 0 and heatmaps.max() <= 1
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_grad_cam_inside_no_grad():
    model = TwoPatchModel()
    with torch.no_grad():
        heatmaps = grad_cam(model, two_patch_images(1), model.features, [0])
    assert quadrant_shares(heatmaps[0])[0] > 0.95


def test_grad_cam_is_all_zero_when_nothing_supports_the_class():
    model = TwoPatchModel()
    heatmaps = grad_cam(model, torch.zeros(1, 3, 32, 32), model.features, [0])
    assert torch.equal(heatmaps, torch.zeros(1, 32, 32))


def test_plot_grad_cam_overlays_heat_on_each_image():
    images = two_patch_images(2)
    fig = plot_grad_cam(images, torch.rand(2, 32, 32), ["red patch", "green patch"])
    assert_titled(fig)
    assert [ax.get_title() for ax in fig.axes] == ["red patch", "green patch"]
    assert all(len(ax.images) == 2 for ax in fig.axes)


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
