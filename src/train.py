"""Training: one epoch of training or evaluation, the full train/valid loop with checkpoints, and the test.

The loop keeps the weights with the lowest validation loss (a new minimum must be more than 1% below the best so far)
in `save_path`, and a resume file beside it after every epoch, so an interrupted run loses at most one epoch.

Usage:  python -m src.train --model scratch --dataset fashion-mnist --epochs 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from src.checkpoints import (
    ResumeError,
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
from src.checks import (
    FRACTION,
    NON_NEGATIVE_FLOAT,
    NUM_WORKERS,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    OneLineParser,
    check_int,
    int_at_least,
)
from src.data import get_class_names, get_data_loaders, get_normalization
from src.files import WriteError, check_writable, save_json, save_torch
from src.gpu_data import fastest_loaders
from src.helpers import MAX_SEED, DataError, get_device, model_file, seed_everything
from src.optimization import OPTIMIZERS, SCHEDULERS, get_loss, get_optimizer, get_scheduler
from src.presets import DATASETS, MAX_IMAGE_SIZE
from src.recipe import SCRATCH, TRANSFER, recipe_for, warmup_epochs
from src.transfer import (
    AVAILABLE_MODELS,
    FINE_TUNE_OPTIONS,
    INPUT_SIZE,
    PRETRAINED_MEAN,
    PRETRAINED_STD,
    build_model,
    cache_features,
)
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
    """bf16 mixed precision on CUDA GPUs (about 2x faster, no loss scaling needed); full fp32 elsewhere.
    (bf16 on a CPU without AVX-512 is ~15x slower, so the CPU always uses fp32.)"""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


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
    A NaN/inf loss, a failed write, running out of GPU memory or Ctrl-C stops training early with one message;
    save_path keeps the best weights.
    Raises ValueError (one line) for n_epochs < 1 and ResumeError when the saved run cannot be continued, and
    WriteError before the first epoch when save_path's folder is not writable or has too little space.
    """
    check_int(n_epochs, 1, "n_epochs")
    save_path = Path(save_path)
    device = device or get_device()
    model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # input sizes are fixed: let cuDNN pick its fastest kernels once
        model.to(memory_format=torch.channels_last)  # the layout tensor cores want for convolutions
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


# ----------------------------------------------------------------------------------------------------------------------
# Command line


