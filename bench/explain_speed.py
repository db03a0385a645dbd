"""What "where the model looked" costs: the scripted predictor's plain forward vs its explain method, batch of 1 photo,
on the CPU.

    python bench/explain_speed.py [--runs 50] [--threads N]

Both model kinds are built for the landmark task (50 classes, 224 px); weights do not change the timing, so the from-
scratch model is untrained and the transfer model has its ImageNet backbone with a new head. Each run handles one
533x800 (width x height) photo (a real landmark photo when ../shared/data/landmark_samples exists), preprocessing
included: forward gives the probabilities, explain the probabilities, scores and the class activation heat map at the
photo's size (src/cam.py). Forward and explain runs alternate after 10 warm-up runs each, so both see the same machine
state. Prints p50/p95 in milliseconds, explain / plain (target: at most 1.2x), and the heat map alone
(class_activation_maps + to_photo on the model's last feature maps).
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src  # noqa: E402,F401 - sets OMP_WAIT_POLICY before torch loads
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from bench.common import interleaved, landmark_models, machine, percentiles  # noqa: E402
from bench.predict_latency import NAMES, test_photo  # noqa: E402
from src.cam import cam_parts, class_activation_maps, to_photo  # noqa: E402
from src.files import quiet_torchscript  # noqa: E402
from src.crop import MAX_ASPECT  # noqa: E402
from src.predictor import ExplainingPredictor  # noqa: E402
from src.presets import LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE  # noqa: E402

SIZES = [LANDMARK_RESIZE_SIZE, LANDMARK_IMAGE_SIZE, MAX_ASPECT]


def heatmap(
    feature_maps: torch.Tensor, weight: torch.Tensor, height: int, width: int, sizes: list[int]
) -> torch.Tensor:
    """The heat map part of explain alone, for the class of the largest pooled evidence: [1,K,h,w] -> [1,H,W].
    sizes: [resize_size, image_size, max_aspect]."""
    classes = torch.matmul(feature_maps.mean((2, 3)), weight.t()).argmax(dim=1)
    return to_photo(class_activation_maps(feature_maps, weight, classes), height, width, sizes[0], sizes[1], sizes[2])


def heatmap_ms(model: torch.nn.Module, photo: torch.Tensor, runs: int) -> float:
    """p50 ms of the scripted heat map alone on the model's feature maps of a 224 px crop."""
    features, classifier = cam_parts(model)
    with torch.inference_mode():
        feature_maps = features(torch.randn(1, 3, LANDMARK_IMAGE_SIZE, LANDMARK_IMAGE_SIZE))
        with quiet_torchscript():
            scripted = torch.jit.script(heatmap)
        seconds = []
        for run in range(10 + runs):
            start = time.perf_counter()
            scripted(feature_maps, classifier.weight, photo.shape[-2], photo.shape[-1], SIZES)
            seconds.append(time.perf_counter() - start)
    return percentiles(seconds[10:])[0]


def scripted_predictors() -> dict[str, tuple[nn.Module, torch.jit.ScriptModule]]:
    """{name: (model, its scripted ExplainingPredictor, as export_predictor builds it)} for both landmark model kinds
    (50 classes, 224 px)."""
    torch.manual_seed(0)
    predictors = {}
    for name, (model, mean, std) in landmark_models().items():
        eager = ExplainingPredictor(model, NAMES, mean, std, LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE).eval()
        with quiet_torchscript():
            predictors[name] = model, torch.jit.script(eager)
    return predictors


def options() -> argparse.Namespace:
    """The command line: --runs (timed runs of each kind), --threads; the same options as bench/predict_latency.py."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args()


def main() -> None:
    args = options()
    if args.threads:
        torch.set_num_threads(args.threads)
    photo = test_photo()
    print(f"{machine()}; photo {photo.shape[-1]}x{photo.shape[-2]}; {args.runs} runs each; ExplainingPredictor, "
          f"scripted; from scratch: random weights, transfer: ImageNet backbone + random head")  # fmt: skip
    print(f"{'model':<32}{'plain p50':>10}{'p95':>8}{'explain p50':>13}{'p95':>8}{'explain/plain':>15}{'heat map':>10}")
    for name, (model, predictor) in scripted_predictors().items():
        with torch.inference_mode():  # explain's probabilities are forward's: the network ran once, on the same crop
            difference = (predictor.explain(photo)[0] - predictor(photo)).abs().max().item()
        result = interleaved({"plain": predictor, "explain": predictor.explain}, photo, args.runs)
        (plain_p50, plain_p95), (explain_p50, explain_p95) = result["plain"], result["explain"]
        print(f"{name:<32}{plain_p50:>10.1f}{plain_p95:>8.1f}{explain_p50:>13.1f}{explain_p95:>8.1f}"
              f"{explain_p50 / plain_p50:>14.2f}x{heatmap_ms(model, photo, args.runs):>7.2f} ms")  # fmt: skip
        print(f"  explain's probabilities vs forward's: largest difference {difference:.1e}")

if __name__ == "__main__":
    main()
