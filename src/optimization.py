"""Loss, optimizer and learning-rate schedule for training the classifiers."""

import math

import torch
import torch.nn as nn

from src.checks import check_float, check_fraction

OPTIMIZERS = ("SGD", "Adam", "AdamW")
SCHEDULERS = ("plateau", "cosine")


def get_loss(label_smoothing: float = 0.0) -> nn.CrossEntropyLoss:
    """Return the cross-entropy loss for multi-class classification from raw logits.

    label_smoothing = e > 0 trains towards 1 - e + e/N on the true class instead of 1 (and e/N on each of the
    N - 1 others): the target mixes the one-hot label with a uniform one, which discourages over-confident predictions.
    """
    return nn.CrossEntropyLoss(label_smoothing=check_fraction(label_smoothing, "label_smoothing"))


def get_optimizer(
    model: nn.Module,
    optimizer: str = "SGD",
    learning_rate: float = 0.01,
    momentum: float = 0.5,
    weight_decay: float = 0,
    backbone_lr_factor: float = 1.0,
) -> torch.optim.Optimizer:
    """Return an SGD, Adam or AdamW optimizer (name case-insensitive) over the model's trainable parameters.

    momentum is used by SGD only. If the model has a `backbone` (see src/transfer.py) and
    backbone_lr_factor != 1, its trainable parameters get learning_rate * backbone_lr_factor.
    """
    name = optimizer.lower()
    if name not in [o.lower() for o in OPTIMIZERS]:
        raise ValueError(f"unknown optimizer {optimizer!r}; supported: {', '.join(OPTIMIZERS)}")
    check_float(learning_rate, 0, name="learning_rate", low_open=True)
    check_float(weight_decay, 0, name="weight_decay")
    check_float(momentum, 0, 1, name="momentum", high_open=True)
    check_float(backbone_lr_factor, 0, name="backbone_lr_factor")

    # Frozen parameters (requires_grad=False) never get a gradient, so they do not belong
    # in the optimizer.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": params}]
    if hasattr(model, "backbone") and backbone_lr_factor != 1:
        # Pretrained layers are already good: a smaller learning rate adapts them without
        # destroying what they learned on ImageNet, while the new head learns at full speed.
        in_backbone = {id(p) for p in model.backbone.parameters()}
        backbone = [p for p in params if id(p) in in_backbone]
        rest = [p for p in params if id(p) not in in_backbone]
        # The full-rate group comes first, so param_groups[0]["lr"] is the main learning rate.
        groups = [{"params": rest}]
        if backbone:
            groups.append({"params": backbone, "lr": learning_rate * backbone_lr_factor})

    if name == "sgd":
        return torch.optim.SGD(groups, lr=learning_rate, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        # Adam adds weight_decay to the gradient (L2 regularization), so its adaptive step
        # size rescales the decay per parameter; AdamW shrinks the weights directly instead.
        return torch.optim.Adam(groups, lr=learning_rate, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=learning_rate, weight_decay=weight_decay)


def get_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str = "plateau",
    n_epochs: int | None = None,
    warmup_epochs: int = 1,
    patience: int = 5,
    factor: float = 0.5,
) -> torch.optim.lr_scheduler.LRScheduler:
    """Return a learning-rate scheduler; both kinds are stepped once per epoch, after validation.

    "plateau": multiply the lr by `factor` once the validation loss has not improved for
        `patience` epochs. Step it with that loss: scheduler.step(valid_loss).
    "cosine": raise the lr linearly over `warmup_epochs`, then follow a cosine from the full
        lr down to 0 at epoch `n_epochs` (required). Step it without arguments: scheduler.step().
    """
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=factor, patience=patience
        )
    if kind == "cosine":
        if n_epochs is None or n_epochs <= warmup_epochs:
            raise ValueError(
                f"the cosine schedule needs n_epochs > warmup_epochs ({warmup_epochs}), got {n_epochs}"
            )

        def lr_factor(epoch: int) -> float:
            # Warm-up: the first updates of a fresh head are large and noisy, so start small.
            # It reaches the full lr at epoch warmup_epochs, where the cosine takes over.
            if epoch < warmup_epochs:
                return (epoch + 1) / (warmup_epochs + 1)
            progress = min(1.0, (epoch - warmup_epochs) / (n_epochs - warmup_epochs))
            return 0.5 * (1 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    raise ValueError(f"unknown scheduler kind {kind!r}; valid: {', '.join(SCHEDULERS)}")
