"""A compact ResNet-18-style CNN trained from scratch.

    image [B, 3, H, W]
      -> stem:   2 x (conv3x3 -> BN -> ReLU), optional max-pool;  H/s x W/s, s = stem_stride
      -> stages: 4 stages of residual BasicBlocks (2 each = 8 blocks); every stage after
                 the first halves H and W and grows the channels (32 -> 64 -> 128 -> 256)
      -> head:   global average pool -> dropout -> linear
    logits [B, num_classes]

Global average pooling turns any H x W into a single vector per channel, so the same
model runs on 28x28 Fashion-MNIST-sized images and on 224x224 photos.

MLPBaseline, a plain multi-layer perceptron on the pixels, is the baseline the CNN is compared with.
"""

import torch
import torch.nn as nn

from src.checks import check_fraction, check_int


def conv_parameter_count(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> int:
    """Course formula n_p = n_k * (c * k^2 + 1): n_k filters, each with c*k*k weights + 1 bias."""
    per_filter = in_channels * kernel_size**2 + (1 if bias else 0)
    return out_channels * per_filter


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Total number of scalars in the model's parameters (optionally only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """conv3x3 -> BN -> ReLU. [B, in, H, W] -> [B, out, H/stride, W/stride]."""
    return nn.Sequential(
        # no conv bias: the BatchNorm right after subtracts the mean and adds its own shift (beta)
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """Residual block: relu(F(x) + shortcut(x)). [B, in, H, W] -> [B, out, H/stride, W/stride]."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            # F(x) has a different shape than x: project x with a 1x1 conv so they can be added
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class MyModel(nn.Module):
    """Image classifier. [B, 3, H, W] -> unnormalized logits [B, num_classes], any H, W >= 28."""

    def __init__(
        self,
        num_classes: int = 1000,
        dropout: float = 0.7,
        *,
        stem_stride: int = 4,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2),
    ):
        super().__init__()
        check_int(num_classes, 1, "num_classes")
        check_fraction(dropout, "dropout")
        if stem_stride not in (1, 2, 4):
            raise ValueError(f"stem_stride must be 1, 2 or 4, got {stem_stride}")
        if len(widths) != len(blocks_per_stage):
            raise ValueError(f"widths and blocks_per_stage must have the same length, got {widths} and {blocks_per_stage}")

        # The stem shrinks big photos early (stride 4 for 224 px) so the residual stages work on
        # a 56x56 map; tiny 28-32 px images use stride 1 so they still have pixels left to pool.
        self.stem = nn.Sequential(
            conv_bn_relu(3, widths[0], stride=1 if stem_stride == 1 else 2),
            conv_bn_relu(widths[0], widths[0]),
            nn.MaxPool2d(2) if stem_stride == 4 else nn.Identity(),
        )

        stages = []
        in_channels = widths[0]
        for i, (width, n_blocks) in enumerate(zip(widths, blocks_per_stage)):
            # halve the resolution at the start of every stage but the first, while the channels grow
            blocks = [BasicBlock(in_channels, width, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock(width, width) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        self.stages = nn.Sequential(*stages)

        # No softmax here: nn.CrossEntropyLoss applies log-softmax itself (more stable numerically).
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),  # [B, C, h, w] -> [B, C, 1, 1], whatever h and w are
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(widths[-1], num_classes),
        )

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # Kaiming (He) init keeps the activation variance stable through ReLU layers
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, BasicBlock):
                # Zero gamma in the last BN makes F(x) = 0, so each block starts as relu(shortcut(x)):
                # the untrained network is shallow and easy to optimize, and the gradient still
                # reaches gamma, so the residual branches switch on as training needs them.
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


class MLPBaseline(nn.Module):
    """A multi-layer perceptron on raw pixels, the baseline CNNs are compared with.

    [B, 3, S, S] -> flatten to 3*S*S -> (Linear -> ReLU -> Dropout) per hidden width -> Linear -> [B, num_classes].
    Every hidden unit has its own weight for every pixel: nothing is shared across positions, so the parameter count
    grows with S^2 and a pattern learned in one place is not recognised in another.
    """

    def __init__(self, num_classes: int, image_size: int, hidden: tuple[int, ...] = (512, 256), dropout: float = 0.5):
        super().__init__()
        self.image_size = image_size
        layers: list[nn.Module] = [nn.Flatten()]
        in_features = 3 * image_size**2
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != (3, self.image_size, self.image_size):
            # without this check a wrong size fails inside Linear with a message about matrix shapes
            size = self.image_size
            raise ValueError(f"MLPBaseline expects images [B, 3, {size}, {size}], got {list(x.shape)}")
        return self.layers(x)


class PlainCNN(nn.Module):
    """The course's plain CNN, the ablation MyModel is measured against: what BatchNorm, residual blocks and global
    average pooling buy, and what they cost.

    [B, 3, S, S] -> per width: conv3x3 -> ReLU -> max-pool 2 (halves the side) -> flatten -> dropout -> linear
    -> [B, num_classes]. The linear layer has one weight per value of the last feature map (widths[-1] x s x s,
    s = S // 2**len(widths)), so unlike MyModel's it grows with the image, and it fits only images of that size.
    """

    def __init__(self, num_classes: int, image_size: int, widths: tuple[int, ...] = (16, 32, 64), dropout: float = 0.5):
        super().__init__()
        check_int(num_classes, 1, "num_classes")
        check_fraction(dropout, "dropout")
        side = image_size // 2 ** len(widths)
        if side < 1:
            raise ValueError(f"{len(widths)} max-pools need images of at least {2 ** len(widths)} px, got {image_size}")
        layers: list[nn.Module] = []
        for in_channels, out_channels in zip((3, *widths), widths):
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]  # fmt: skip
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(widths[-1] * side**2, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
