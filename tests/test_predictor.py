"""Specification of src/predictor.py: the exported predictor file and the tools to test it."""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from src.calibration import DEFAULT_SCORE, Calibration, calibrate, calibrated
from src.data import base_dataset, get_data_loaders, get_normalization
from src.exported import load_predictor
from src.files import WriteError, quiet_torchscript
from src.gpu_data import device_loaders
from src.images import load_rgb_image
from src.optimization import get_loss, get_optimizer
from src.paths import onnx_beside
from src.crop import MAX_ASPECT
from src.predictor import Predictor, export_predictor, export_settings
from src.presets import LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE, eval_resize_size, get_transforms
from src.runtime import load_model
from src.train import optimize
from src.transfer import PRETRAINED_MEAN, PRETRAINED_STD, get_model_transfer_learning
from tests.conftest import LANDMARK_NAMES, small_model, tmpfs

matplotlib.use("Agg")
MEAN, STD = [0.5, 0.45, 0.4], [0.25, 0.25, 0.25]
SIZES = (LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE)  # (crop, resize): the landmark photos' evaluation preprocessing


@pytest.fixture(scope="module")
def transfer_model():
    torch.manual_seed(0)
    return get_model_transfer_learning("efficientnet_lite0", n_classes=3).eval()


def script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with quiet_torchscript():
        return torch.jit.script(module)


def photo(width: int, height: int, seed: int = 0) -> torch.Tensor:
    """A random uint8 'photo' batch [1,3,height,width]."""
    return torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------------------
# Predictor


@pytest.mark.parametrize("kind", ["scratch", "transfer"])
def test_scripted_predictor_equals_eager_for_both_model_kinds(kind, small_scratch_model, transfer_model):
    model = small_scratch_model if kind == "scratch" else transfer_model
    predictor = Predictor(model, LANDMARK_NAMES, MEAN, STD, *SIZES).eval()
    images = torch.cat([photo(300, 200, seed) for seed in range(2)])
    eager, scripted = predictor(images), script(predictor)(images)
    assert (eager - scripted).abs().max() <= 1e-5


def test_probabilities_are_a_distribution_over_the_classes(small_scratch_model):
    probabilities = Predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, *SIZES)(photo(640, 480))
    assert probabilities.shape == (1, 3)
    assert (probabilities >= 0).all() and torch.allclose(probabilities.sum(dim=1), torch.ones(1), atol=1e-6)


def test_uint8_and_float_inputs_give_the_same_result(small_scratch_model):
    predictor = Predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, *SIZES)
    image = photo(500, 400)
    assert torch.allclose(predictor(image), predictor(image.float() / 255), atol=1e-6)


@pytest.mark.parametrize("width, height", [(64, 64), (800, 600), (600, 800), (224, 224), (1000, 250)])
def test_any_photo_size_works(width, height, exported_scratch):
    predictor = load_predictor(exported_scratch)
    assert predictor(photo(width, height)).shape == (1, 3)


def reference_crop(image: torch.Tensor, image_size: int = 224, resize_size: int = 256) -> torch.Tensor:
    """The normalized crop [B, 3, image_size, image_size] by the plain formula: shorter side to resize_size
    (antialiased bilinear), central crop, normalize."""
    x = image.float() / 255.0
    height, width = x.shape[-2:]
    scale = resize_size / min(height, width)
    new_height, new_width = max(round(height * scale), image_size), max(round(width * scale), image_size)
    x = torch.nn.functional.interpolate(x, size=[new_height, new_width], mode="bilinear", antialias=True)
    top, left = round((new_height - image_size) / 2), round((new_width - image_size) / 2)
    x = x[:, :, top : top + image_size, left : left + image_size]
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def reference(model: torch.nn.Module, image: torch.Tensor, image_size: int = 224, resize_size: int = 256):
    """Probabilities [B, classes] by the plain formula: reference_crop, model, softmax."""
    with torch.no_grad():
        return torch.softmax(model(reference_crop(image, image_size, resize_size)), dim=1)


