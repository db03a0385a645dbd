"""Learning-rate schedules on a short Fashion-MNIST run: the course's ReduceLROnPlateau against the recipe's warm-up +
cosine, for MyModel and (the ablation) the course's plain CNN, and what each model costs on this machine.

    python bench/schedulers.py                                  # 1,500 images per split, 10 epochs, both models
    python bench/schedulers.py --models MyModel --epochs 20 --seed 1  # longer, another start and order of batches

Every run is src.experiments.compare_schedulers: AdamW with the recipe's learning rate, weight decay, label smoothing
and dropout (src/recipe.py, SCRATCH), batch 64, 28 px, class-balanced subsets (`limit` images per split), no worker
processes. All runs start from the same random state (batches, augmentation, dropout), and one model's runs from the
same weights, so within a model the schedule is the only difference, and within a schedule the model.
"plateau" halves the rate after 5 epochs without a lower validation loss; "cosine" warms up for warmup_epochs(epochs)
epochs, then follows a cosine down to 0 at the last epoch.
Prints one row per run: parameters, best and last validation loss and accuracy, wall-clock seconds and images per
second (training + validation passes).
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src  # noqa: E402,F401 - sets OMP_WAIT_POLICY before torch loads

from bench.common import machine  # noqa: E402
from src.data import get_class_names, get_data_loaders  # noqa: E402
from src.experiments import compare_schedulers, summary_rows  # noqa: E402
from src.helpers import get_device, seed_everything  # noqa: E402
from src.model import PlainCNN, count_parameters  # noqa: E402
from src.optimization import SCHEDULERS  # noqa: E402
from src.recipe import SCRATCH, warmup_epochs  # noqa: E402
from src.transfer import build_model  # noqa: E402
from src.visualize import format_table  # noqa: E402

IMAGE_SIZE = 28
MODELS = {  # name -> (number of classes -> a fresh model with the recipe's dropout)
    "MyModel": lambda n_classes: build_model("scratch", n_classes, IMAGE_SIZE, dropout=SCRATCH.dropout),
    "PlainCNN": lambda n_classes: PlainCNN(n_classes, IMAGE_SIZE, dropout=SCRATCH.dropout),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=1500, help="images per split (class-balanced)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=SCRATCH.batch_size)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--schedulers", nargs="+", choices=SCHEDULERS, default=list(SCHEDULERS))
    parser.add_argument("--seed", type=int, default=42, help="initial weights, order of batches, augmentation, dropout")
    args = parser.parse_args()
    device = get_device()
    loaders = get_data_loaders(batch_size=args.batch_size, num_workers=0, limit=args.limit, dataset="fashion-mnist")
    n_train, n_valid = len(loaders["train"].dataset), len(loaders["valid"].dataset)
    histories, rows = {}, []
    for name in args.models:
        seed_everything(args.seed)
        model = MODELS[name](len(get_class_names(loaders)))
        for kind in args.schedulers:  # one call per schedule, to time each; every call starts from the same seed
            start = time.perf_counter()
            history = compare_schedulers(
                model, loaders, args.epochs, SCRATCH.lr, schedulers=[kind], weight_decay=SCRATCH.weight_decay,
                label_smoothing=SCRATCH.label_smoothing, seed=args.seed, device=device,
            )[kind]  # fmt: skip
            seconds = time.perf_counter() - start
            histories[f"{name}, {kind}"] = history
            rows.append({"parameters": f"{count_parameters(model):,}", "wall s": f"{seconds:.0f}",
                         "img/s": f"{args.epochs * (n_train + n_valid) / seconds:.0f}"})  # fmt: skip

    print(machine(device))
    print(f"command: python bench/schedulers.py {' '.join(sys.argv[1:])}")
    print(f"data: Fashion-MNIST, {n_train} train / {n_valid} validation images, {IMAGE_SIZE} px, batch "
          f"{args.batch_size}; AdamW lr {SCRATCH.lr}, weight decay {SCRATCH.weight_decay}, label smoothing "
          f"{SCRATCH.label_smoothing}, dropout {SCRATCH.dropout}; {args.epochs} epochs "
          f"(cosine: {warmup_epochs(args.epochs)} warm-up); seed {args.seed}")  # fmt: skip
    print(format_table([{**summary, **row} for summary, row in zip(summary_rows(histories), rows)]))


if __name__ == "__main__":
    main()
