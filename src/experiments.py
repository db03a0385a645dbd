"""Training experiments built on src.train.optimize, so every run is checkpointed, resumable and stopped safely.

    compare_models, comparison_table    train several models the same way (a throwaway experiment), side by side
    compare_schedulers                  train one model with each learning-rate schedule (plateau, cosine), side by side
    summary_rows                        each run's kept epoch, its validation loss and accuracy, for format_table
    fine_tune                           unfreeze a trained transfer model's last stages; keep it only if it is better
"""

from __future__ import annotations

import contextlib
import copy
import re
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from src.checks import check_int
from src.helpers import seed_everything
from src.model import count_parameters
from src.optimization import SCHEDULERS, get_loss, get_optimizer, get_scheduler
from src.recipe import FINE_TUNING, SCRATCH, warmup_epochs
from src.train import best_epoch, optimize, run_epoch
from src.visualize import format_table


# ----------------------------------------------------------------------------------------------------------------------
# Comparing models and learning-rate schedules


def compare_models(
    candidates: Mapping[str, nn.Module], data_loaders: dict[str, DataLoader], n_epochs: int, lr: float,
    weight_decay: float = SCRATCH.weight_decay, label_smoothing: float = SCRATCH.label_smoothing,
    folder: str | Path | None = None, seed: int = 42, **optimize_options,
) -> dict[str, dict[str, list[float]]]:  # fmt: skip
    """Train each model (name -> model) on the same loaders with the same AdamW settings and the course's
    ReduceLROnPlateau; returns name -> history. Each model is trained in place and keeps the weights of its last epoch.

    Every run starts from the same random state (seed): the same training batches in the same order, the same dropout,
    and the same augmentation if the loaders have no worker processes (workers keep drawing where they stopped).
    folder: where the runs' checkpoints are kept (<name>.pt, other characters than letters, digits, . and - replaced by
    _); None: a temporary folder, deleted afterwards (a throwaway experiment). optimize_options: optimize()'s keyword
    arguments (device, interactive_tracking; resume, with a folder).
    """
    runs = {name: (model, "plateau") for name, model in candidates.items()}
    return _train_each(runs, data_loaders, n_epochs, lr, weight_decay, label_smoothing, folder, seed,
                       **optimize_options)  # fmt: skip


def compare_schedulers(
    model: nn.Module, data_loaders: dict[str, DataLoader], n_epochs: int, lr: float,
    schedulers: Sequence[str] = SCHEDULERS, weight_decay: float = SCRATCH.weight_decay,
    label_smoothing: float = SCRATCH.label_smoothing, folder: str | Path | None = None, seed: int = 42,
    **optimize_options,
) -> dict[str, dict[str, list[float]]]:  # fmt: skip
    """Train a copy of model with each learning-rate schedule, otherwise as compare_models; returns kind -> history.

    schedulers: get_scheduler's kinds. "plateau" is the course's ReduceLROnPlateau (the rate halves after 5 epochs
    without a lower validation loss); "cosine" the recipe's linear warm-up over warmup_epochs(n_epochs), then a cosine
    down to 0 at the last epoch. Every copy starts from model's weights and the same random state, so the schedule is
    the only difference between the runs (with loaders without worker processes; see compare_models); model itself is
    not changed. Each history's "lr" is the learning rate of each epoch.
    """
    unknown = [kind for kind in schedulers if kind not in SCHEDULERS]
    if unknown or not schedulers:
        raise ValueError(f"schedulers must be some of {', '.join(SCHEDULERS)}, got {list(schedulers)}")
    runs = {kind: (copy.deepcopy(model), kind) for kind in schedulers}
    return _train_each(runs, data_loaders, n_epochs, lr, weight_decay, label_smoothing, folder, seed,
                       **optimize_options)  # fmt: skip


def _train_each(
    runs: Mapping[str, tuple[nn.Module, str]], data_loaders: dict[str, DataLoader], n_epochs: int, lr: float,
    weight_decay: float, label_smoothing: float, folder: str | Path | None, seed: int, **optimize_options,
) -> dict[str, dict[str, list[float]]]:  # fmt: skip
    """Train each model of runs (name -> (model, scheduler kind)) with optimize(), AdamW and get_scheduler(kind), each
    from the random state `seed` gives, checkpointed in folder (None: a temporary one); returns name -> history."""
    check_int(n_epochs, 1, "n_epochs")
    histories = {}
    with _checkpoint_folder(folder) as where:
        for name, (model, kind) in runs.items():
            print(f"{name}:")
            _reseed(data_loaders["train"], seed)
            optimizer = get_optimizer(model, "AdamW", lr, weight_decay=weight_decay)
            scheduler = get_scheduler(optimizer, kind, n_epochs=n_epochs, warmup_epochs=warmup_epochs(n_epochs))
            save_path = where / (re.sub(r"[^\w.-]+", "_", name) + ".pt")
            histories[name] = optimize(data_loaders, model, optimizer, get_loss(label_smoothing), n_epochs, save_path,
                                       scheduler=scheduler, **optimize_options)  # fmt: skip
    return histories


@contextlib.contextmanager
def _checkpoint_folder(folder: str | Path | None) -> Iterator[Path]:
    """folder (created if missing), or a temporary folder that is deleted on leaving."""
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory() as temporary:
        yield Path(temporary)


def _reseed(train_loader: DataLoader, seed: int) -> None:
    """Seed Python, NumPy and PyTorch, and the loader's shuffling: every run so seeded sees the same batches."""
    seed_everything(seed)
    if isinstance(train_loader.generator, torch.Generator):
        train_loader.generator.manual_seed(seed)


def comparison_table(candidates: Mapping[str, nn.Module], histories: Mapping[str, Mapping[str, list[float]]]) -> str:
    """Each compared model's parameter count and best validation accuracy, as a text table."""
    return format_table([
        {"model": name, "parameters": f"{count_parameters(candidates[name]):,}",
         "best valid accuracy": f"{100 * max(history['valid_accuracy']):.1f}%"}
        for name, history in histories.items()
    ])  # fmt: skip


def summary_rows(histories: Mapping[str, Mapping[str, list[float]] | None]) -> list[dict[str, object]]:
    """One row per run (name -> history from optimize; None: a skipped run), for format_table: epochs trained, the
    epoch whose weights optimize() kept (best_epoch) with its validation loss and accuracy, and the highest and the
    last validation accuracy of any epoch ("-" where there is none)."""
    rows = []
    for name, history in histories.items():
        losses = list(history["valid_loss"]) if history else []
        kept = best_epoch(losses)
        row = dict.fromkeys(("kept epoch", "valid loss", "valid accuracy", "best valid accuracy",
                             "last valid accuracy"), "-")  # fmt: skip
        if kept is not None:
            accuracies = history["valid_accuracy"]
            row.update({"kept epoch": kept, "valid loss": f"{losses[kept - 1]:.4f}",
                        "valid accuracy": f"{100 * accuracies[kept - 1]:.1f}%",
                        "best valid accuracy": f"{100 * max(accuracies):.1f}%",
                        "last valid accuracy": f"{100 * accuracies[-1]:.1f}%"})  # fmt: skip
        rows.append({"run": name, "epochs": len(losses), **row})
    return rows


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
    scheduler = get_scheduler(optimizer, FINE_TUNING.scheduler, n_epochs=n_epochs, warmup_epochs=warmup_epochs(n_epochs))
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