@pytest.mark.parametrize("width, height", [(800, 600), (600, 800), (1600, 400)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["NCHW", "channels_last"])
def test_ordinary_photos_get_bit_identical_probabilities(width, height, layout, small_scratch_model, exported_scratch):
    image = photo(width, height).contiguous(memory_format=layout)
    expected = reference(small_scratch_model, image)
    assert torch.equal(Predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, *SIZES)(image), expected)
    exported = load_predictor(exported_scratch)
    assert all(torch.equal(exported(image), expected) for _ in range(3)), "also once TorchScript has optimized it"


@pytest.mark.parametrize("width, height", [(20_000, 1), (1, 20_000), (1, 1), (100_000, 3)])
def test_odd_shapes_give_probabilities_and_a_bounded_resize(
    width, height, small_scratch_model, exported_scratch, monkeypatch
):
    """A 1 x 20,000 photo used to be resized to 256 x 5,120,000 floats (15.7 GB): only the middle 8:1 is resized now."""
    sizes, interpolate = [], torch.nn.functional.interpolate

    def recording(x, size, **kwargs):
        sizes.append(size)
        return interpolate(x, size, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "interpolate", recording)  # the eager Predictor looks it up at each call
    image = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8)
    eager = Predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, *SIZES)(image)
    [(new_height, new_width)] = sizes
    assert max(new_height, new_width) <= 256 * MAX_ASPECT and min(new_height, new_width) == 256
    probabilities = load_predictor(exported_scratch)(image)
    assert probabilities.shape == (1, 3) and float(probabilities.sum()) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(probabilities, eager, atol=1e-6)


def test_an_elongated_photo_is_classified_from_the_same_middle_as_before(small_scratch_model):
    image = photo(4000, 400)  # 10:1, wider than MAX_ASPECT: cropped to 8:1 before resizing, same centre crop after
    got = Predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, *SIZES)(image)
    assert (got - reference(small_scratch_model, image)).abs().max() < 1e-4


def test_a_tensor_that_is_not_a_batch_of_rgb_images_is_refused_in_one_line(exported_scratch):
    predictor = load_predictor(exported_scratch)
    for wrong in (torch.zeros(3, 60, 80, dtype=torch.uint8), torch.zeros(1, 1, 60, 80), torch.zeros(1, 3, 0, 80)):
        with pytest.raises(Exception, match="expected a batch of RGB images shaped"):
            predictor(wrong)


def test_the_predictor_preprocesses_like_the_eval_transform(small_scratch_model):
    """What the app sees must match what validation saw: resize 256, center crop 224, normalize."""
    image = Image.fromarray(np.asarray(photo(800, 600)[0].permute(1, 2, 0)))
    transformed = get_transforms("landmarks", MEAN, STD)["eval"](image).unsqueeze(0)
    expected = torch.softmax(small_scratch_model(transformed), dim=1)
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0)
    got = Predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, *SIZES)(pixels)
    assert (got - expected).abs().max() < 0.02, "only resampling differences (PIL vs torch) are allowed"


