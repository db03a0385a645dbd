"""Training: one epoch of training or evaluation, the full train/valid loop with checkpoints, and the test.

The loop keeps the weights with the lowest validation loss (a new minimum must be more than 1% below the best so far)
in `save_path`, and a resume file beside it after every epoch, so an interrupted run loses at most one epoch.

The command line `python -m src.train` (src/train_cli.py) runs the whole recipe headless:
    python -m src.train --model scratch --dataset fashion-mnist --epochs 10
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from src.checkpoints import (
    check_save_folder,
    continues_a_run,
    head_path,
    keep_earlier_run,
    resume_path,
    resume_state,
    run_lock,
    run_settings,
    start_or_resume,
)
from src.checks import check_int
from src.files import WriteError, save_torch
from src.helpers import get_device
from src.optimization import get_scheduler
from src.progress import tqdm
from src.visualize import LivePlot

IMPROVEMENT = 0.01  # a validation loss counts as a new best only if it is more than 1% below the best so far


def is_improvement(valid_loss: float, best_loss: float) -> bool:
    """Whether a validation loss is a new best worth saving: more than IMPROVEMENT below the best so far (smaller
    wobbles are noise, and saving for them would keep the weights of an epoch that was no better)."""
    return valid_loss < best_loss * (1 - IMPROVEMENT)


def best_epoch(valid_losses: list[float]) -> int | None:
    """The epoch (1-based) whose weights optimize() kept as the best, from the history's validation losses; None if
    none was kept. Not always the epoch of the lowest loss: see is_improvement."""
    best_loss, epoch = float("inf"), None
    for number, valid_loss in enumerate(valid_losses, 1):
        if is_improvement(valid_loss, best_loss):
            best_loss, epoch = valid_loss, number
    return epoch


# ----------------------------------------------------------------------------------------------------------------------
# One epoch


def _autocast(device: torch.device) -> torch.autocast:
    """bf16 mixed precision on CUDA GPUs (tensor cores; unlike fp16 it needs no loss scaling); full fp32 elsewhere.
    (bf16 on a CPU without AVX-512 is ~15x slower, so the CPU always uses fp32.)"""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def use_fast_gpu_settings(model: nn.Module, device: torch.device) -> None:
    """The GPU fast path's two switches (optimize() sets them; nothing changes on a CPU): cuDNN times its kernels once
    and keeps the fastest (our input sizes are fixed), and the weights take the channels_last layout that tensor cores
    want for convolutions."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model.to(memory_format=torch.channels_last)


def run_epoch(
    data_loader: DataLoader,
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    device: torch.device | None = None,
    desc: str = "",
) -> tuple[float, float]:
    """One pass over data_loader: trains if an optimizer is given, else evaluates. Returns (mean loss, accuracy).

    Accuracy is a fraction in [0, 1]. Raises FloatingPointError as soon as the loss is NaN or infinite.
    """
    device = device or get_device()
    training = optimizer is not None
    model.to(device).train(training)
    total_loss, correct, seen = 0.0, 0, 0
    with torch.set_grad_enabled(training):
        for batch, (images, labels) in enumerate(tqdm(data_loader, desc=desc, leave=False, unit="batch")):
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with _autocast(device):
                logits = model(images)
                loss = loss_fn(logits, labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"The loss became {loss.item()} in batch {batch} ({desc or 'epoch'}): training stopped. "
                    f"Lower the learning rate, or check the data for bad values."
                )
            if training:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total_loss += loss.item() * len(labels)
            correct += (logits.argmax(dim=1) == labels).sum().item()
            seen += len(labels)
    return total_loss / seen, correct / seen


def train_one_epoch(train_dataloader: DataLoader, model: nn.Module, optimizer, loss) -> float:
    """Train for one epoch; returns the mean training loss. (Required by the course, with this signature.)"""
    return run_epoch(train_dataloader, model, loss, optimizer, desc="Training")[0]


def valid_one_epoch(valid_dataloader: DataLoader, model: nn.Module, loss) -> float:
    """Evaluate on the validation set; returns the mean validation loss. (Required by the course, with this signature.)"""
    return run_epoch(valid_dataloader, model, loss, desc="Validating")[0]


def one_epoch_test(test_dataloader: DataLoader, model: nn.Module, loss) -> tuple[float, float]:
    """Evaluate on the test set, print loss and accuracy; returns (mean loss, accuracy in [0, 1]). (Required by the
    course, with this signature.)"""
    test_loss, accuracy = run_epoch(test_dataloader, model, loss, desc="Testing")
    n = len(test_dataloader.dataset)
    print(f"Test Loss: {test_loss:.6f}\n\nTest Accuracy: {100 * accuracy:.0f}% ({round(accuracy * n)}/{n})")
    return test_loss, accuracy


# ----------------------------------------------------------------------------------------------------------------------
# The training loop


