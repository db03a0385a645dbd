"""Specification of src/model.py: shapes, parameter counts, head, init, TorchScript, gradients."""

import pytest
import torch
import torch.nn as nn

from src.model import BasicBlock, MLPBaseline, MyModel, PlainCNN, conv_parameter_count, count_parameters


@pytest.fixture(autouse=True)
def seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------- output shapes


@pytest.mark.parametrize(
    "stem_stride, size",
    [
        (4, 224),  # landmark photos
        (4, 32),   # the default stem still works on tiny images (GAP makes the model size-agnostic)
        (1, 28),   # Fashion-MNIST-sized images, no early downsampling
        (2, 64),
    ],
)
def test_output_shape(stem_stride: int, size: int) -> None:
    model = MyModel(num_classes=23, dropout=0.3, stem_stride=stem_stride).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 23)


@pytest.mark.parametrize("stem_stride", [0, 3, 8])
def test_invalid_stem_stride_raises(stem_stride: int) -> None:
    with pytest.raises(ValueError, match="stem_stride must be 1, 2 or 4"):
        MyModel(stem_stride=stem_stride)


# ---------------------------------------------------------------- parameter counts


def test_conv_parameter_count_formula() -> None:
    # n_p = n_k * (c * k^2 + 1): 16 filters, each 3*3*3 = 27 weights + 1 bias
    assert conv_parameter_count(3, 16, 3) == 16 * (3 * 3**2 + 1) == 448
    assert conv_parameter_count(3, 16, 3, bias=False) == 432
    assert conv_parameter_count(32, 64, 1, bias=False) == 2048


def test_every_conv_matches_the_course_formula() -> None:
    convs = [m for m in MyModel().modules() if isinstance(m, nn.Conv2d)]
    # 2 stem convs + 8 blocks * 2 convs + 3 projection shortcuts
    assert len(convs) == 21
    for conv in convs:
        expected = conv_parameter_count(
            conv.in_channels, conv.out_channels, conv.kernel_size[0], bias=conv.bias is not None
        )
        assert sum(p.numel() for p in conv.parameters()) == expected, conv


def test_total_parameter_count_is_pinned() -> None:
    # These numbers exist to catch accidental architecture changes: if you change the model
    # on purpose, recompute them with count_parameters and update them here.
    assert count_parameters(MyModel()) == 3_061_320
    assert count_parameters(MyModel(num_classes=50)) == 2_817_170


def test_the_number_of_classes_changes_only_the_final_linear_layer() -> None:
    big, small = MyModel(num_classes=1000), MyModel(num_classes=50)
    changed = [name for name, p in big.state_dict().items() if p.shape != small.state_dict()[name].shape]
    assert changed == ["head.3.weight", "head.3.bias"]
    assert count_parameters(big) - count_parameters(small) == 257 * (1000 - 50)  # 256 weights + 1 bias per class


def test_count_parameters_trainable_only() -> None:
    model = MyModel(num_classes=50)
    for p in model.stem.parameters():
        p.requires_grad_(False)
    frozen = sum(p.numel() for p in model.stem.parameters())
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - frozen


# ---------------------------------------------------------------- head


def test_head_has_dropout_and_no_softmax() -> None:
    model = MyModel(num_classes=23, dropout=0.3).eval()
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 1 and dropouts[0].p == 0.3
    assert not any(isinstance(m, (nn.Softmax, nn.LogSoftmax)) for m in model.modules())

    # raw logits: the loss (nn.CrossEntropyLoss) applies the softmax
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert not torch.allclose(out.sum(dim=1), torch.ones(2))


# ---------------------------------------------------------------- initialization


