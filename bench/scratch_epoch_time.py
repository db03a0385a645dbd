"""Time per epoch of the from-scratch model on this machine at several input sizes: the figures behind the CPU recipe.

    python bench/scratch_epoch_time.py                       # 4,996 photos (the landmark training set's size)
    python bench/scratch_epoch_time.py --sizes 128 --images 1000

One epoch = a training pass over the train split (80%) and a validation pass (20%) through the standard loaders
(src.data.get_data_loaders: every core a worker), as `python -m src.train --model scratch --image-size S` runs it.
Each size is timed over one full epoch, worker start-up included, as a student's first epoch.
Data: ../shared/data/landmark_samples photos replicated (symlinks) when present, else generated 800x600 JPEGs.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src  # noqa: E402,F401 - sets OMP_WAIT_POLICY before torch loads
import torch  # noqa: E402

from bench.common import N_CLASSES, machine, make_dataset, photo_source  # noqa: E402
from src.data import get_data_loaders  # noqa: E402
from src.helpers import get_device  # noqa: E402
from src.optimization import get_loss, get_optimizer  # noqa: E402
from src.train import run_epoch  # noqa: E402
from src.transfer import build_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4996, help="training photos (20%% of them become validation)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 160, 128], help="input sizes (px)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=N_CLASSES, help="class folders the photos are spread over")
    args = parser.parse_args()
    device = get_device()
    loss = get_loss(label_smoothing=0.1)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        os.environ["LANDMARK_DATA"] = str(make_dataset(Path(folder), args.images, args.classes))
        for size in args.sizes:
            loaders = get_data_loaders(batch_size=args.batch_size, image_size=size)
            torch.manual_seed(0)
            model = build_model("scratch", args.classes, size)
            optimizer = get_optimizer(model, "AdamW", 2e-3, weight_decay=0.05)
            start = time.perf_counter()
            run_epoch(loaders["train"], model, loss, optimizer, device, desc=f"{size} px training")
            train_seconds = time.perf_counter() - start
            run_epoch(loaders["valid"], model, loss, device=device, desc=f"{size} px validation")
            rows.append((size, train_seconds, time.perf_counter() - start, len(loaders["train"].dataset)))
            del loaders  # stops this size's workers before the next size starts its own

    print(machine(device))
    print(f"data: {args.images} {photo_source()}, batch {args.batch_size}, MyModel ({args.classes} classes), AdamW, fp32")  # fmt: skip
    print("size  train s  epoch s (train+valid)  train img/s   30 epochs")
    for size, train_seconds, epoch_seconds, n_train in rows:
        print(f"{size:4d}  {train_seconds:7.1f}  {epoch_seconds:21.1f}  {n_train / train_seconds:11.1f}"
              f"   {30 * epoch_seconds / 60:6.0f} min")  # fmt: skip


if __name__ == "__main__":
    main()