def test_the_exported_file_works_in_a_fresh_process_that_imports_only_torch(exported_scratch):
    code = f"""
import json, sys, torch
predictor = torch.jit.load({str(exported_scratch)!r})
probabilities, scores = predictor.classify(torch.randint(0, 256, (1, 3, 600, 800), dtype=torch.uint8))
print(json.dumps({{"names": list(predictor.class_names), "sum": float(probabilities.sum()),
                  "known": bool(scores[0] >= predictor.threshold), "temperature": predictor.temperature,
                  "imported_src": any(m == "src" or m.startswith("src.") for m in sys.modules)}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    output = json.loads(result.stdout)
    assert output == {"names": LANDMARK_NAMES, "sum": pytest.approx(1.0, abs=1e-5), "known": True, "temperature": 1.0,
                      "imported_src": False}  # fmt: skip


def test_export_writes_atomically_and_leaves_the_model_where_it_was(small_scratch_model, tmp_path):
    path = tmp_path / "exported.pt"
    export_predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, path, *SIZES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported.onnx", "exported.pt"]  # no temporary file left
    assert not small_scratch_model.training


def test_a_model_trained_on_the_device_answers_the_same_from_its_exported_files_on_a_cpu(landmark_data, tmp_path, device):
    """The GPU path end to end: trained on batches of src.gpu_data (on CUDA in bf16 with channels_last weights),
    calibrated on the device, exported; the TorchScript and the ONNX file, run on the CPU, give the probabilities
    the trained model gives on the device (to rounding: cuDNN's convolutions on a GPU round differently; TF32)."""
    loaders = get_data_loaders(batch_size=8, num_workers=0, image_size=32)
    fast = device_loaders(loaders, device, image_size=32, num_workers=0)
    model = small_model()
    optimize(fast, model, get_optimizer(model, "Adam", 1e-3), get_loss(), 2, tmp_path / "best.pt", device=device)
    path = tmp_path / "exported.pt"
    export_predictor(model, path=path, calibration_loader=fast["valid"], **export_settings(loaders["test"]))
    assert next(model.parameters()).device.type == device.type, "the trained model stays where it was"
    runtimes = [load_model(path), load_model(onnx_beside(path))]
    file = runtimes[0].predictor  # the TorchScript file, loaded on the CPU
    photos = [load_rgb_image(p) for p, _ in base_dataset(loaders["test"].dataset).samples]
    for image in photos:
        crop = file.preprocess(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None])
        with torch.no_grad():
            logits = model.eval()(crop.to(device)).float().cpu()
        assert (file.logits(crop) - logits).abs().max() < 1e-2 * logits.abs().max()
        on_device = torch.softmax(logits / file.temperature, dim=1)[0].numpy()
        for runtime in runtimes:
            assert np.abs(runtime.run(image)[0] - on_device).max() < 2e-3, type(runtime).__name__


def test_the_transfer_predictor_exports_and_reloads(transfer_model, tmp_path):
    path = tmp_path / "transfer_exported.pt"
    export_predictor(transfer_model, LANDMARK_NAMES, PRETRAINED_MEAN, PRETRAINED_STD, path, *SIZES, onnx=False)
    reloaded = load_predictor(path)
    eager = Predictor(transfer_model, LANDMARK_NAMES, PRETRAINED_MEAN, PRETRAINED_STD, *SIZES)
    image = photo(600, 800)
    assert (reloaded(image) - eager(image)).abs().max() <= 1e-5


# ----------------------------------------------------------------------------------------------------------------------
# Calibrated probabilities and "none of these landmarks"


def test_an_uncalibrated_file_has_temperature_1_and_knows_every_photo(exported_scratch):
    predictor = load_predictor(exported_scratch)
    assert (predictor.temperature, predictor.threshold, predictor.score_kind) == (1.0, -math.inf, DEFAULT_SCORE)
    probabilities, scores = predictor.classify(torch.cat([photo(640, 480, seed) for seed in range(3)]))
    assert torch.equal(probabilities, predictor(torch.cat([photo(640, 480, seed) for seed in range(3)])))
    assert (scores >= predictor.threshold).all()


@pytest.mark.parametrize("kind", ["max_probability", "energy"])
def test_classify_gives_calibrated_probabilities_and_the_files_score_scripted_or_not(kind, small_scratch_model):
    calibration = Calibration(temperature=2.0, score_kind=kind, threshold=0.5, images=10)
    eager = Predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, *SIZES, calibration=calibration).eval()
    images = torch.cat([photo(500, 400, seed) for seed in range(2)])
    with torch.no_grad():
        expected = calibrated(small_scratch_model(reference_crop(images)), 2.0, kind)
    for predictor in (eager, script(eager)):
        probabilities, scores = predictor.classify(images)
        assert torch.allclose(probabilities, expected[0], atol=1e-6) and torch.allclose(scores, expected[1], atol=1e-5)
        assert torch.equal(predictor(images), probabilities)
        assert (predictor.temperature, predictor.score_kind, predictor.threshold) == (2.0, kind, 0.5)


def test_preprocess_gives_the_normalized_crop_and_logits_the_models_output(small_scratch_model, exported_scratch):
    image = photo(800, 600)
    for predictor in (Predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, *SIZES), load_predictor(exported_scratch)):
        crop = predictor.preprocess(image)
        assert crop.shape == (1, 3, 224, 224) and torch.allclose(crop, reference_crop(image), atol=1e-6)
        with torch.no_grad():
            assert torch.allclose(predictor.logits(crop), small_scratch_model(crop), atol=1e-5)


