"""The files of a training run, and how a run keeps them safe: never overwritten, resumed only by the same recipe.

A run saved at checkpoints/x.pt owns these files (all written atomically through src/files.py):

    x.pt            the best weights (the lowest validation loss so far)
    x.resume.pt     model, optimizer, scheduler, history and settings after the last finished epoch
    x.json          the run record (python -m src.train)
    x.head.pt, x.head.resume.pt   the head trained on cached features (python -m src.train --cache-features)

A new run never replaces them: `keep_earlier_run` first renames them to x_<when they were written>.pt, .resume.pt,
.json, ... so the earlier model stays usable (and exportable) under that name. Resuming continues the same run: the
saved settings must match the new ones, except the number of epochs, which may grow or shrink the schedule.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from src.data import base_dataset
from src.files import WriteError, check_writable, describe_write_error, process_alive, temp_path


class ResumeError(ValueError):
    """A resume that would not continue the same run (other settings, another model, a damaged file); one line."""


def resume_path(save_path: str | Path) -> Path:
    """Where optimize() keeps its per-epoch state for `save_path`: checkpoints/x.pt -> checkpoints/x.resume.pt."""
    save_path = Path(save_path)
    return save_path.with_name(save_path.stem + ".resume.pt")


def head_path(save_path: str | Path) -> Path:
    """Where a run with cached features keeps its best head: checkpoints/x.pt -> checkpoints/x.head.pt."""
    save_path = Path(save_path)
    return save_path.with_name(save_path.stem + ".head.pt")


def continues_a_run(save_path: str | Path, resume: bool) -> bool:
    """Whether training at save_path continues a saved run (resume asked for, and its resume state is there); if not,
    it is a new run, and keep_earlier_run must first move the earlier files out of its way."""
    return resume and resume_path(save_path).is_file()


def run_files(save_path: str | Path) -> list[Path]:
    """Every file a run saved at `save_path` may own (see the module docstring), whether or not it exists."""
    save_path = Path(save_path)
    head = head_path(save_path)
    return [save_path, resume_path(save_path), save_path.with_suffix(".json"), head, resume_path(head)]


def keep_earlier_run(save_path: str | Path) -> Path | None:
    """Rename the files an earlier run left at save_path to <stem>_<YYYY-MM-DD_HHMMSS> (the time they were last
    written), so that a new run cannot overwrite them. Returns the earlier best-weights path under its new name, or
    None when there was nothing to keep.
    """
    save_path = Path(save_path)
    existing = [path for path in run_files(save_path) if path.is_file()]
    if not existing:
        return None
    written = datetime.datetime.fromtimestamp(max(path.stat().st_mtime for path in existing))
    stem = f"{save_path.stem}_{written:%Y-%m-%d_%H%M%S}"
    for attempt in range(2, 1000):  # two runs within one second: _2, _3, ...
        renamed = {path: path.with_name(path.name.replace(save_path.stem, stem, 1)) for path in existing}
        if not any(new.exists() for new in renamed.values()):
            break
        stem = f"{save_path.stem}_{written:%Y-%m-%d_%H%M%S}_{attempt}"
    for old, new in renamed.items():
        old.replace(new)
    print(f"Kept the earlier run's files as {save_path.parent / stem}.* (continue it with resume=True / --resume "
          f"under its old name; this run starts afresh).")  # fmt: skip
    return save_path.with_name(stem + save_path.suffix)


@contextlib.contextmanager
def run_lock(save_path: str | Path) -> Iterator[None]:
    """Held while a run writes save_path's files: a second run on the same files, in another process, gets ResumeError.

    The lock file (.<name>.lock beside save_path) holds the owner's pid; one left by a killed run (its pid no longer
    alive) is taken over, so a crash never blocks the next run, and the temporary files that run left are removed.
    """
    lock = Path(save_path).with_name(f".{Path(save_path).name}.lock")
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # atomic: one of two racing runs wins
        except FileExistsError:
            owner = _owner(lock)
            if owner is not None and owner != os.getpid() and process_alive(owner):
                raise ResumeError(f"Another training run (process {owner}) is writing {save_path}: wait for it to "
                                  f"finish, or save this run elsewhere. (No such run? Delete {lock}.)") from None
            lock.unlink(missing_ok=True)  # left by a killed run
            continue
        except OSError as err:
            raise WriteError(describe_write_error(str(lock.absolute()), err)) from None
        with os.fdopen(descriptor, "w") as f:
            f.write(str(os.getpid()))
        break
    for path in run_files(save_path):  # half-written files of a killed run: nobody else writes them now
        temp_path(path).unlink(missing_ok=True)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text())
    except (OSError, ValueError):
        return None


def state_bytes(model: nn.Module) -> int:
    """Bytes of the model's state dict: what one best-weights file takes on disk."""
    return sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())


