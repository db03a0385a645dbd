"""Proof that training really learns: train on the full Fashion-MNIST (60k train / 10k test) and print test accuracy.

Runs the project's own CLI (src.train) with as many epochs as fit in a time budget: it first times a few training
batches, then picks the epoch count, so the learning-rate schedule (cosine) ends exactly when the budget does.

    python bench/fashion_mnist.py --model scratch --budget-minutes 60
    python bench/fashion_mnist.py --model efficientnet_lite0 --image-size 64 --fine-tune all --budget-minutes 60
    python bench/fashion_mnist.py --model scratch --epochs 30          # fixed epochs, no budget (e.g. on a GPU)

Prints one line per figure: device, epochs, wall time, test accuracy.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src  # noqa: E402,F401 - sets OMP_WAIT_POLICY before torch loads
import torch  # noqa: E402

from bench.common import machine  # noqa: E402
from src.data import get_data_loaders  # noqa: E402
from src.helpers import get_device  # noqa: E402
from src.paths import CHECKPOINTS_DIR  # noqa: E402
from src.optimization import get_loss, get_optimizer  # noqa: E402
from src.train_cli import main as train_main  # noqa: E402
from src.transfer import PRETRAINED_MEAN, PRETRAINED_STD, build_model  # noqa: E402


def seconds_per_epoch(args: argparse.Namespace, n_batches: int = 30) -> float:
    """Time n_batches training steps (after 3 warm-up steps) and scale to one epoch of train + validation."""
    transfer = args.model != "scratch"
    loaders = get_data_loaders(
        batch_size=args.batch_size, num_workers=args.num_workers, dataset="fashion-mnist", image_size=args.image_size,
        normalization=(PRETRAINED_MEAN, PRETRAINED_STD) if transfer else None,
    )  # fmt: skip
    device = get_device()
    model = build_model(args.model, 10, args.image_size or 28, args.fine_tune).to(device).train()
    optimizer, loss_fn = get_optimizer(model, "AdamW", 1e-3), get_loss()
    batches = iter(loaders["train"])
    for step in range(n_batches + 3):
        if step == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        images, labels = next(batches)
        loss = loss_fn(model(images.to(device)), labels.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_batch = (time.perf_counter() - start) / n_batches
    # validation (12k images) costs roughly a third of training per image: forward only
    return per_batch * (len(loaders["train"]) + len(loaders["valid"]) / 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="scratch")
    parser.add_argument("--budget-minutes", type=float, default=60)
    parser.add_argument("--epochs", type=int, default=None, help="fixed epoch count (ignores the budget)")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--fine-tune", default="all")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--num-workers", type=int, default=-1)
    args = parser.parse_args()

    epochs = args.epochs
    if epochs is None:
        estimate = seconds_per_epoch(args)
        epochs = max(1, math.floor(args.budget_minutes * 60 / estimate))
        print(f"estimated {estimate:.0f} s per epoch -> {epochs} epochs in {args.budget_minutes:g} minutes")
    save_path = CHECKPOINTS_DIR / f"bench_fashion_mnist_{args.model}.pt"
    argv = ["--model", args.model, "--dataset", "fashion-mnist", "--epochs", str(epochs),
            "--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers),
            "--fine-tune", args.fine_tune, "--save-path", str(save_path)]  # fmt: skip
    argv += ["--image-size", str(args.image_size)] if args.image_size else []
    argv += ["--lr", str(args.lr)] if args.lr else []
    start = time.perf_counter()
    if train_main(argv) != 0:
        sys.exit("training did not finish")
    wall = time.perf_counter() - start
    record = json.loads(save_path.with_suffix(".json").read_text())
    print(machine(get_device()))
    print(f"command: python bench/fashion_mnist.py {' '.join(sys.argv[1:])}")
    print(f"epochs: {epochs}")
    print(f"train seconds: {record['train_seconds']:.0f}")
    print(f"wall seconds (incl. data and test): {wall:.0f}")
    print(f"test accuracy: {100 * record['test_accuracy']:.2f}%")


if __name__ == "__main__":
    main()
