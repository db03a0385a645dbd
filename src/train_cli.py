"""The command line of the training recipe: `python -m src.train` (src/train.py hands its __main__ to main() here).

Data, model, optimizer and schedule from the recipe's settings (src/recipe.py), which every option overrides; then
training with checkpoints (src.train.optimize), the test, and a run record (.json) beside the best weights:
    python -m src.train --model scratch --dataset fashion-mnist --epochs 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from src.checkpoints import ResumeError, check_save_folder
from src.checks import (
    FRACTION,
    NON_NEGATIVE_FLOAT,
    NUM_WORKERS,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    OneLineParser,
    int_at_least,
)
from src.data import get_class_names, get_data_loaders, get_normalization
from src.files import WriteError, check_writable, save_json
from src.gpu_data import fastest_loaders
from src.helpers import MAX_SEED, DataError, get_device, seed_everything
from src.paths import model_file
from src.optimization import OPTIMIZERS, SCHEDULERS, get_loss, get_optimizer, get_scheduler
from src.presets import DATASETS, MAX_IMAGE_SIZE
from src.recipe import SCRATCH, TRANSFER, recipe_for, warmup_epochs
from src.train import one_epoch_test, optimize, train_head_on_features
from src.transfer import (
    AVAILABLE_MODELS,
    FINE_TUNE_OPTIONS,
    INPUT_SIZE,
    PRETRAINED_MEAN,
    PRETRAINED_STD,
    build_model,
    cache_features,
)


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
