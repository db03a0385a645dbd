"""Latency of the static web page (src/web.py, web/app.js): one photo from its file to its card, in headless Chromium.

    python bench/web_latency.py [--runs 50] [--warm-up 5] [--plain-host] [--onnx FILE ...] [--json]

The page is built (python -m src.web build, into a temporary folder) from the --onnx files, else the app's exported ONNX
models when they exist, else freshly exported 50-class models of both kinds (the 50 landmarks' names, 224 px): MyModel
untrained and EfficientNet-Lite0 with its ImageNet backbone and a new head (weights do not change the timing). It is
served on 127.0.0.1 with the cross-origin isolation headers of `python -m src.web serve` (ONNX Runtime Web may then use
threads: half the cores, at most 4), or with --plain-host as any static host serves it (one thread). For each model,
after the page has loaded and warmed it up, the page shows one photo (a real landmark photo when
../shared/data/landmark_samples exists, else a generated 800x600 JPEG) `runs` times: decode, preprocess (the crop
recipe in JavaScript), the model in ONNX Runtime Web (with its class activation map) and the card with its map, timed
inside the page (performance.now; painting is not included). Prints the machine, then per model the seconds until the
page was ready with it, p50/p95 of the whole card in milliseconds and the median of each part.

Measured on the team's 2-core VM (Chromium 156, onnxruntime-web 1.31.1, one thread; a 533x800 landmark photo; 50 runs):
    python bench/web_latency.py   EfficientNet-Lite0 p50 70.5 ms, p95 81.4 (model 50.4); MyModel p50 63.3, p95 76.2
                                  (model 42.8); decoding about 11 ms, the crop recipe 3.5 ms, the card 5.5 ms
Two threads on that machine took 151-233 ms (p50) against 87-110 ms with one, in runs while another job kept the load
average at 4.5-6: the page and the browser need the other core.
"""

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src  # noqa: E402,F401 - sets OMP_WAIT_POLICY before torch loads
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import SAMPLES, machine  # noqa: E402
from src.web import app_models, build_site, make_server  # noqa: E402

SAMPLE = SAMPLES / "test" / "16.Eiffel_Tower"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
# In the page: the photo as a File, then `runs` cards of it after `warm` untimed ones; each card's own timings.
TIME_CARDS = """async ([url, runs, warm]) => {
  const blob = await (await fetch(url)).blob();
  const file = new File([blob], "photo.jpg", { type: blob.type });
  const timings = [];
  for (let run = 0; run < warm + runs; run++) {
    const [card] = await window.landmark.show([file]);
    if (card.dataset.error) throw new Error(card.dataset.error);
    if (run >= warm) timings.push(JSON.parse(card.dataset.ms));
  }
  return timings;
}"""


def export_models(folder: Path) -> dict[str, Path]:
    """Both kinds of model for the 50 landmarks, as ONNX files in `folder` (the app's labels)."""
    from src.landmarks import landmarks
    from src.model import MyModel
    from src.onnx_export import write_onnx
    from src.predictor import predictor_class
    from src.presets import LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE
    from src.transfer import PRETRAINED_MEAN, PRETRAINED_STD, get_model_transfer_learning

    names = [row["name"] for row in landmarks().values()]
    kinds = {
        "Transfer learning (EfficientNet-Lite0)": (get_model_transfer_learning("efficientnet_lite0", len(names)),
                                                   PRETRAINED_MEAN, PRETRAINED_STD, "transfer_exported.onnx"),
        "From scratch (MyModel)": (MyModel(num_classes=len(names)), [0.5] * 3, [0.25] * 3, "original_exported.onnx"),
    }  # fmt: skip
    files = {}
    for label, (model, mean, std, file) in kinds.items():
        predictor = predictor_class(model)(model.eval(), names, mean, std, LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE)
        files[label] = write_onnx(predictor.eval(), folder / file)
    return files


