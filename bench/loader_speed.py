"""Images per second that the standard DataLoaders deliver (no model): what decoding and augmentation cost.

    python bench/loader_speed.py                     # 2,000 real-sized photos, every core a worker
    python bench/loader_speed.py --images 4000 --workers 8

(a) course style: ImageFolder's default PIL loader (full-size JPEG decode) + Resize(256) + RandomCrop(224) + flip
(b) the same transforms, photos read by src.helpers.load_rgb_image(min_side=256): JPEGs decoded at reduced scale
(c) this project's training loader, src.data.get_data_loaders()["train"] (also RandomResizedCrop + TrivialAugmentWide)
Each is timed over its second epoch: workers already running (persistent), files in the OS cache.
Data: ../shared/data/landmark_samples photos replicated (symlinks) when present, else generated 800x600 JPEGs.
"""

import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src  # noqa: E402,F401 - sets OMP_WAIT_POLICY before torch loads
from torch.utils.data import DataLoader  # noqa: E402

from bench.common import N_CLASSES, course_loader, machine, make_dataset, photo_source  # noqa: E402
from src.data import get_data_loaders  # noqa: E402
from src.helpers import cpu_cores  # noqa: E402
from src.images import load_rgb_image  # noqa: E402
from src.presets import LANDMARK_RESIZE_SIZE  # noqa: E402


def images_per_second(loader: DataLoader) -> float:
    for _ in loader:  # warm-up epoch: starts the persistent workers, fills the OS file cache
        pass
    start = time.perf_counter()
    count = sum(len(labels) for _, labels in loader)
    return count / (time.perf_counter() - start)


def course_style(root: Path, batch_size: int, workers: int, reduced_decode: bool) -> DataLoader:
    """The course's loader (bench/common.py), decoding full-size JPEGs or, with reduced_decode, at a reduced scale."""
    decode = functools.partial(load_rgb_image, min_side=LANDMARK_RESIZE_SIZE) if reduced_decode else None
    options = {"loader": decode} if decode else {}  # default: PIL open + convert("RGB"), as the course does
    return course_loader(root, batch_size, workers, persistent_workers=workers > 0, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=N_CLASSES, help="class folders the photos are spread over")
    parser.add_argument("--workers", type=int, default=cpu_cores())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = make_dataset(Path(folder), args.images, args.classes)
        os.environ["LANDMARK_DATA"] = str(root)
        results = {
            "(a) course style, full-size decode": images_per_second(
                course_style(root, args.batch_size, args.workers, reduced_decode=False)),
            "(b) course style, reduced-scale decode": images_per_second(
                course_style(root, args.batch_size, args.workers, reduced_decode=True)),
            "(c) src.data training loader": images_per_second(
                get_data_loaders(batch_size=args.batch_size, num_workers=args.workers)["train"]),
        }  # fmt: skip
    print(f"{machine()}; {args.workers} workers, batch {args.batch_size}")
    print(f"data: {args.images} {photo_source()}")
    for name, rate in results.items():
        print(f"{name:<42}{rate:8.1f} img/s")


if __name__ == "__main__":
    main()
