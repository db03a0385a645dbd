"""Latency of the exported predictors: one photo, on the CPU, preprocessing included: eager PyTorch, the TorchScript
file and the ONNX file in ONNX Runtime, in one run.

    python bench/predict_latency.py [--runs 50] [--threads N] [--json] [--models scratch transfer]

Both model kinds are built for the landmark task (50 classes, 224 px); weights do not change the timing, so the from-
scratch model is untrained and the transfer model has its ImageNet backbone with a new head. Each run classifies one
decoded 800x600 photo (a real landmark photo when ../shared/data/landmark_samples exists) the way the app and the CLI
do (src.runtime's run: from the PIL photo to calibrated probabilities and the score). The three paths alternate, so
all see the same machine state. Prints file sizes and p50/p95 in milliseconds, the ONNX / TorchScript ratio, and what
the first photo after loading costs; --json prints {model: {path: {"p50", "p95"}}} only.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src  # noqa: E402,F401 - sets OMP_WAIT_POLICY before torch loads
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import SAMPLES, interleaved, landmark_models, machine  # noqa: E402
from src.images import load_rgb_image  # noqa: E402
from src.predictor import Predictor, export_predictor  # noqa: E402
from src.presets import LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE  # noqa: E402
from src.runtime import load_model, warm_up  # noqa: E402

SAMPLE = SAMPLES / "test" / "16.Eiffel_Tower"
NAMES = [f"Landmark {i}" for i in range(50)]
PATHS = ("eager", "torchscript", "onnx")


def test_image() -> Image.Image:
    """A real 800x600-ish landmark photo if available, else random pixels of that size (PIL RGB)."""
    photos = sorted(SAMPLE.glob("*.jpg")) if SAMPLE.is_dir() else []
    if photos:
        return load_rgb_image(photos[0])
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8))


def test_photo() -> torch.Tensor:
    """test_image() as a uint8 batch [1,3,H,W]."""
    return torch.from_numpy(np.asarray(test_image()).copy()).permute(2, 0, 1).unsqueeze(0)


def first_photo_ms(path: Path, image: Image.Image, warmed: bool) -> float:
    """Milliseconds for the first photo after load_model (and warm_up, if `warmed`): what an app user waits for."""
    model = load_model(path)
    if warmed:
        warm_up(model)
    start = time.perf_counter()
    model.run(image)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print only {model: {path: {p50, p95}}} as JSON")
    parser.add_argument("--models", nargs="+", choices=["scratch", "transfer"], default=["scratch", "transfer"],
                        help="which kinds to time (default both)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    image = test_image()
    models = landmark_models(args.models)
    say = (lambda *_: None) if args.json else print
    say(f"{machine()}; photo {image.width}x{image.height}; {args.runs} runs each; preprocessing included")
    say(f"{'model':<32}{'file MB':>8}" + "".join(f"{name + ' p50':>16}{'p95':>8}" for name in PATHS) + f"{'onnx/ts':>9}")
    results, first_call = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (model, mean, std) in models.items():
            path = Path(folder) / "exported.pt"
            export_predictor(model, NAMES, mean, std, path, LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE)
            first_call[name] = {"TorchScript": (first_photo_ms(path, image, False), first_photo_ms(path, image, True)),
                                "ONNX Runtime": (first_photo_ms(path.with_suffix(".onnx"), image, False),)}  # fmt: skip
            eager = Predictor(model, NAMES, mean, std, LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE).eval()
            runners = {"eager": lambda photo: eager.classify(torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)[None]),
                       "torchscript": load_model(path).run, "onnx": load_model(path.with_suffix(".onnx")).run}  # fmt: skip
            found = interleaved(runners, image, args.runs)
            results[name] = {path_name: {"p50": p50, "p95": p95} for path_name, (p50, p95) in found.items()}
            sizes = f"{path.stat().st_size / 1e6:.1f}/{path.with_suffix('.onnx').stat().st_size / 1e6:.1f}"
            say(f"{name:<32}{sizes:>8}" + "".join(f"{found[p][0]:>16.1f}{found[p][1]:>8.1f}" for p in PATHS)
                + f"{found['onnx'][0] / found['torchscript'][0]:>8.2f}x")  # fmt: skip
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print("file MB: TorchScript/ONNX")
    for name, runtimes in first_call.items():  # what the app's first upload waits for
        print(f"{name}: first photo after loading: TorchScript {runtimes['TorchScript'][0]:.0f} ms (after warm_up "
              f"{runtimes['TorchScript'][1]:.0f} ms); ONNX Runtime {runtimes['ONNX Runtime'][0]:.0f} ms")


if __name__ == "__main__":
    main()