def photo_bytes() -> tuple[str, bytes]:
    """(what it is, JPEG bytes): a real landmark photo if available, else a generated 800x600 photo-like JPEG."""
    photos = sorted(SAMPLE.glob("*.jpg")) if SAMPLE.is_dir() else []
    if photos:
        with Image.open(photos[0]) as image:
            return f"landmark photo {image.width}x{image.height}", photos[0].read_bytes()
    small = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((800, 600), Image.BICUBIC).save(buffer, format="JPEG", quality=90)
    return "generated 800x600 JPEG", buffer.getvalue()


def chromium_version(chromium: str) -> str:
    done = subprocess.run([chromium, "--version"], capture_output=True, text=True)
    return done.stdout.strip() or "Chromium (version unknown)"


def time_models(url: str, labels: list[str], runs: int, warm_up: int, chromium: str) -> dict[str, dict]:
    """For each model label: ONNX Runtime Web's threads in the page, the seconds until the page was ready with it
    (the first: from opening the page; the others: from choosing it) and the timings of each timed card."""
    from playwright.sync_api import sync_playwright

    found = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
                       else route.abort("internetdisconnected"))  # fmt: skip
            start = time.perf_counter()
            page.goto(url)
            for label in labels:
                if label != labels[0]:
                    start = time.perf_counter()
                    page.select_option("#model", label)
                page.locator("body[data-ready=true]").wait_for(timeout=120_000)
                ready = time.perf_counter() - start
                timings = page.evaluate(TIME_CARDS, [url + "_bench/photo.jpg", runs, warm_up])
                found[label] = {"threads": page.evaluate("() => window.landmark.threads"),
                                "ready_s": round(ready, 1), "timings": timings}  # fmt: skip
        finally:
            browser.close()
    return found


def summary(timings: list[dict]) -> dict[str, float]:
    """p50/p95 of the whole card, and the median of each of its parts, in ms."""
    totals = [t["total"] for t in timings]
    parts = {part: np.median([t[part] for t in timings]) for part in ("decode", "preprocess", "model", "card")}
    figures = {"p50": np.percentile(totals, 50), "p95": np.percentile(totals, 95), **parts}
    return {name: round(float(value), 1) for name, value in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warm-up", type=int, default=5, help="untimed cards first (default 5)")
    parser.add_argument("--plain-host", action="store_true", help="serve without cross-origin isolation: one thread")
    parser.add_argument("--onnx", type=Path, nargs="+", help="time these exported ONNX files instead")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("error: Chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as folder:
        if args.onnx:
            models, source = {path.name: path for path in args.onnx}, "the given ONNX files"
        elif app_models():
            models, source = app_models(), "the app's exported models"
        else:
            models, source = export_models(Path(folder)), "freshly exported untrained 50-class models"
        site = build_site(Path(folder) / "site", models)
        (site / "_bench").mkdir()
        photo, content = photo_bytes()
        (site / "_bench" / "photo.jpg").write_bytes(content)
        server = make_server(site, 0, isolated=not args.plain_host)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/"
            found = time_models(url, list(models), args.runs, args.warm_up, chromium)
        finally:
            server.shutdown()
            server.server_close()
        sizes = {label: round(path.stat().st_size / 1e6, 1) for label, path in models.items()}
    results = {label: {"file_mb": sizes[label], "threads": value["threads"], "ready_s": value["ready_s"],
                       **summary(value["timings"])} for label, value in found.items()}  # fmt: skip
    header = f"{machine()}; {chromium_version(chromium)}; {source}; {photo}; {args.runs} runs each"
    if args.json:
        print(json.dumps({"machine": header, "models": results}, indent=1))
        return
    print(header)
    print(f"{'model':<40}{'file MB':>8}{'threads':>8}{'ready s':>8}{'p50':>8}{'p95':>8}"
          f"{'decode':>8}{'preproc':>9}{'model':>7}{'card':>6}  (ms; parts: medians)")  # fmt: skip
    for label, r in results.items():
        print(f"{label:<40}{r['file_mb']:>8.1f}{r['threads']:>8}{r['ready_s']:>8.1f}{r['p50']:>8.1f}{r['p95']:>8.1f}"
              f"{r['decode']:>8.1f}{r['preprocess']:>9.1f}{r['model']:>7.1f}{r['card']:>6.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