def check_save_folder(save_path: str | Path, model: nn.Module) -> None:
    """Before the first epoch: save_path's folder is writable and has room for the run's files. WriteError if not.

    Room: the best weights (1x the model), the resume state (model + up to 2x for Adam's moments) and the temporary
    copy of the resume state while it is rewritten: 7x the model's size.
    """
    check_writable(Path(save_path).parent, need_bytes=7 * state_bytes(model))


# ----------------------------------------------------------------------------------------------------------------------
# Resume state


def run_settings(
    data_loaders: dict[str, DataLoader], optimizer: torch.optim.Optimizer, loss_fn: nn.Module, scheduler
) -> dict[str, object]:
    """What must not change when a run is resumed: optimizer and its settings, label smoothing, schedule kind, classes
    and the input shape. Call it before loading a resume state (it reads the optimizer's initial learning rates)."""
    groups = optimizer.param_groups
    settings = {
        "optimizer": type(optimizer).__name__,
        "learning rate": [group.get("initial_lr", group["lr"]) for group in groups],
        "weight decay": [group.get("weight_decay") for group in groups],
        "momentum": [group.get("momentum") for group in groups],
        # what trains: another fine-tuning depth changes these counts, and the optimizer state would not fit
        "trained parameters": [sum(p.numel() for p in group["params"]) for group in groups],
        "scheduler": type(scheduler).__name__,
    }
    if hasattr(loss_fn, "label_smoothing"):
        settings["label smoothing"] = loss_fn.label_smoothing
    dataset = data_loaders["train"].dataset
    settings["classes"] = list(getattr(base_dataset(dataset), "classes", []))
    try:
        with torch.random.fork_rng(devices=[]):  # the sample's random augmentation must not shift the run's RNG
            settings["input shape"] = list(dataset[0][0].shape)  # one sample: the image size after the transforms
    except (TypeError, IndexError, AttributeError):
        pass
    return settings


def resume_state(
    model, optimizer, scheduler, epoch: int, n_epochs: int, best_loss: float, history, settings, data_loaders
) -> dict:
    """Everything optimize() needs to continue after `epoch`, the random number generators' states included."""
    return {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "epoch": epoch, "n_epochs": n_epochs, "best_loss": best_loss, "history": history, "settings": settings,
        "random": random_state(data_loaders["train"]),
    }  # fmt: skip


