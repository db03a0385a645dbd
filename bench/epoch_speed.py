"""Training throughput over a full epoch: the course-style loop vs this project's fastest path, same model and data.

    python bench/epoch_speed.py                       # 2,500 real-sized photos (2,000 train), resnet18, 50 classes
    python bench/epoch_speed.py --images 5000 --batch-size 128
    python bench/epoch_speed.py --images 50 --classes 5 --batch-size 16 --image-size 32  # a smoke run (tests/test_bench.py)
    python bench/epoch_speed.py --profile 30          # then where 30 fast-path steps spend their time

(a) course style: ImageFolder + PIL decode of the original JPEGs + Resize(256) + RandomCrop(224) + flip, all cores as
    DataLoader workers started afresh every epoch, fp32.
(b) fast path: src.gpu_data (decode once into a uint8 cache on the device, crop/flip/TrivialAugmentWide batches there, src/augment.py); on
    CUDA also bf16 autocast, channels_last and cudnn.benchmark (src.train.optimize's settings).
Both train the same model with src.train.run_epoch on the same training split (80% of the photos). Each path runs one
warm-up epoch, then a timed epoch; the course loop's timed epoch includes its worker start-up, as it does for students.
The one-off cache build is timed separately.
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
import torchvision  # noqa: E402

from bench.common import N_CLASSES, course_loader, machine, make_dataset, photo_source  # noqa: E402
from src.data import get_data_loaders, get_normalization  # noqa: E402
from src.gpu_data import device_loaders  # noqa: E402
from src.helpers import get_device  # noqa: E402
from src.optimization import get_loss  # noqa: E402
from src.presets import LANDMARK_IMAGE_SIZE  # noqa: E402
from src.train import run_epoch  # noqa: E402

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


class FirstBatches:
    """The first n batches of a loader, as a loader (run_epoch needs len())."""

    def __init__(self, loader, n: int):
        self.loader, self.n, self.batch_size = loader, min(n, len(loader)), loader.batch_size

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return (batch for batch, _ in zip(self.loader, range(self.n)))


def profile_steps(loader, model, optimizer, device, steps: int) -> str:
    """Where `steps` training steps of run_epoch (data, forward, backward, optimizer, the loop's own reads) spend their
    time: torch.profiler's ops with the most self time on the device (on the CPU without a GPU), and the share of
    the wall time the device was busy. Returns the printable table."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    batches = FirstBatches(loader, steps)
    with profile(activities=activities) as profiler:
        start = time.perf_counter()
        run_epoch(batches, model, get_loss(), optimizer, device, desc="profiled steps")
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    ops = profiler.key_averages()
    kind = "device" if cuda else "cpu"
    # busy: the kernels' own rows on a GPU (an op's row counts its kernels' time again), every op's on a CPU
    rows = [op for op in ops if op.device_type == DeviceType.CUDA] if cuda else ops
    busy = sum(getattr(op, f"self_{kind}_time_total") for op in rows) / 1e6  # microseconds -> s
    table = ops.table(sort_by=f"self_{kind}_time_total", row_limit=15)
    return (f"{table}\n{len(batches)} steps of {batches.batch_size}: {wall:.3f} s wall, {1e3 * wall / len(batches):.1f} ms a "
            f"step, {len(batches) * batches.batch_size / wall:.0f} img/s; {kind} busy {busy:.3f} s ({100 * busy / wall:.0f}% "
            f"of the wall time)")


def fresh_model(device: torch.device, n_classes: int, channels_last: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=n_classes).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2500, help="photos; 80%% of them are the training split")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=N_CLASSES, help="class folders the photos are spread over")
    parser.add_argument("--image-size", type=int, default=LANDMARK_IMAGE_SIZE, help="crop side (px); 224 as the course")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS", help="then profile this many fast-path steps")
    args = parser.parse_args()
    device = get_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory() as folder:
        root = make_dataset(Path(folder), args.images, args.classes)
        os.environ["LANDMARK_DATA"] = str(root)
        loaders = get_data_loaders(batch_size=args.batch_size, image_size=args.image_size)
        train_indices = loaders["train"].dataset.indices
        mean, std = (values.tolist() for values in get_normalization(loaders["train"]))
        if len(train_indices) < args.batch_size:  # the course loop drops its partial last batch: it would have none
            parser.error(f"--batch-size {args.batch_size} is more than the {len(train_indices)} training photos: lower it")

        model, optimizer = fresh_model(device, args.classes, channels_last=False)
        course = timed_epochs(course_loader(root, args.batch_size, os.cpu_count(), args.image_size, mean, std, train_indices, drop_last=True), model, optimizer, device)

        start = time.perf_counter()
        fast_loaders = device_loaders(loaders, device, args.image_size)
        cache_seconds = time.perf_counter() - start
        model, optimizer = fresh_model(device, args.classes, channels_last=device.type == "cuda")
        fast = timed_epochs(fast_loaders["train"], model, optimizer, device)
        profile = profile_steps(fast_loaders["train"], model, optimizer, device, args.profile) if args.profile else ""

    print(machine(device))
    print(f"data: {len(train_indices)} training photos of {args.images} ({photo_source()}), {args.classes} classes; "
          f"batch {args.batch_size}, {args.image_size} px, resnet18 (11.2M parameters)")
    print(f"course-style loop: {course:8.1f} img/s")
    print(f"fast path:         {fast:8.1f} img/s   (one-off cache build: {cache_seconds:.1f} s)")
    print(f"ratio:             {fast / course:8.2f}x")
    if profile:
        print(f"\nwhere the fast path's time goes:\n{profile}")


if __name__ == "__main__":
    main()