def optimize(
    data_loaders: dict[str, DataLoader],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: nn.Module,
    n_epochs: int,
    save_path: str | Path,
    interactive_tracking: bool = False,
    scheduler=None,
    resume: bool = False,
    device: torch.device | None = None,
) -> dict[str, list[float]]:
    """Train for n_epochs, saving model.state_dict() to save_path at every new validation-loss minimum.

    scheduler: any torch LR scheduler, stepped once per epoch (ReduceLROnPlateau with the validation loss);
        None means the course's ReduceLROnPlateau.
    resume: continue the run saved at save_path (model, optimizer, scheduler, epoch, history) with the same settings;
        a larger n_epochs extends it. Without resume, files an earlier run left at save_path are first renamed to
        <name>_<date>_<time>.* (src/checkpoints.py), never overwritten.
    Returns the history: per-epoch lists of train/valid loss, train/valid accuracy and learning rate.
    On CUDA it trains in bf16 (_autocast) with use_fast_gpu_settings; on a CPU in plain fp32.
    A NaN/inf loss, a failed write, running out of GPU memory or Ctrl-C stops training early with one message;
    save_path keeps the best weights.
    Raises ValueError (one line) for n_epochs < 1 and ResumeError when the saved run cannot be continued, and
    WriteError before the first epoch when save_path's folder is not writable or has too little space.
    """
    check_int(n_epochs, 1, "n_epochs")
    save_path = Path(save_path)
    device = device or get_device()
    model.to(device)
    use_fast_gpu_settings(model, device)
    scheduler = scheduler if scheduler is not None else get_scheduler(optimizer, "plateau")
    check_save_folder(save_path, model)  # fails now, not after an hour of training
    with run_lock(save_path):  # no second process trains into the same files meanwhile
        settings = run_settings(data_loaders, optimizer, loss, scheduler)
        state = start_or_resume(
            save_path, resume, model, optimizer, scheduler, settings, n_epochs, device, data_loaders["train"]
        )
        history, best_loss, start, state_file = state["history"], state["best_loss"], state["epoch"], resume_path(save_path)
        if start >= n_epochs:
            return history

        plot = LivePlot() if interactive_tracking else None
        epoch = start
        try:
            for epoch in range(start + 1, n_epochs + 1):
                lr = optimizer.param_groups[0]["lr"]
                train_loss, train_acc = run_epoch(data_loaders["train"], model, loss, optimizer, device, f"Epoch {epoch} train")
                valid_loss, valid_acc = run_epoch(data_loaders["valid"], model, loss, None, device, f"Epoch {epoch} valid")
                for key, value in zip(history, (train_loss, valid_loss, train_acc, valid_acc, lr)):
                    history[key].append(value)

                improved = is_improvement(valid_loss, best_loss)
                if improved:
                    save_torch(model.state_dict(), save_path)
                    best_loss = valid_loss
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(valid_loss)
                else:
                    scheduler.step()
                save_torch(
                    resume_state(model, optimizer, scheduler, epoch, n_epochs, best_loss, history, settings, data_loaders),
                    state_file,
                )
                tqdm.write(
                    f"Epoch {epoch}/{n_epochs}: train loss {train_loss:.4f} acc {100 * train_acc:.1f}% | "
                    f"valid loss {valid_loss:.4f} acc {100 * valid_acc:.1f}% | lr {lr:.2e}"
                    + (" | saved new best" if improved else "")
                )
                if plot:
                    plot.update(history)
        except (FloatingPointError, WriteError) as err:
            print(f"Stopped in epoch {epoch}: {err} {_where_the_best_is(save_path)}", file=sys.stderr)
        except torch.OutOfMemoryError as err:  # a GPU too small for this batch: say what to change, keep the best
            print(f"Stopped in epoch {epoch}: out of memory ({str(err).splitlines()[0]}). Lower the batch size or the "
                  f"image size. {_where_the_best_is(save_path)}", file=sys.stderr)  # fmt: skip
        except KeyboardInterrupt:
            print(
                f"Interrupted in epoch {epoch}. {_where_the_best_is(save_path)} "
                f"Continue with optimize(..., resume=True) or `python -m src.train ... --resume`.",
                file=sys.stderr,
            )
        finally:
            if plot:
                plot.close()
        return history


def train_head_on_features(
    model: nn.Module, feature_loaders: dict[str, DataLoader], optimizer: torch.optim.Optimizer, loss: nn.Module,
    n_epochs: int, save_path: str | Path, **optimize_options,
) -> dict[str, list[float]]:  # fmt: skip
    """Frozen-backbone transfer learning on cached features (src.transfer.cache_features): optimize() trains
    model.head, keeping its best weights in head_path(save_path); then the whole model, with that head, is saved to
    save_path, like any other run's best weights. optimize_options: optimize()'s keyword arguments. Returns the history.
    """
    save_path = Path(save_path)
    best_head = head_path(save_path)
    if not continues_a_run(best_head, optimize_options.get("resume", False)):
        keep_earlier_run(save_path)  # a new run: also the earlier whole model at save_path is kept, not overwritten
    history = optimize(feature_loaders, model.head, optimizer, loss, n_epochs, best_head, **optimize_options)
    if best_head.is_file():
        model.head.load_state_dict(torch.load(best_head, map_location="cpu", weights_only=True))
        save_torch(model.state_dict(), save_path)
    return history


def _where_the_best_is(save_path: Path) -> str:
    """Earlier runs' files were renamed at the start, so a file at save_path holds this run's best weights."""
    if save_path.is_file():
        return f"The best weights so far are in {save_path}."
    return f"No weights were saved ({save_path} was not written: no epoch finished with a finite validation loss)."


if __name__ == "__main__":  # python -m src.train: the command line is in src/train_cli.py
    from src.train_cli import main

    sys.exit(main())
