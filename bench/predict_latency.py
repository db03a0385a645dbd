"""Latency of the exported predictors: batch of 1 photo, on the CPU, eager PyTorch vs the exported TorchScript file.

    python bench/predict_latency.py [--runs 50] [--threads N]

Both model kinds are built for the landmark task (50 classes, 224 px); weights do not change the timing, so the from-
scratch model is untrained and the transfer model has its ImageNet backbone with a new head. Each run classifies one
800x600 photo (a real landmark photo when ../shared/data/landmark_samples exists), preprocessing included. Eager and
exported runs alternate, so both see the same machine state. Prints file sizes and p50/p95 latency in milliseconds.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src  # noqa: E402,F401 - sets OMP_WAIT_POLICY before torch loads
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import SAMPLES, machine  # noqa: E402
from src.exported import load_predictor, warm_up  # noqa: E402
from src.images import load_rgb_image  # noqa: E402
from src.model import MyModel  # noqa: E402
from src.predictor import Predictor, export_predictor  # noqa: E402
from src.presets import LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE  # noqa: E402
from src.transfer import PRETRAINED_MEAN, PRETRAINED_STD, get_model_transfer_learning  # noqa: E402

SAMPLE = SAMPLES / "test" / "16.Eiffel_Tower"
NAMES = [f"Landmark {i}" for i in range(50)]


def test_photo() -> torch.Tensor:
    """uint8 [1,3,H,W]: a real 800x600-ish landmark photo if available, else random pixels of that size."""
    photos = sorted(SAMPLE.glob("*.jpg")) if SAMPLE.is_dir() else []
    if photos:
        pixels = np.asarray(load_rgb_image(photos[0])).copy()
    else:
        pixels = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)


def percentiles(seconds: list[float]) -> tuple[float, float]:
    return float(np.percentile(seconds, 50) * 1000), float(np.percentile(seconds, 95) * 1000)


def measure(eager: torch.nn.Module, exported: torch.nn.Module, photo: torch.Tensor, runs: int) -> dict:
    timings = {"eager": [], "exported": []}
    with torch.inference_mode():
        for _ in range(10):  # warm-up: TorchScript optimizes during its first calls, allocators settle
            eager(photo)
            exported(photo)
        for _ in range(runs):
            for name, module in (("eager", eager), ("exported", exported)):
                start = time.perf_counter()
                module(photo)
                timings[name].append(time.perf_counter() - start)
    return {name: percentiles(values) for name, values in timings.items()}


def first_photo_ms(path: Path, photo: torch.Tensor, warmed: bool) -> float:
    """Milliseconds for the first photo after load_predictor (and warm_up, if `warmed`): what an app user waits for."""
    exported = load_predictor(path)
    if warmed:
        warm_up(exported)
    start = time.perf_counter()
    with torch.inference_mode():
        exported(photo)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    photo = test_photo()
    models = {
        "from scratch (MyModel)": (MyModel(num_classes=50).eval(), [0.5] * 3, [0.25] * 3),
        "transfer (EfficientNet-Lite0)": (get_model_transfer_learning(n_classes=50).eval(), PRETRAINED_MEAN, PRETRAINED_STD),
    }
    print(f"{machine()}; photo {photo.shape[-1]}x{photo.shape[-2]}; {args.runs} runs each")  # fmt: skip
    print(f"{'model':<32}{'file MB':>8}{'eager p50':>11}{'p95':>8}{'exported p50':>14}{'p95':>8}{'exp/eager':>11}")
    first_call = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (model, mean, std) in models.items():
            path = Path(folder) / "exported.pt"
            export_predictor(model, NAMES, mean, std, path, LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE)
            first_call[name] = first_photo_ms(path, photo, warmed=False), first_photo_ms(path, photo, warmed=True)
            exported = load_predictor(path)
            result = measure(Predictor(model, NAMES, mean, std, LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE).eval(), exported, photo, args.runs)
            (eager_p50, eager_p95), (exp_p50, exp_p95) = result["eager"], result["exported"]
            print(f"{name:<32}{path.stat().st_size / 1e6:>8.1f}{eager_p50:>11.1f}{eager_p95:>8.1f}"
                  f"{exp_p50:>14.1f}{exp_p95:>8.1f}{exp_p50 / eager_p50:>10.2f}x")  # fmt: skip
    for name, (cold, warmed) in first_call.items():  # what the app's first upload waits for
        print(f"{name}: first photo after loading {cold:.0f} ms; after loading and warm_up {warmed:.0f} ms")


if __name__ == "__main__":
    main()