def test_residual_blocks_start_as_identity() -> None:
    # bn2 gamma is zero-initialized, so the residual branch outputs 0 and a block with an
    # identity shortcut computes relu(x)
    blocks = [m for m in MyModel().modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8
    for block in blocks:
        assert torch.all(block.bn2.weight == 0)
        if isinstance(block.shortcut, nn.Identity):
            x = torch.randn(2, block.conv1.in_channels, 8, 8)
            assert torch.equal(block(x), torch.relu(x))


# ---------------------------------------------------------------- TorchScript


# any category: a FutureWarning in torch 2.14, a DeprecationWarning in 2.11
@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*deprecated")
def test_torchscript_matches_eager() -> None:
    model = MyModel(num_classes=50).eval()
    # give every BatchNorm non-trivial statistics and gamma, so the residual branches
    # (zero at init) take part in the comparison
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    scripted = torch.jit.script(model)

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        diff = (scripted(x) - model(x)).abs().max().item()
    assert diff <= 1e-5


# ---------------------------------------------------------------- training


def test_backward_reaches_every_parameter() -> None:
    model = MyModel(num_classes=10, dropout=0.5).train()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    nn.functional.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # the zero-initialized gammas get a gradient, so the residual branches switch on after a step
    for block in (m for m in model.modules() if isinstance(m, BasicBlock)):
        assert block.bn2.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- MLP baseline


def test_mlp_baseline_shape_and_parameter_count() -> None:
    model = MLPBaseline(num_classes=7, image_size=16, hidden=(32, 8), dropout=0.2).eval()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)
    # one weight per input value and output unit, plus one bias per output unit, for each Linear layer
    assert count_parameters(model) == (3 * 16 * 16 + 1) * 32 + (32 + 1) * 8 + (8 + 1) * 7
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 2 and all(d.p == 0.2 for d in dropouts)


def test_mlp_baseline_has_no_hidden_layer_when_hidden_is_empty() -> None:
    model = MLPBaseline(num_classes=3, image_size=8, hidden=())
    assert [type(m) for m in model.layers] == [nn.Flatten, nn.Linear]
    assert count_parameters(model) == (3 * 8 * 8 + 1) * 3


def test_mlp_baseline_rejects_the_wrong_image_size() -> None:
    with pytest.raises(ValueError, match=r"expects images \[B, 3, 16, 16\]"):
        MLPBaseline(num_classes=3, image_size=16)(torch.randn(1, 3, 32, 32))


def test_mlp_baseline_needs_more_parameters_than_the_cnn_for_photos() -> None:
    # The course's point: at 64x64 px one small hidden layer already outweighs the whole CNN.
    assert count_parameters(MLPBaseline(50, 64, hidden=(512,))) > count_parameters(MyModel(num_classes=50))


# ---------------------------------------------------------------- plain CNN (the ablation)


def test_plain_cnn_is_conv_relu_pool_blocks_then_one_linear_layer() -> None:
    model = PlainCNN(num_classes=10, image_size=28, dropout=0.3).eval()
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 10)
    assert [type(m) for m in model.features] == [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * 3
    assert [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)] == [16, 32, 64]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "no BatchNorm: that is MyModel's"
    assert [type(m) for m in model.head] == [nn.Flatten, nn.Dropout, nn.Linear] and model.head[1].p == 0.3
    # three convolutions with biases, then 64 channels x 3 x 3 (28 -> 14 -> 7 -> 3 px) into the linear layer
    convs = conv_parameter_count(3, 16, 3) + conv_parameter_count(16, 32, 3) + conv_parameter_count(32, 64, 3)
    assert count_parameters(model) == convs + (64 * 3 * 3 + 1) * 10


def test_plain_cnn_linear_layer_grows_with_the_square_of_the_image_side() -> None:
    # one pool: 64 px -> 8 channels x 32 x 32 features, 128 px -> 8 x 64 x 64, each with a weight per class
    small, large = PlainCNN(50, 64, widths=(8,)), PlainCNN(50, 128, widths=(8,))
    assert count_parameters(large) - count_parameters(small) == 8 * (64**2 - 32**2) * 50


def test_plain_cnn_refuses_images_too_small_for_its_pools() -> None:
    with pytest.raises(ValueError, match="3 max-pools need images of at least 8 px, got 7"):
        PlainCNN(num_classes=3, image_size=7)
