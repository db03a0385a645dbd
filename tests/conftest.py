"""Shared fixtures: a small synthetic landmark dataset, built once per test session, and the devices to run on."""

import contextlib
import importlib.util
import shutil
import subprocess
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from bench.common import SAMPLES  # real landmark photos beside the project, on the team's machines only
from src.synthetic import make_synthetic_dataset

requires_samples = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason=f"real landmark photos not present at {SAMPLES} (only on the team's machines)"
)

N_CLASSES, N_TRAIN, N_TEST = 3, 10, 4
matplotlib.use("Agg")  # tests draw figures without a screen

# A test that takes the `device` fixture runs on the CPU everywhere and again on a CUDA GPU where there is one
# (`pytest -m cuda` runs only the GPU runs): the same specification holds on both.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """The GPU runs of tests skip where there is no CUDA GPU (CI has none)."""
    if cuda_available():
        return
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(no_gpu)


def needs_weights(model_name: str) -> pytest.MarkDecorator:
    """Skips a test of model_name where its ImageNet weights package is not installed (requirements.txt installs all
    three; a GPU machine may carry only Lite0's)."""
    from src.transfer import WEIGHT_PACKAGES

    module = WEIGHT_PACKAGES[model_name][0]
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"{module} is not installed")


@pytest.fixture(params=DEVICES)
def device(request):
    """torch.device("cpu"), then torch.device("cuda") where there is a CUDA GPU."""
    import torch

    return torch.device(request.param)


@pytest.fixture(autouse=True)
def close_figures():
    """Every test starts without open matplotlib figures and leaves none behind."""
    yield
    plt.close("all")


@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "1m", read_only: bool = False):
    """A small (or read-only) file system mounted on `folder` for the duration; skips the test where mounting is not
    allowed (not root, no tmpfs)."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def exif_rotated_jpeg(path: Path, width: int = 80, height: int = 40) -> None:
    """A landscape-stored JPEG whose EXIF says 'rotate 90 degrees': it displays as portrait (height x width)."""
    image = Image.new("RGB", (width, height), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    image.save(path, exif=exif)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A read-only-by-convention ImageFolder dataset: 3 classes x (10 train + 4 test), mixed formats and modes,
    plus one EXIF-rotated JPEG and one 16-bit grayscale PNG in class 00 of train/. Copy it before changing it."""
    root = make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), N_CLASSES, N_TRAIN, N_TEST, seed=0)
    first_class = sorted((root / "train").iterdir())[0]
    exif_rotated_jpeg(first_class / "exif_rotated.jpg")
    sixteen_bit = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    Image.fromarray(sixteen_bit).save(first_class / "sixteen_bit.png")
    return root


@pytest.fixture
def landmark_data(synthetic_root, monkeypatch) -> Path:
    """Point LANDMARK_DATA at the shared synthetic dataset for this test."""
    monkeypatch.setenv("LANDMARK_DATA", str(synthetic_root))
    return synthetic_root


@pytest.fixture
def writable_landmark_data(synthetic_root, tmp_path, monkeypatch) -> Path:
    """A private copy of the synthetic dataset (safe to break), with LANDMARK_DATA pointing at it."""
    root = tmp_path / "landmark_images"
    shutil.copytree(synthetic_root, root, ignore=shutil.ignore_patterns("dataset_stats.json"))
    monkeypatch.setenv("LANDMARK_DATA", str(root))
    return root


LANDMARK_NAMES = ["Eiffel Tower", "Golden Gate Bridge", "Atomium"]  # real landmarks, so places can be looked up


@pytest.fixture(scope="session")
def small_scratch_model():
    """An untrained 3-class MyModel in eval mode with non-trivial BatchNorm statistics (so nothing is zero)."""
    import torch

    from src.model import MyModel

    torch.manual_seed(0)
    model = MyModel(num_classes=3, dropout=0.3, widths=(8, 16), blocks_per_stage=(1, 1))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="session")
def exported_scratch(small_scratch_model, tmp_path_factory) -> Path:
    """small_scratch_model exported as a predictor file, with LANDMARK_NAMES as its classes."""
    from src.predictor import export_predictor

    path = tmp_path_factory.mktemp("export") / "original_exported.pt"
    export_predictor(small_scratch_model, LANDMARK_NAMES, [0.5, 0.45, 0.4], [0.25, 0.25, 0.25], path, 224, 256)
    return path


@pytest.fixture
def loaders(landmark_data):
    """The synthetic dataset's train/valid/test loaders: batches of 8, 32 px, no worker processes."""
    from src.data import get_data_loaders

    return get_data_loaders(batch_size=8, num_workers=0, image_size=32)


def small_model():
    """A 3-class MyModel small enough to train in a second on the CPU, the same on every call (seeded)."""
    import torch

    from src.model import MyModel

    torch.manual_seed(0)
    return MyModel(num_classes=3, dropout=0.1, stem_stride=1, widths=(8, 16), blocks_per_stage=(1, 1))


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]  # fmt: skip


def local_only_page(browser, url: str):
    """A new Playwright page (1200x900) that may only reach `url`: every other request is refused, as without the
    internet, and recorded in page.refused (map tiles, say)."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.refused = []

    def offline(route):
        if route.request.url.startswith(url):
            return route.continue_()
        page.refused.append(route.request.url)
        return route.abort("internetdisconnected")

    page.route("**/*", offline)
    return page
