"""What the bench/ scripts share: the photos they time on, and the line that says which machine produced a figure."""

import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Subset

from src.paths import PROJECT_ROOT
from src.presets import LANDMARK_IMAGE_SIZE, eval_resize_size

SAMPLES = PROJECT_ROOT.parent / "shared" / "data" / "landmark_samples"  # real landmark photos, on the team's machines
N_CLASSES = 50


GENERATED_PHOTOS = 200  # distinct generated photos at most; more are links to these (15 ms each to make, 1 core)


def make_dataset(root: Path, n_images: int, n_classes: int = N_CLASSES) -> Path:
    """An ImageFolder of n_images photos (+ one test photo per class) in n_classes folders under root: links to the
    real photos (SAMPLES) where they are, else generated 800x600 JPEGs, GENERATED_PHOTOS distinct ones replicated."""
    real = sorted(SAMPLES.rglob("*.jpg")) if SAMPLES.is_dir() else []
    generated: list[Path] = []
    rng = np.random.default_rng(0)
    for split, count in (("train", n_images), ("test", n_classes)):
        for i in range(count):
            folder = root / split / f"{i % n_classes:02d}.Landmark_{i % n_classes}"
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{i}.jpg"
            if real:
                target.symlink_to(real[i % len(real)])
            elif len(generated) == GENERATED_PHOTOS:
                target.symlink_to(generated[i % GENERATED_PHOTOS])
            else:  # a smooth random photo-like image: upsampled noise compresses like a real photo
                small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
                Image.fromarray(small).resize((800, 600), Image.BICUBIC).save(target, quality=90)
                generated.append(target.resolve())
    return root


def course_loader(
    root: Path, batch_size: int, workers: int, image_size: int = LANDMARK_IMAGE_SIZE, mean=(0.5,) * 3, std=(0.25,) * 3,
    indices: list[int] | None = None, loader=torchvision.datasets.folder.default_loader, **loader_options,
) -> DataLoader:  # fmt: skip
    """The course's training loader, the baseline every speed figure is compared with: ImageFolder over root/train/
    (only the photos numbered `indices`, if given), PIL decode (`loader`), Resize + RandomCrop + flip, fp32 tensors."""
    transform = T.Compose([T.Resize(eval_resize_size("landmarks", image_size)), T.RandomCrop(image_size),
                           T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])  # fmt: skip
    dataset = torchvision.datasets.ImageFolder(root / "train", transform=transform, loader=loader)
    dataset = Subset(dataset, indices) if indices is not None else dataset
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, **loader_options)


def photo_source() -> str:
    """Which photos make_dataset uses on this machine."""
    return "real landmark photos, replicated" if SAMPLES.is_dir() else f"generated 800x600 JPEGs, {GENERATED_PHOTOS} distinct, replicated"


def machine(device: torch.device = torch.device("cpu")) -> str:
    """'machine: host, processor or GPU, cores, torch version, CPU threads': printed above every figure."""
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or platform.machine()} CPU"
    return (f"machine: {platform.node()}, {name}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")  # fmt: skip


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds of timings in seconds."""
    return float(np.percentile(seconds, 50) * 1000), float(np.percentile(seconds, 95) * 1000)


def interleaved(calls: dict, argument, runs: int) -> dict:
    """{name: (p50, p95) ms} of call(argument) for each of `calls`, taking turns so that all see the same machine
    state; 10 untimed turns first (TorchScript optimizes during its first calls, allocators settle)."""
    timings = {name: [] for name in calls}
    with torch.inference_mode():
        for _ in range(10):
            for call in calls.values():
                call(argument)
        for _ in range(runs):
            for name, call in calls.items():
                start = time.perf_counter()
                call(argument)
                timings[name].append(time.perf_counter() - start)
    return {name: percentiles(values) for name, values in timings.items()}


def landmark_models(kinds=("scratch", "transfer")) -> dict:
    """{label: (model in eval mode, mean, std)} of the landmark task's two kinds (50 classes), those in `kinds`:
    MyModel untrained, EfficientNet-Lite0 with its ImageNet backbone and a new head (weights do not change timings)."""
    from src.model import MyModel  # here: timm loads only for a bench that builds models
    from src.transfer import PRETRAINED_MEAN, PRETRAINED_STD, get_model_transfer_learning

    builders = {
        "scratch": ("from scratch (MyModel)", lambda: (MyModel(num_classes=N_CLASSES), [0.5] * 3, [0.25] * 3)),
        "transfer": ("transfer (EfficientNet-Lite0)",
                     lambda: (get_model_transfer_learning(n_classes=N_CLASSES), PRETRAINED_MEAN, PRETRAINED_STD)),
    }  # fmt: skip
    models = {}
    for kind in (kind for kind in builders if kind in kinds):
        label, build = builders[kind]
        model, mean, std = build()
        models[label] = model.eval(), mean, std
    return models
