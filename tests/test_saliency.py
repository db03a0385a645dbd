"""Specification of src/saliency.py: effective receptive fields, Grad-CAM, and the predictions it explains."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from src.saliency import (
    correct_and_wrong,
    effective_receptive_field,
    erf_radius,
    explain_predictions,
    grad_cam,
    plot_grad_cam,
    plot_receptive_fields,
    theoretical_receptive_field,
)
from src.model import MyModel
from tests.test_convolution import assert_titled, small_model


# ----------------------------------------------------------------------------------------------------------------------
# Theoretical receptive field


@pytest.mark.parametrize(
    "layers, expected",
    [
        ([nn.Conv2d(1, 1, 3)], 3),
        ([nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)], 5),  # 3 + (3 - 1) * 1
        ([nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3)], 7),  # 3 + (3 - 1) * 2: the stride doubles the step
        ([nn.Conv2d(1, 1, 3), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3)], 8),  # 3, 3 + 1 * 1 = 4, 4 + 2 * 2
        ([nn.AvgPool2d(2), nn.AvgPool2d(2)], 4),  # 2, 2 + 1 * 2
        ([nn.Conv2d(1, 1, 3, dilation=2)], 5),  # a dilated 3x3 spans 5 px
        ([nn.Conv2d(1, 1, 5, padding=2), nn.ReLU(), nn.BatchNorm2d(1)], 5),  # padding and other layers change nothing
    ],
)
def test_theoretical_receptive_field_of_small_nets(layers, expected):
    assert theoretical_receptive_field(nn.Sequential(*layers)) == expected


@pytest.mark.parametrize(
    "layers",
    [
        [nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)],
        [nn.Conv2d(1, 1, 3, stride=2), nn.AvgPool2d(2), nn.Conv2d(1, 1, 5), nn.Conv2d(1, 1, 3, stride=2, dilation=2)],
    ],
)
def test_theoretical_receptive_field_is_what_the_gradient_reaches_in_a_linear_net(layers):
    net = nn.Sequential(*layers)
    for module in net:
        if isinstance(module, nn.Conv2d):
            nn.init.ones_(module.weight)  # all-positive weights and no ReLU: every path adds, none cancels
    image = torch.zeros(1, 1, 64, 64, requires_grad=True)
    output = net(image)
    output[0, 0, output.shape[2] // 2, output.shape[3] // 2].backward()
    rows, columns = torch.nonzero(image.grad[0, 0], as_tuple=True)
    reached = theoretical_receptive_field(net)
    assert rows.max() - rows.min() + 1 == columns.max() - columns.min() + 1 == reached


def test_theoretical_receptive_field_of_mymodel_skips_the_shortcuts():
    assert theoretical_receptive_field(small_model()) == 49
    # for 224 px: stem 3, 7, then the max-pool 9 at a step of 4 px; stage 0 adds 4 convs of 3x3 at that step; each later
    # stage one at the previous step (its stride-2 conv1), then 3 at the doubled step
    stages = 4 * 2 * 4 + (2 * 4 + 3 * 2 * 8) + (2 * 8 + 3 * 2 * 16) + (2 * 16 + 3 * 2 * 32)
    assert theoretical_receptive_field(MyModel(num_classes=50)) == 9 + stages == 433
    # the 1x1 stride-2 shortcuts run beside the main branch: counted in a chain, they would double the step again
    assert theoretical_receptive_field(MyModel(num_classes=50), parallel=()) > 433


# ----------------------------------------------------------------------------------------------------------------------
# Effective receptive field


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
    rows, columns = torch.nonzero(erf, as_tuple=True)  # the effective field lies within the theoretical one
    assert max(rows.max() - rows.min(), columns.max() - columns.min()) + 1 <= theoretical_receptive_field(model)


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


def red_or_green_photos() -> list[tuple[torch.Tensor, int]]:
    """Six (image, label) pairs: TwoPatchModel predicts class 0 for the red photos, class 1 for the green ones; the
    labels make photos 0-3 right and photos 4-5 wrong."""
    red, green = two_patch_images(1)[0], two_patch_images(1)[0]
    red[1] = 0  # only the red patch: class 0
    green[0] = 0  # only the green patch: class 1
    return [(red, 0), (green, 1), (red, 0), (green, 1), (red, 1), (green, 0)]


def test_correct_and_wrong_picks_right_predictions_first_then_wrong_ones():
    model = TwoPatchModel().train()
    examples = correct_and_wrong(model, red_or_green_photos(), n_each=2)
    assert len(examples) == 4
    assert [predicted == label for _, label, predicted in examples] == [True, True, False, False]
    assert all(isinstance(label, int) and isinstance(predicted, int) for _, label, predicted in examples)
    assert model.training, "the model's mode is restored"


def test_correct_and_wrong_returns_fewer_when_the_dataset_has_fewer():
    examples = correct_and_wrong(TwoPatchModel(), red_or_green_photos(), n_each=3)
    assert [predicted == label for _, label, predicted in examples] == [True] * 3 + [False] * 2


def test_correct_and_wrong_depends_only_on_the_seed():
    photos = red_or_green_photos()
    first = [(label, predicted) for _, label, predicted in correct_and_wrong(TwoPatchModel(), photos, 1, seed=3)]
    again = [(label, predicted) for _, label, predicted in correct_and_wrong(TwoPatchModel(), photos, 1, seed=3)]
    assert first == again


def test_explain_predictions_titles_right_and_wrong_and_explains_the_predicted_class():
    model = TwoPatchModel()
    photos = red_or_green_photos()
    examples = [(photos[0][0], 0, 0), (photos[4][0], 1, 0)]  # both red photos, predicted "red"; the second is wrong
    mean, std = torch.zeros(3), torch.ones(3)
    fig = explain_predictions(model, examples, model.features, ["red", "green"], mean, std)
    assert [ax.get_title() for ax in fig.axes] == ["✓ red", "✗ red\n(true: green)"]
    heat = fig.axes[1].images[1].get_array()  # the heat map over the second photo: on the red patch, the evidence
    assert quadrant_shares(torch.as_tensor(np.asarray(heat)))[0] > 0.95
