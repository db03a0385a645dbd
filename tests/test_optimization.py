from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from src.optimization import get_loss, get_optimizer, get_scheduler


def tiny_model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def tiny_transfer_model() -> nn.Sequential:
    """Like src/transfer.py's models: a `backbone` whose first layer is frozen, then a `head`."""
    model = nn.Sequential(
        OrderedDict(
            backbone=nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8)),
            head=nn.Linear(8, 3),
        )
    )
    model.backbone[0].requires_grad_(False)
    return model


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def same_tensors(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    """True if a and b hold the very same tensor objects (identity, not equal values)."""
    return len(a) == len(b) and all(any(x is y for y in b) for x in a)


# --- loss ---


def test_loss_is_cross_entropy():
    assert isinstance(get_loss(), nn.CrossEntropyLoss)
    assert get_loss().label_smoothing == 0.0
    assert get_loss(label_smoothing=0.1).label_smoothing == 0.1


# --- optimizer ---


@pytest.mark.parametrize(
    "name, cls",
    [
        ("SGD", torch.optim.SGD),
        ("sgd", torch.optim.SGD),
        ("Adam", torch.optim.Adam),
        ("ADAM", torch.optim.Adam),
        ("AdamW", torch.optim.AdamW),
        ("adamw", torch.optim.AdamW),
    ],
)
def test_optimizer_type_any_case(name, cls):
    assert type(get_optimizer(tiny_model(), optimizer=name)) is cls


def test_sgd_hyperparameters_reach_param_groups():
    opt = get_optimizer(tiny_model(), "SGD", learning_rate=0.123, momentum=0.9, weight_decay=0.01)
    group = opt.param_groups[0]
    assert group["lr"] == 0.123
    assert group["momentum"] == 0.9
    assert group["weight_decay"] == 0.01


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_hyperparameters_reach_param_groups(name):
    opt = get_optimizer(tiny_model(), name, learning_rate=0.123, weight_decay=0.123)
    group = opt.param_groups[0]
    assert group["lr"] == 0.123
    assert group["weight_decay"] == 0.123


def test_optimizer_gets_exactly_the_trainable_parameters():
    model = tiny_transfer_model()
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert len(frozen) == 2  # backbone[0].weight and .bias

    params = optimizer_params(get_optimizer(model))
    assert same_tensors(params, trainable)
    assert not any(p is f for p in params for f in frozen)


def test_backbone_lr_factor_makes_a_slower_backbone_group():
    model = tiny_transfer_model()
    opt = get_optimizer(model, "Adam", learning_rate=0.01, backbone_lr_factor=0.1)
    assert len(opt.param_groups) == 2
    head_group, backbone_group = opt.param_groups
    assert head_group["lr"] == 0.01
    assert backbone_group["lr"] == pytest.approx(0.001)
    assert same_tensors(head_group["params"], list(model.head.parameters()))
    # only the trainable part of the backbone: backbone[2], not the frozen backbone[0]
    assert same_tensors(backbone_group["params"], list(model.backbone[2].parameters()))


def test_no_backbone_group_by_default():
    assert len(get_optimizer(tiny_transfer_model()).param_groups) == 1


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="SGD, Adam, AdamW"):
        get_optimizer(tiny_model(), optimizer="RMSprop")


# --- scheduler ---


def test_scheduler_types():
    opt = get_optimizer(tiny_model())
    plateau = get_scheduler(opt, "plateau")
    assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)
    cosine = get_scheduler(get_optimizer(tiny_model()), "cosine", n_epochs=10)
    assert isinstance(cosine, torch.optim.lr_scheduler.LRScheduler)
    assert not isinstance(cosine, torch.optim.lr_scheduler.ReduceLROnPlateau)


def test_cosine_warms_up_then_decays_to_zero():
    opt = get_optimizer(tiny_model(), learning_rate=1.0)
    scheduler = get_scheduler(opt, "cosine", n_epochs=10, warmup_epochs=2)
    lrs = []  # the lr used in each epoch, then the one after the last epoch
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()  # a real epoch would train here
        scheduler.step()
    lrs.append(opt.param_groups[0]["lr"])

    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1.0)  # warm-up reaches the full lr
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))  # then only decreases
    assert lrs[-2] > 0  # the last epoch still learns a little
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9)


def test_cosine_needs_n_epochs():
    with pytest.raises(ValueError, match="n_epochs"):
        get_scheduler(get_optimizer(tiny_model()), "cosine")


def test_plateau_halves_lr_when_validation_loss_stops_improving():
    opt = get_optimizer(tiny_model(), learning_rate=1.0)
    scheduler = get_scheduler(opt, "plateau", patience=3, factor=0.5)
    scheduler.step(1.0)  # first epoch sets the best loss
    for _ in range(3):  # `patience` epochs without improvement are tolerated...
        scheduler.step(1.0)
    assert opt.param_groups[0]["lr"] == 1.0
    scheduler.step(1.0)  # ...one more and the lr is cut
    assert opt.param_groups[0]["lr"] == 0.5


def test_unknown_scheduler_kind():
    with pytest.raises(ValueError, match="plateau, cosine"):
        get_scheduler(get_optimizer(tiny_model()), "step")
