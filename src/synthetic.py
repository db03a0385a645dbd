"""A small synthetic landmark dataset that a CNN can learn: for tests, quick notebook runs and benchmarks, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

def make_synthetic_dataset(
    root: str | Path, n_classes: int = 4, n_train: int = 16, n_test: int = 4, seed: int = 0
) -> Path:
    """Write a small landmark-style ImageFolder (train/, test/) that a CNN can learn; returns root.

    Class k is striped at angle k*90/n_classes degrees in its own colour, plus noise, so it is learnable.
    Files vary like real data: JPEG and PNG, sizes 48-160 px in both orientations, and RGB, grayscale, RGBA,
    palette and CMYK modes.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    modes = ["RGB", "L", "RGBA", "P", "CMYK"]
    for split, count in (("train", n_train), ("test", n_test)):
        for k in range(n_classes):
            folder = root / split / f"{k:02d}.Synthetic_Landmark_{chr(65 + k)}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = _striped_image(k, n_classes, rng).convert(modes[i % len(modes)])
                suffix = ".jpg" if image.mode in ("RGB", "L", "CMYK") else ".png"
                image.save(folder / f"{split}_{k}_{i}{suffix}")
    return root


def _striped_image(k: int, n_classes: int, rng: np.random.Generator) -> Image.Image:
    height, width = (int(v) for v in rng.integers(48, 161, size=2))
    # Angles within [0, 90) degrees: a horizontal flip (a training augmentation) turns angle a into 180 - a,
    # which is no other class's angle. The period scales with the image so resizing keeps the stripes.
    angle = 0.5 * np.pi * k / n_classes
    period = min(height, width) / 5
    y, x = np.mgrid[0:height, 0:width]
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase) > 0
    colour = np.array([np.cos(2 * angle) + 1, np.sin(2 * angle) + 1, 1 - np.cos(2 * angle)]) * 110
    pixels = stripes[..., None] * colour + rng.normal(30, 15, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