def check_save_path(path: Path) -> Path:
    """The --save-path argument: a file path whose folder can be written (checked now, before any work)."""
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder: give a file name, e.g. {path / 'model.pt'}")
    if path.suffix == ".json" or path.name.endswith((".resume.pt", ".head.pt")):  # a run's other files' names
        raise argparse.ArgumentTypeError(f"{path.name} is the name of a run record, resume state or head file: "
                                         f"give a name like {path.parent / 'model.pt'}")  # fmt: skip
    try:
        check_writable(path.parent)
    except WriteError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, every value checked: a bad one ends with one `error: argument --x: ...` line, exit 2."""
    parser = OneLineParser(description="Train a landmark classifier headless; keeps the best checkpoint.")
    parser.add_argument("--model", choices=("scratch", *AVAILABLE_MODELS), default="scratch")
    parser.add_argument("--dataset", choices=DATASETS, default="landmarks")
    # Options without a default here take the model's recipe (src/recipe.py), after parsing.
    parser.add_argument(
        "--epochs", type=POSITIVE_INT, help=f"default: {SCRATCH.epochs} from scratch, {TRANSFER.epochs} for transfer"
    )
    # BatchNorm needs 2 values per channel in training: a batch of 1 fails once a feature map is 1 x 1.
    parser.add_argument("--batch-size", type=int_at_least(2), help=f"default: {SCRATCH.batch_size}")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help=f"default: {SCRATCH.optimizer}")
    parser.add_argument(
        "--lr", type=POSITIVE_FLOAT, help=f"default: {SCRATCH.lr:g} from scratch, {TRANSFER.lr:g} for transfer"
    )
    parser.add_argument("--weight-decay", type=NON_NEGATIVE_FLOAT, help=f"default: {SCRATCH.weight_decay:g}")
    parser.add_argument("--momentum", type=FRACTION, help=f"SGD only; default: {SCRATCH.momentum:g}")
    parser.add_argument("--scheduler", choices=SCHEDULERS, help=f"default: {SCRATCH.scheduler}")
    parser.add_argument("--label-smoothing", type=FRACTION, help=f"default: {SCRATCH.label_smoothing:g}")
    parser.add_argument(
        "--dropout", type=FRACTION,
        help=f"before the classifier; default: {SCRATCH.dropout:g} from scratch, {TRANSFER.dropout:g} for transfer",
    )  # fmt: skip
    parser.add_argument("--fine-tune", choices=FINE_TUNE_OPTIONS, default="none", help="transfer only")
    parser.add_argument(
        "--backbone-lr-factor", type=NON_NEGATIVE_FLOAT,
        help=f"fine-tuning: backbone lr multiplier; default: {SCRATCH.backbone_lr_factor:g}",
    )  # fmt: skip
    parser.add_argument(
        "--cache-features", action="store_true",
        help="frozen transfer only: run the backbone once, then train the head on cached features (fast on a CPU)",
    )  # fmt: skip
    parser.add_argument(
        "--image-size", type=int_at_least(1, MAX_IMAGE_SIZE), default=None, help="default: the dataset's (224 or 28)"
    )
    parser.add_argument("--limit", type=int, default=-1, help="cap each split (quick runs); 0 or less: no cap")
    parser.add_argument("--num-workers", type=NUM_WORKERS, default=-1, help="-1: all cores")
    parser.add_argument(
        "--save-path", type=lambda text: check_save_path(Path(text)), default=None,
        help="default: checkpoints/best_val_loss.pt from scratch, model_transfer.pt for transfer (the notebooks' "
        "files); an earlier run's files there are kept under a dated name",
    )  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue the run saved at --save-path")
    parser.add_argument("--seed", type=int_at_least(0, MAX_SEED), default=42)
    args = parser.parse_args(argv)
    transfer = args.model != "scratch"
    if args.cache_features and not (transfer and args.fine_tune == "none"):
        parser.error("--cache-features needs a transfer model with a frozen backbone (--fine-tune none)")
    for name, value in vars(recipe_for(args.model)).items():  # what the command line did not set: the recipe's
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.save_path is None:
        try:
            args.save_path = check_save_path(model_file("scratch" if args.model == "scratch" else "transfer", args.dataset))
        except argparse.ArgumentTypeError as err:
            parser.error(f"argument --save-path: {err}")
    if args.image_size is None and transfer:  # pretrained backbones work best near their ImageNet resolution;
        # 28 px Fashion-MNIST images are upscaled to 64 px, a compromise between accuracy and CPU time
        args.image_size = INPUT_SIZE[args.model] if args.dataset == "landmarks" else 64
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return train(args)
    except (DataError, ResumeError, WriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def train(args: argparse.Namespace) -> int:
    """The whole recipe of `python -m src.train`: data, model, training, test, run record. Returns the exit status."""
    seed_everything(args.seed)
    transfer, save_path = args.model != "scratch", args.save_path
    loaders = get_data_loaders(
        batch_size=args.batch_size, num_workers=args.num_workers, limit=args.limit, dataset=args.dataset,
        image_size=args.image_size, normalization=(PRETRAINED_MEAN, PRETRAINED_STD) if transfer else None,
        seed=args.seed, train_augment=not args.cache_features,
    )  # fmt: skip
    class_names = get_class_names(loaders)
    mean, std = (values.tolist() for values in get_normalization(loaders["test"]))
    image_size = loaders["train"].dataset[0][0].shape[-1]  # the size the transforms actually produce
    device = get_device()
    if not args.cache_features:
        loaders = fastest_loaders(loaders, device, image_size)  # on a GPU: decode once, augment there
    model = build_model(args.model, len(class_names), image_size, args.fine_tune, args.dropout)
    check_save_folder(save_path, model)  # room for the checkpoints, before the cached features' backbone pass
    optimizer = get_optimizer(model, args.optimizer, args.lr, args.momentum, args.weight_decay, args.backbone_lr_factor)
    scheduler = get_scheduler(optimizer, args.scheduler, n_epochs=args.epochs, warmup_epochs=warmup_epochs(args.epochs))
    loss = get_loss(args.label_smoothing)

    start = time.perf_counter()
    options = dict(scheduler=scheduler, resume=args.resume)
    if args.cache_features:  # train only the head, on features computed once
        loaders = cache_features(model, loaders)
        history = train_head_on_features(model, loaders, optimizer, loss, args.epochs, save_path, **options)
    else:
        history = optimize(loaders, model, optimizer, loss, args.epochs, save_path, **options)
    train_seconds = time.perf_counter() - start
    if len(history["train_loss"]) < args.epochs:
        return 1
    if not save_path.is_file():
        raise ResumeError(f"{save_path} is missing: the finished run's best weights were removed. Train again "
                          f"without --resume.")  # fmt: skip
    model.load_state_dict(torch.load(save_path, map_location="cpu", weights_only=True))
    trainee = model.head if args.cache_features else model  # the test loader holds features or photos
    test_loss, test_accuracy = one_epoch_test(loaders["test"], trainee, loss)
    record = {
        "model": args.model, "dataset": args.dataset, "image_size": image_size, "class_names": class_names,
        "mean": mean, "std": std, "args": {k: str(v) for k, v in vars(args).items()},
        "history": history, "train_seconds": round(train_seconds, 1),
        "test_loss": test_loss, "test_accuracy": test_accuracy,
    }  # fmt: skip
    save_json(record, save_path.with_suffix(".json"))
    print(f"Best weights: {save_path}; run record: {save_path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
