"""Latency of the app's answer to one uploaded photo: from the upload to the result card built, map and "where the model
looked" included, on the CPU.

    python bench/app_latency.py [--runs 50] [--warm-up 5] [--k 5] [--models scratch transfer]

Each model kind is exported for the landmark task (the 50 landmarks' names, so the map has its markers; 224 px) as
bench/predict_latency.py does: the from-scratch model untrained, the transfer model with its ImageNet backbone and a new
head (weights do not change the timing). Each is timed twice, in one run: from its TorchScript file alone, and from
the ONNX file export writes beside it (which the app takes when it exists). The app (src.app.LandmarkApp) loads and warms
it up; then each run sets
upload.value to one photo (a real landmark photo when ../shared/data/landmark_samples exists, else a generated 800x600
JPEG), as the browser does, and times until the app's observer has built the card: the photo decoded,
src.runtime.answer (with explain when the file has it), the thumbnail, the heatmap overlay, the chart and the map
widget. Prints p50/p95 in milliseconds, src.runtime.answer alone on the same photo, ONNX / TorchScript, and the app's
own part of "where
the model looked" (a photo-sized heatmap blended into the thumbnail), which a file without explain skips.
"""

import argparse
import datetime
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.app import LandmarkApp  # noqa: E402 - first: importing src sets OMP_WAIT_POLICY before torch loads
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import SAMPLES, landmark_models, machine, percentiles  # noqa: E402
from src.app_card import heatmap_overlay, jpeg, thumbnail  # noqa: E402
from src.images import open_photo  # noqa: E402
from src.landmarks import landmarks  # noqa: E402
from src.predictor import export_predictor  # noqa: E402
from src.presets import LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE  # noqa: E402
from src.runtime import answer  # noqa: E402

SAMPLE = SAMPLES / "test" / "16.Eiffel_Tower"


def photo_bytes() -> tuple[str, bytes]:
    """(name, JPEG bytes): a real landmark photo if available, else a generated 800x600 photo-like JPEG."""
    photos = sorted(SAMPLE.glob("*.jpg")) if SAMPLE.is_dir() else []
    if photos:
        return photos[0].name, photos[0].read_bytes()
    small = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((800, 600), Image.BICUBIC).save(buffer, format="JPEG", quality=90)
    return "generated.jpg", buffer.getvalue()


def upload(app: LandmarkApp, name: str, content: bytes) -> None:
    """What the browser does (as tests/test_app.py); a new timestamp each time, so that the value always changes."""
    app.upload.value = ({"name": name, "type": "image/jpeg", "size": len(content), "content": memoryview(content),
                         "last_modified": datetime.datetime.now(datetime.timezone.utc)},)  # fmt: skip


def time_uploads(app: LandmarkApp, name: str, content: bytes, runs: int, warm_up: int) -> list[float]:
    """Seconds from setting upload.value to the card built, for each of `runs` uploads after `warm_up` untimed ones."""
    seconds = []
    for run in range(warm_up + runs):
        start = time.perf_counter()
        upload(app, name, content)
        elapsed = time.perf_counter() - start
        if run >= warm_up:
            seconds.append(elapsed)
    return seconds


def time_answers(predictor, content: bytes, k: int, runs: int, warm_up: int) -> list[float]:
    """Seconds for src.runtime.answer alone (with explain when the file has it), the photo already decoded."""
    image, seconds = open_photo(io.BytesIO(content)), []
    for run in range(warm_up + runs):
        start = time.perf_counter()
        answer(predictor, image, k, explain=True)
        if run >= warm_up:
            seconds.append(time.perf_counter() - start)
    return seconds


def time_overlays(content: bytes, runs: int, warm_up: int) -> list[float]:
    """Seconds for the app's part of "where the model looked": a heatmap at the photo's size (as explain gives it)
    blended into the thumbnail, as a JPEG."""
    image = open_photo(io.BytesIO(content))
    heatmap, photo, seconds = np.random.default_rng(0).random((image.height, image.width), np.float32), thumbnail(image), []
    for run in range(warm_up + runs):
        start = time.perf_counter()
        jpeg(heatmap_overlay(photo, heatmap))
        if run >= warm_up:
            seconds.append(time.perf_counter() - start)
    return seconds


def card_contents(app: LandmarkApp) -> str:
    """What the last card holds: 'map, where-it-looked toggle' or which of them is missing (and why)."""
    card = app.results.children[0]
    if len(card.children) < 2:
        raise SystemExit(f"the app gave no card for the photo: {getattr(card, 'value', card)}")
    has_map = len(card.children) == 3
    explains = app.predictor().can_explain
    return (f"map {'on' if has_map else 'MISSING'}, where-it-looked "
            f"{'on (explain measured)' if explains else 'off: the file has no explain, not measured'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warm-up", type=int, default=5, help="untimed uploads first (after the app's own warm-up)")
    parser.add_argument("--k", type=int, default=5, help="landmarks shown (the app's slider)")
    parser.add_argument("--models", nargs="+", choices=["scratch", "transfer"], default=["scratch", "transfer"],
                        help="which kinds to time (default both)")
    args = parser.parse_args()
    torch.manual_seed(0)
    names = [row["name"] for row in landmarks().values()]
    models = landmark_models(args.models)
    name, content = photo_bytes()
    size = Image.open(io.BytesIO(content)).size
    print(f"{machine()}; photo {name} {size[0]}x{size[1]}; top {args.k}; {args.warm_up} warm-up + {args.runs} runs each")
    print(f"{'model':<32}{'runtime':<14}{'upload -> card p50':>20}{'p95':>8}{'answer() p50':>14}{'p95':>8}"
          f"{'onnx/ts':>9}  card")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        for label, (model, mean, std) in models.items():
            path = Path(folder) / f"{label.split()[0]}_exported.pt"
            export_predictor(model, names, mean, std, path, LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE)
            alone = Path(folder) / "torchscript" / path.name  # the TorchScript file without an ONNX file beside it
            alone.parent.mkdir(exist_ok=True)
            alone.write_bytes(path.read_bytes())
            card_p50s = {}
            for file in (alone, path):
                app = LandmarkApp({label: file})  # loads, checks and warms the file up, as when the page opens
                app.top_k.value = args.k
                card_p50, card_p95 = percentiles(time_uploads(app, name, content, args.runs, args.warm_up))
                answer_p50, answer_p95 = percentiles(time_answers(app.predictor(), content, args.k, args.runs,
                                                                  args.warm_up))  # fmt: skip
                runtime = app.predictor().runtime
                card_p50s[runtime] = card_p50
                ratio = f"{card_p50 / card_p50s['TorchScript']:>8.2f}x" if runtime != "TorchScript" else " " * 9
                print(f"{label:<32}{runtime:<14}{card_p50:>17.1f} ms{card_p95:>8.1f}{answer_p50:>11.1f} ms"
                      f"{answer_p95:>8.1f}{ratio}  {card_contents(app)}")  # fmt: skip
    overlay_p50, overlay_p95 = percentiles(time_overlays(content, args.runs, args.warm_up))
    print(f"where the model looked, the app's part (a {size[0]}x{size[1]} heatmap blended into the thumbnail, JPEG): "
          f"p50 {overlay_p50:.1f} ms, p95 {overlay_p95:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
