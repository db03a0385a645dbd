"""Training experiments built on src.train.optimize, so every run is checkpointed, resumable and stopped safely.

    compare_models, comparison_table    train several models the same way (a throwaway experiment), side by side
    fine_tune                           unfreeze a trained transfer model's last stages; keep it only if it is better
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from src.checks import check_int
from src.model import count_parameters
from src.optimization import get_loss, get_optimizer, get_scheduler
from src.recipe import FINE_TUNING, SCRATCH, warmup_epochs
from src.train import optimize, run_epoch
from src.visualize import format_table


# ----------------------------------------------------------------------------------------------------------------------
# Comparing models


def compare_models(
    candidates: Mapping[str, nn.Module], data_loaders: dict[str, DataLoader], n_epochs: int, lr: float,
    weight_decay: float = SCRATCH.weight_decay, label_smoothing: float = SCRATCH.label_smoothing, **optimize_options,
) -> dict[str, dict[str, list[float]]]:  # fmt: skip
    """Train each model (name -> model) on the same loaders with the same AdamW settings; returns name -> history.

    A throwaway experiment: the checkpoints go to a temporary folder that is deleted afterwards, and each model keeps
    the weights of its last epoch. optimize_options: optimize()'s keyword arguments (device, interactive_tracking).
    """
    check_int(n_epochs, 1, "n_epochs")
    histories = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, model in candidates.items():
            print(f"{name}:")
            optimizer = get_optimizer(model, "AdamW", lr, weight_decay=weight_decay)
            save_path = Path(folder) / f"compare_{len(histories)}.pt"
            histories[name] = optimize(
                data_loaders, model, optimizer, get_loss(label_smoothing), n_epochs, save_path, **optimize_options
            )
    return histories


def comparison_table(candidates: Mapping[str, nn.Module], histories: Mapping[str, Mapping[str, list[float]]]) -> str:
    """Each compared model's parameter count and best validation accuracy, as a text table."""
    return format_table([
        {"model": name, "parameters": f"{count_parameters(candidates[name]):,}",
         "best valid accuracy": f"{100 * max(history['valid_accuracy']):.1f}%"}
        for name, history in histories.items()
    ])  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Fine-tuning


def fine_tune(
    model: nn.Module, unfrozen: nn.Module, data_loaders: dict[str, DataLoader], loss: nn.Module, n_epochs: int,
    save_path: str | Path, lr: float = FINE_TUNING.lr, valid_loader: DataLoader | None = None,
    weight_decay: float = FINE_TUNING.weight_decay, backbone_lr_factor: float = FINE_TUNING.backbone_lr_factor,
    device: torch.device | None = None, **optimize_options,
) -> tuple[nn.Module, dict[str, list[float]] | None, str]:  # fmt: skip
    """Fine-tune a trained transfer model, and keep the fine-tuned one only if its validation loss is lower.

    model: the trained model (frozen backbone, trained head). unfrozen: the same architecture with the layers to adapt
    trainable (e.g. get_model_transfer_learning(..., fine_tune="last")); it starts from model's weights, trains for
    n_epochs with optimize() (AdamW at lr, backbone at lr * backbone_lr_factor, cosine schedule with the recipe's
    warm-up; defaults: src.recipe.FINE_TUNING), its best weights kept in save_path like any run's. Both models are then scored on valid_loader (default:
    data_loaders["valid"]) — never on the test set, which would make the test accuracy an optimistic estimate.
    n_epochs = 0 skips fine-tuning. optimize_options: optimize()'s other keyword arguments.
    Returns (the model to keep: model or unfrozen, the fine-tuning history or None when skipped, one line saying why).
    """
    check_int(n_epochs, 0, "n_epochs")
    if n_epochs == 0:
        return model, None, "Fine-tuning skipped (0 epochs)."
    save_path = Path(save_path)
    unfrozen.load_state_dict(model.state_dict())  # start from the trained head: a random one would harm the backbone
    optimizer = get_optimizer(unfrozen, "AdamW", lr, weight_decay=weight_decay, backbone_lr_factor=backbone_lr_factor)
    scheduler = get_scheduler(optimizer, "cosine", n_epochs=n_epochs, warmup_epochs=warmup_epochs(n_epochs))
    history = optimize(data_loaders, unfrozen, optimizer, loss, n_epochs, save_path, scheduler=scheduler, device=device,
                       **optimize_options)  # fmt: skip
    if not save_path.is_file():  # stopped before any epoch was validated: nothing to compare
        return model, history, "Keeping the frozen-backbone model: fine-tuning saved no weights."
    unfrozen.load_state_dict(torch.load(save_path, map_location="cpu", weights_only=True))
    valid_loader = valid_loader if valid_loader is not None else data_loaders["valid"]
    frozen_loss, _ = run_epoch(valid_loader, model, loss, device=device, desc="Validating frozen")
    tuned_loss, _ = run_epoch(valid_loader, unfrozen, loss, device=device, desc="Validating fine-tuned")
    scores = f"validation loss: frozen backbone {frozen_loss:.4f}, fine-tuned {tuned_loss:.4f}"
    if tuned_loss < frozen_loss:
        return unfrozen, history, f"Keeping the fine-tuned model ({scores})."
    return model, history, f"Keeping the frozen-backbone model: fine-tuning did not lower the {scores}."