def random_state(train_loader) -> dict:
    """Every generator a run draws from: torch (CPU and CUDA: augmentation, dropout), NumPy, Python, and the train
    loader's own (shuffling, worker seeds). Restored on resume, the next epochs draw what they would have drawn."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if getattr(train_loader, "generator", None) is not None:
        state["loader"] = train_loader.generator.get_state()
    return state


def restore_random_state(state: dict, train_loader) -> None:
    """Undo random_state. (DataLoader worker processes started anew draw new seeds: with num_workers > 0 the
    augmentations after a resume differ from an uninterrupted run's.)"""
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if "loader" in state and getattr(train_loader, "generator", None) is not None:
        train_loader.generator.set_state(state["loader"].to(train_loader.generator.get_state().device))


def load_resume_state(state_file: Path, model: nn.Module, optimizer, scheduler, settings: dict, device) -> dict:
    """Load a resume state into model, optimizer and scheduler after checking it continues the same run.

    Returns the state (epoch, n_epochs, best_loss, history). Raises ResumeError with one line when the file is damaged,
    the model's layers differ (e.g. another number of classes) or a setting differs from the saved run's.
    """
    start_over = "or start over without resume (the earlier files are then kept under a dated name)"
    try:
        state = torch.load(state_file, map_location=device, weights_only=False)
        state["model"], state["epoch"]
    except Exception as err:  # noqa: BLE001 - a damaged file raises many kinds
        raise ResumeError(f"Cannot resume from {state_file}: the file is damaged ({type(err).__name__}); {start_over}.") from None
    differences = [
        f"{key} {value!r} here, {state['settings'][key]!r} in the saved run"
        for key, value in settings.items()
        if key in state.get("settings", {}) and state["settings"][key] != value
    ]
    ours = model.state_dict()
    theirs = state["model"]
    for name in sorted(set(ours) | set(theirs)):
        if name not in ours or name not in theirs or ours[name].shape != theirs[name].shape:
            shapes = [list(d[name].shape) if name in d else "missing" for d in (ours, theirs)]
            differences.append(f"layer {name} is {shapes[0]} here, {shapes[1]} in the saved run (another model or "
                               f"number of classes?)")  # fmt: skip
            break
    if differences:
        raise ResumeError(f"Cannot resume from {state_file}: {'; '.join(differences)}. Resume with the same "
                          f"settings, {start_over}.")  # fmt: skip
    try:
        model.load_state_dict(theirs)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError, RuntimeError) as err:  # a state from another version of the recipe
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ResumeError(f"Cannot resume from {state_file}: it does not fit this model or optimizer ({first_line}); "
                          f"{start_over}.") from None  # fmt: skip
    return state


def follow_new_schedule(scheduler, optimizer: torch.optim.Optimizer) -> None:
    """Set the learning rates to what the scheduler's own rule gives at its current epoch.

    Needed after resuming with another number of epochs: the saved optimizer holds the old schedule's last rate
    (0 at the end of a finished cosine), while the new scheduler's rule spans the new number of epochs.
    ReduceLROnPlateau has no rule of epochs: its reduced rate is kept.
    """
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        for group, base_lr, rule in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base_lr * rule(scheduler.last_epoch)


def new_history() -> dict[str, list[float]]:
    """Per-epoch lists of every metric optimize() records."""
    return {"train_loss": [], "valid_loss": [], "train_accuracy": [], "valid_accuracy": [], "lr": []}


def start_or_resume(
    save_path: Path, resume: bool, model: nn.Module, optimizer, scheduler, settings: dict, n_epochs: int, device,
    train_loader,
) -> dict:  # fmt: skip
    """How optimize() begins: {"epoch": epochs done, "best_loss", "history"}, from the resume state when resuming,
    else fresh, after the files of an earlier run at save_path were kept under a dated name."""
    state_file = resume_path(save_path)
    if not continues_a_run(save_path, resume):
        if resume:
            print(f"No interrupted run to resume ({state_file} not found): starting from epoch 1.")
        keep_earlier_run(save_path)
        return {"epoch": 0, "best_loss": math.inf, "history": new_history()}
    state = load_resume_state(state_file, model, optimizer, scheduler, settings, device)
    state["best_loss"] = best_loss_on_disk(state["best_loss"], save_path)
    follow_new_schedule(scheduler, optimizer)
    if "random" in state:
        restore_random_state(state["random"], train_loader)
    start, planned = state["epoch"], state.get("n_epochs", n_epochs)
    if start >= n_epochs:
        print(f"The run at {save_path} already finished {start} epochs: nothing to do (ask for more epochs to extend "
              f"it).")  # fmt: skip
    else:
        if planned != n_epochs:
            print(f"The run was planned for {planned} epochs, now {n_epochs}: the learning-rate schedule now spans "
                  f"{n_epochs} epochs (lr {optimizer.param_groups[0]['lr']:.2e} for epoch {start + 1}).")  # fmt: skip
        print(f"Resuming after epoch {start} (best validation loss so far {state['best_loss']:.4f}).")
    return state


def best_loss_on_disk(best_loss: float, save_path: Path) -> float:
    """The best loss to beat: the saved one, or inf when its weights file is gone (so the next epoch saves again)."""
    if math.isfinite(best_loss) and not Path(save_path).is_file():
        print(f"{save_path} is missing: the next epoch's weights will be saved as the best.")
        return math.inf
    return best_loss
