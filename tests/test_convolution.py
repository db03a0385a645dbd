"""Specification of src/convolution.py: convolution arithmetic, hand-made filters, learned filters, feature maps."""

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn as nn

from src.convolution import (
    apply_filters,
    classic_kernels,
    conv_layer_table,
    conv_output_size,
    feature_maps,
    first_conv,
    first_layer_filters,
    macs_per_stage,
    plot_feature_maps,
)
from src.model import MyModel
from src.transfer import build_model


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
    assert [(row["layer"], row["type"]) for row in rows] == [
        ("stem.0.0", "Conv2d"), ("stem.1.0", "Conv2d"), ("stem.2", "MaxPool2d"),
        ("stages.0.0.conv1", "Conv2d"), ("stages.0.0.conv2", "Conv2d"),
    ]  # fmt: skip
    assert [row["i"] for row in rows] == [64, 32, 32, 16, 16]  # the stem halves twice (stride-2 conv, then max-pool)
    for row in rows:
        assert row["o (formula)"] == row["o (real)"]
        assert row["params (formula)"] == row["params (real)"]
    assert rows[2]["params (real)"] == 0 and rows[2]["c_in"] == rows[2]["c_out"] == 8  # pooling: no weights
    assert model.training  # the forward pass ran in eval mode, and the mode was restored
    # whole model: 2 stem convs + the max-pool + 2 x 2 block convs + 1 projection shortcut (global pooling is adaptive)
    assert len(conv_layer_table(model, 64)) == 8


def test_conv_layer_table_counts_a_bias_and_pools_of_both_kinds():
    model = nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, kernel_size=3),
        nn.AvgPool2d(2),
    )  # fmt: skip
    rows = conv_layer_table(model, 8)
    assert [row["type"] for row in rows] == ["Conv2d", "MaxPool2d", "Conv2d", "AvgPool2d"]
    assert [row["o (real)"] for row in rows] == [8, 4, 2, 1]  # "same" padding keeps 8 px, "valid" loses k - 1 = 2
    assert [row["params (formula)"] for row in rows] == [8 * (3 * 9 + 1), 0, 4 * (8 * 9 + 1), 0]  # the +1: a bias
    assert all(row["params (formula)"] == row["params (real)"] for row in rows)
    assert all(row["o (formula)"] == row["o (real)"] for row in rows)


# ----------------------------------------------------------------------------------------------------------------------
# Hand-made filters


def test_classic_kernels_are_two_sobel_edges_a_blur_and_a_sharpen():
    kernels = classic_kernels()
    assert list(kernels) == ["vertical edges", "horizontal edges", "blur", "sharpen"]
    assert all(k.shape == (3, 3) for k in kernels.values())
    assert kernels["blur"].sum() == pytest.approx(1) and kernels["sharpen"].sum() == pytest.approx(1)


def test_apply_filters_shape_and_edge_directions():
    image = torch.zeros(3, 20, 30)
    image[:, :, 15:] = 1.0  # dark left half, bright right half: one vertical edge
    kernels = classic_kernels()
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


def test_macs_per_stage_counts_every_convolution_once_per_output_value():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 1))
    assert macs_per_stage(model, 8) == {"0": 8 * 8 * 4 * (3 * 3 * 3), "1": 8 * 8 * 2 * 4}


def test_mymodels_stages_each_cost_about_as_much_as_its_stem_at_224_px():
    costs = macs_per_stage(MyModel(num_classes=50), 224)
    assert list(costs) == ["stem", "stages.0", "stages.1", "stages.2", "stages.3"]
    assert max(costs.values()) < 1.3 * min(costs.values()), costs  # 126, 116, 103, 103, 103 million


def test_mymodel_at_64_px_costs_about_as_much_per_image_as_at_224_px():
    """cnn_from_scratch.ipynb says so of its MLP-vs-CNN experiment: at 64 px build_model keeps the stem at stride 1, so
    the stages run on 64 x 64 instead of 56 x 56 pixels (595 against 550 million MACs)."""
    small, photo = (sum(macs_per_stage(build_model("scratch", 50, size), size).values()) for size in (64, 224))
    assert build_model("scratch", 50, 64).stem[0][0].stride == (1, 1)
    assert (round(small / 1e6), round(photo / 1e6)) == (595, 550)


def test_a_map_with_negative_values_is_drawn_with_0_as_mid_gray():
    maps = torch.stack([torch.tensor([[-1.0, 3.0]]), torch.tensor([[0.5, 2.0]])])
    fig = plot_feature_maps(maps)
    edge, positive = (ax.images[0] for ax in fig.axes[:2])
    assert edge.norm.vmin == -3.0 and edge.norm.vmax == 3.0
    assert positive.norm.vmin == 0.0 and positive.norm.vmax == 2.0