def test_export_with_the_validation_loader_calibrates_the_file(loaders, small_scratch_model, tmp_path):
    model = copy.deepcopy(small_scratch_model).train()
    path = tmp_path / "calibrated.pt"
    export_predictor(model, path=path, calibration_loader=loaders["valid"], onnx=False, **export_settings(loaders["test"]))
    predictor, expected = load_predictor(path), calibrate(small_scratch_model, loaders["valid"])
    assert predictor.temperature == pytest.approx(expected.temperature) and predictor.score_kind == DEFAULT_SCORE
    assert predictor.threshold == pytest.approx(expected.threshold) and math.isfinite(predictor.threshold)
    crops = torch.cat([images for images, _ in loaders["valid"]])
    with torch.no_grad():
        _, scores = calibrated(predictor.logits(crops), predictor.temperature, predictor.score_kind)
    assert (scores >= predictor.threshold).float().mean() >= 0.95
    assert model.training, "the model is left in the mode it was in"


class NaNModel(torch.nn.Module):
    """A network whose logits are NaN (weights ruined by a diverged training run)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * float("nan")


@pytest.mark.parametrize("case, words", [
    ("training loader", "must be the validation loader (loaders['valid']), not the training loader"),
    ("another image size", "prepares images unlike the exported file (image_size 48, not 32; resize_size 55, not 37)"),
    ("one class", "has images of only 1 class"),
    ("NaN logits", "the model gives NaN or infinite logits for"),
])  # fmt: skip
def test_a_calibration_loader_that_does_not_fit_is_one_line_and_nothing_is_written(
    case, words, loaders, landmark_data, small_scratch_model, tmp_path
):
    model, calibration_loader = small_scratch_model, loaders["valid"]
    if case == "training loader":
        calibration_loader = loaders["train"]
    elif case == "another image size":
        calibration_loader = get_data_loaders(batch_size=8, num_workers=0, image_size=48)["valid"]
    elif case == "one class":
        valid = loaders["valid"].dataset
        first = [i for i in valid.indices if valid.dataset.targets[i] == 0]
        calibration_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(valid.dataset, first), batch_size=8)
    else:
        model = NaNModel(small_scratch_model)
    with pytest.raises(ValueError) as info:
        export_predictor(model, path=tmp_path / "x.pt", calibration_loader=calibration_loader, **export_settings(loaders["test"]))
    assert words in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------------------
# What export_predictor accepts


@pytest.mark.parametrize(
    "change, words",
    [({"class_names": LANDMARK_NAMES[:2]}, "the model gives [1, 3] for one image instead of [1, 2]"),
     ({"class_names": []}, "class_names must be a non-empty list"),
     ({"class_names": ["A", "B", "A"]}, "class_names must all be different"),
     ({"image_size": 0}, "image_size must be at least 1, got 0"),
     ({"resize_size": 200}, "resize_size must be at least 224, got 200"),
     ({"resize_size": -256}, "resize_size must be at least 224, got -256"),
     ({"std": [0.25, 0.0, 0.25]}, "std must be 3 finite numbers"), ({"mean": [0.5]}, "mean must be 3 finite numbers")],
)  # fmt: skip
def test_export_refuses_settings_that_make_no_sense_before_writing(change, words, small_scratch_model, tmp_path):
    settings = {"class_names": LANDMARK_NAMES, "mean": MEAN, "std": STD, "image_size": 224, "resize_size": 256, **change}
    with pytest.raises(ValueError) as info:
        export_predictor(small_scratch_model, path=tmp_path / "exported.pt", **settings)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == [], "nothing written"


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MB file system (tmpfs) at tmp_path/disk."""
    with tmpfs(tmp_path / "disk", "1m") as disk:
        yield disk


def test_export_to_a_full_disk_is_one_line_and_keeps_the_previous_file(small_scratch_model, transfer_model, tiny_disk):
    path = tiny_disk / "exported.pt"
    export_predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, path, *SIZES)  # about 0.1 MB: fits
    before = path.read_bytes()
    with pytest.raises(WriteError) as info:
        export_predictor(transfer_model, LANDMARK_NAMES, MEAN, STD, path, *SIZES)  # about 14 MB: does not
    assert "the disk is full" in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == before and os.listdir(tiny_disk) == ["exported.pt"], "no temporary file left"
    assert list(load_predictor(path).class_names) == LANDMARK_NAMES


