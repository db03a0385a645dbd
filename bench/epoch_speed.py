"""Training throughput over a full epoch: the course-style loop vs this project's fastest path, same model and data.

    python bench/epoch_speed.py                       # 2,000 real-sized photos, resnet18-size model, 50 classes
    python bench/epoch_speed.py --images 4000 --batch-size 128

(a) course style: ImageFolder + PIL decode of the original JPEGs + Resize(256) + RandomCrop(224) + flip, all cores as
    DataLoader workers started afresh every epoch, fp32.
(b) fast path: src.gpu_data (decode once into a uint8 cache on the device, crop/flip/colour-jitter batches there); on
    CUDA also bf16 autocast, channels_last and cudnn.benchmark (src.train.optimize's settings).
Both train the same model with src.train.run_epoch. Each path runs one warm-up epoch, then a timed epoch; the course
loop's timed epoch includes its worker start-up, as it does for students. The one-off cache build is timed separately.
Data: ../shared/data/landmark_samples photos replicated (symlinks) when present, else generated 800x600 JPEGs.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src  # noqa: E402,F401 - sets OMP_WAIT_POLICY before torch loads
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from src.data import get_data_loaders, get_normalization  # noqa: E402
from src.gpu_data import device_loaders  # noqa: E402
from src.helpers import PROJECT_ROOT, get_device  # noqa: E402
from src.optimization import get_loss  # noqa: E402
from src.train import run_epoch  # noqa: E402

SAMPLES = PROJECT_ROOT.parent / "shared" / "data" / "landmark_samples"
N_CLASSES = 50


def make_dataset(root: Path, n_images: int) -> Path:
    """An ImageFolder of n_images photos (+ a small test split) in N_CLASSES folders under root."""
    photos = sorted(SAMPLES.rglob("*.jpg")) if SAMPLES.is_dir() else []
    rng = np.random.default_rng(0)
    for split, count in (("train", n_images), ("test", N_CLASSES)):
        for i in range(count):
            folder = root / split / f"{i % N_CLASSES:02d}.Landmark_{i % N_CLASSES}"
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{i}.jpg"
            if photos:
                target.symlink_to(photos[i % len(photos)])
            else:  # a smooth random photo-like image: upsampled noise compresses like a real photo
                small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
                Image.fromarray(small).resize((800, 600), Image.BICUBIC).save(target, quality=90)
    return root


def course_loader(root: Path, batch_size: int, mean, std) -> DataLoader:
    transform = T.Compose([T.Resize(256), T.RandomCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    dataset = torchvision.datasets.ImageFolder(root / "train", transform=transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=os.cpu_count(), drop_last=True)


def timed_epochs(loader, model, optimizer, device) -> float:
    """Images per second of the second of two epochs (the first warms up caches, cuDNN and allocators)."""
    loss = get_loss()
    run_epoch(loader, model, loss, optimizer, device, desc="warm-up epoch")
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run_epoch(loader, model, loss, optimizer, device, desc="timed epoch")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(loader) * loader.batch_size / (time.perf_counter() - start)


def fresh_model(device: torch.device, channels_last: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=N_CLASSES).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    device = get_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory() as folder:
        root = make_dataset(Path(folder), args.images)
        os.environ["LANDMARK_DATA"] = str(root)
        loaders = get_data_loaders(batch_size=args.batch_size, valid_size=0.01)
        mean, std = (values.tolist() for values in get_normalization(loaders["train"]))

        model, optimizer = fresh_model(device, channels_last=False)
        course = timed_epochs(course_loader(root, args.batch_size, mean, std), model, optimizer, device)

        start = time.perf_counter()
        fast_loaders = device_loaders(loaders, device)
        cache_seconds = time.perf_counter() - start
        model, optimizer = fresh_model(device, channels_last=device.type == "cuda")
        fast = timed_epochs(fast_loaders["train"], model, optimizer, device)

    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or platform.machine()} CPU"
    print(f"machine: {platform.node()}, {name}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"data: {args.images} {'real landmark photos (replicated)' if SAMPLES.is_dir() else 'generated 800x600 JPEGs'}, "
          f"batch {args.batch_size}, resnet18 (11.2M parameters), {N_CLASSES} classes")  # fmt: skip
    print(f"course-style loop: {course:8.1f} img/s")
    print(f"fast path:         {fast:8.1f} img/s   (one-off cache build: {cache_seconds:.1f} s)")
    print(f"ratio:             {fast / course:8.2f}x")


if __name__ == "__main__":
    main()
