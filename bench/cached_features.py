"""Transfer learning on a CPU with a frozen backbone: one feature pass, then 10 head epochs on cached features.

    python bench/cached_features.py                  # 4,996 photos (the landmark training set's size), Lite0, 224 px
    python bench/cached_features.py --images 1000 --usual-epochs 0

This is what `python -m src.train --model efficientnet_lite0 --cache-features` and the transfer notebook do on a CPU.
For comparison, it also times one epoch of the usual loop on the same data (augmented training photos and the
validation photos through the frozen backbone), which is what each of the 10 epochs costs without the cache.
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
from src.optimization import get_loss, get_optimizer, get_scheduler  # noqa: E402
from src.train import optimize, run_epoch  # noqa: E402
from src.transfer import INPUT_SIZE, PRETRAINED_MEAN, PRETRAINED_STD, cache_features, get_model_transfer_learning  # noqa: E402

HEAD_EPOCHS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4996, help="training photos (20%% of them become validation)")
    parser.add_argument("--model", default="efficientnet_lite0", choices=sorted(INPUT_SIZE))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=N_CLASSES, help="class folders the photos are spread over")
    parser.add_argument("--usual-epochs", type=int, default=1, help="epochs of the uncached loop to time (0: skip)")
    args = parser.parse_args()
    device = torch.device("cpu")  # the cache is the CPU recipe; on a GPU the fast path trains on images instead
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as folder:
        root = make_dataset(Path(folder) / "data", args.images, args.classes)
        os.environ["LANDMARK_DATA"] = str(root)
        settings = dict(batch_size=args.batch_size, image_size=INPUT_SIZE[args.model],
                        normalization=(PRETRAINED_MEAN, PRETRAINED_STD))  # fmt: skip
        loaders = get_data_loaders(**settings, train_augment=False)  # the clean pass --cache-features uses
        n_images = sum(len(loader.dataset) for loader in loaders.values())
        model = get_model_transfer_learning(args.model, n_classes=args.classes, fine_tune="none")
        loss = get_loss(label_smoothing=0.1)

        start = time.perf_counter()
        feature_loaders = cache_features(model, loaders, device=device)
        feature_seconds = time.perf_counter() - start

        optimizer = get_optimizer(model, "AdamW", 1e-3, weight_decay=0.05)
        scheduler = get_scheduler(optimizer, "cosine", n_epochs=HEAD_EPOCHS, warmup_epochs=1)
        start = time.perf_counter()
        history = optimize(feature_loaders, model.head, optimizer, loss, HEAD_EPOCHS, Path(folder) / "head.pt",
                           scheduler=scheduler, device=device)  # fmt: skip
        head_seconds = time.perf_counter() - start

        usual_seconds = []
        if args.usual_epochs:
            augmented = get_data_loaders(**settings)["train"]
            for epoch in range(args.usual_epochs):
                start = time.perf_counter()
                run_epoch(augmented, model, loss, optimizer, device, desc=f"usual epoch {epoch + 1}")
                run_epoch(loaders["valid"], model, loss, device=device, desc="usual validation")
                usual_seconds.append(time.perf_counter() - start)

    print(machine(device))
    print(f"data: {args.images} {photo_source()} ({len(loaders['train'].dataset)} train / {len(loaders['valid'].dataset)} valid) + "
          f"{len(loaders['test'].dataset)} test; {args.model} at {INPUT_SIZE[args.model]} px, frozen backbone")  # fmt: skip
    print(f"one feature pass over {n_images} images:     {feature_seconds:7.1f} s  ({n_images / feature_seconds:.1f} img/s)")
    print(f"{len(history['train_loss'])} head epochs on cached features: {head_seconds:7.1f} s  (target: < 60 s)")
    if usual_seconds:
        usual = sum(usual_seconds) / len(usual_seconds)
        print(f"one epoch of the usual loop (train + valid): {usual:7.1f} s  (mean of {len(usual_seconds)})")
        print(f"{HEAD_EPOCHS} epochs: usual loop ~{HEAD_EPOCHS * usual:.0f} s ({HEAD_EPOCHS} x the epoch above) vs cached "
              f"{feature_seconds + head_seconds:.0f} s (feature pass + head epochs): "
              f"{HEAD_EPOCHS * usual / (feature_seconds + head_seconds):.1f}x faster")  # fmt: skip


if __name__ == "__main__":
    main()