# ----------------------------------------------------------------------------------------------------------------------
# From a training run to an exported file, and testing it


@pytest.mark.parametrize("dataset, image_size, resize_size", [("landmarks", 64, 73), ("fashion-mnist", 28, 28)])
def test_export_settings_come_from_the_evaluation_loader(landmark_data, dataset, image_size, resize_size):
    if dataset == "fashion-mnist" and not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    loaders = get_data_loaders(batch_size=4, num_workers=0, dataset=dataset, image_size=image_size, limit=20)
    settings = export_settings(loaders["test"])
    assert (settings["image_size"], settings["resize_size"]) == (image_size, resize_size)
    assert settings["resize_size"] == eval_resize_size(dataset, image_size)
    mean, std = get_normalization(loaders["test"])
    assert (settings["mean"], settings["std"]) == (mean.tolist(), std.tolist())
    assert len(settings["class_names"]) == (3 if dataset == "landmarks" else 10)
    with pytest.raises(ValueError, match="needs an evaluation loader"):
        export_settings(loaders["train"])


def test_a_fashion_mnist_predictor_preprocesses_like_its_eval_transform(small_scratch_model):
    """Fashion-MNIST's eval transform only resizes (no 256/224 crop): the exported file must do the same."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8), "L")
    transformed = get_transforms("fashion-mnist", MEAN, STD)["eval"](image).unsqueeze(0)
    expected = torch.softmax(small_scratch_model(transformed), dim=1)
    pixels = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).unsqueeze(0)
    predictor = Predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, 28, eval_resize_size("fashion-mnist", 28))
    assert (predictor(pixels) - expected).abs().max() < 1e-5




def test_an_exported_file_explains_where_its_model_looked_when_the_model_allows_it(small_scratch_model, tmp_path):
    """MyModel and the transfer models end in average pooling + one linear layer: their files get explain()
    (src/cam.py), which gives the same probabilities as forward; any other model is exported without it."""
    export_predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, tmp_path / "cam.pt", 32, 36, onnx=False)
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))
    other(torch.zeros(1, 3, 32, 32))
    export_predictor(other, LANDMARK_NAMES, MEAN, STD, tmp_path / "plain.pt", 32, 36, onnx=False)
    explaining, plain = load_predictor(tmp_path / "cam.pt"), load_predictor(tmp_path / "plain.pt")
    assert hasattr(explaining, "explain") and not hasattr(plain, "explain")
    with torch.inference_mode():
        probabilities, scores, heatmaps = explaining.explain(photo(50, 40))
        assert torch.allclose(probabilities, explaining(photo(50, 40)), atol=1e-6)
    assert heatmaps.shape == (1, 40, 50) and scores.shape == (1,)


def test_predictor_test_counts_what_the_file_says_of_each_image_alone(exported_scratch, tmp_path, monkeypatch, capsys):
    """Images of one size go through the file together (up to TEST_BATCH): the counts are those of one by one."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from src import predictor as predictor_module
    from src.predictor import predictor_test

    rng = np.random.default_rng(0)
    sizes = [(40, 40)] * 7 + [(50, 30)] * 2 + [(40, 40)] * 6  # runs of one size, broken by another
    for index, size in enumerate(sizes):
        folder = tmp_path / f"{index % 3}.class_{index % 3}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{index:02d}.png")
    dataset = ImageFolder(tmp_path)
    predictor = load_predictor(exported_scratch)
    expected = np.zeros((3, 3), dtype=np.int64)
    for image, label in dataset:
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0)
        expected[label, int(predictor(pixels).argmax())] += 1
    monkeypatch.setattr(predictor_module, "TEST_BATCH", 4)
    accuracy, confusion = predictor_test(DataLoader(dataset), predictor, "the file")
    assert (confusion == expected).all() and accuracy == pytest.approx(np.trace(expected) / len(sizes))
    assert f"Accuracy of the file: {100 * accuracy:.1f}%" in capsys.readouterr().out
