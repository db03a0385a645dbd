"""Specification of src/predictor.py: the exported predictor file and the tools to test it."""

import json
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from src.data import eval_resize_size, get_data_loaders, get_transforms
from src.predictor import (
    Predictor,
    export,
    export_predictor,
    load_predictor,
    most_confused_pairs,
    plot_confusion_matrix,
    predictor_test,
    quiet_torchscript,
    warm_up,
)
from src.train import main as train_main
from src.transfer import PRETRAINED_MEAN, PRETRAINED_STD, get_model_transfer_learning
from tests.conftest import LANDMARK_NAMES

matplotlib.use("Agg")
MEAN, STD = [0.5, 0.45, 0.4], [0.25, 0.25, 0.25]


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
    predictor = Predictor(model, LANDMARK_NAMES, MEAN, STD).eval()
    images = torch.cat([photo(300, 200, seed) for seed in range(2)])
    eager, scripted = predictor(images), script(predictor)(images)
    assert (eager - scripted).abs().max() <= 1e-5


def test_probabilities_are_a_distribution_over_the_classes(small_scratch_model):
    probabilities = Predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD)(photo(640, 480))
    assert probabilities.shape == (1, 3)
    assert (probabilities >= 0).all() and torch.allclose(probabilities.sum(dim=1), torch.ones(1), atol=1e-6)


def test_uint8_and_float_inputs_give_the_same_result(small_scratch_model):
    predictor = Predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD)
    image = photo(500, 400)
    assert torch.allclose(predictor(image), predictor(image.float() / 255), atol=1e-6)


@pytest.mark.parametrize("width, height", [(64, 64), (800, 600), (600, 800), (224, 224), (1000, 250)])
def test_any_photo_size_works(width, height, exported_scratch):
    predictor = load_predictor(exported_scratch)
    assert predictor(photo(width, height)).shape == (1, 3)


def test_the_predictor_preprocesses_like_the_eval_transform(small_scratch_model):
    """What the app sees must match what validation saw: resize 256, center crop 224, normalize."""
    image = Image.fromarray(np.asarray(photo(800, 600)[0].permute(1, 2, 0)))
    transformed = get_transforms("landmarks", MEAN, STD)["eval"](image).unsqueeze(0)
    expected = torch.softmax(small_scratch_model(transformed), dim=1)
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0)
    got = Predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD)(pixels)
    assert (got - expected).abs().max() < 0.02, "only resampling differences (PIL vs torch) are allowed"


def test_warm_up_runs_a_loaded_predictor_without_changing_its_answers(exported_scratch):
    predictor = load_predictor(exported_scratch)
    with torch.inference_mode():
        cold = predictor(photo(800, 600))
        warm_up(predictor)
        assert torch.allclose(predictor(photo(800, 600)), cold, atol=1e-6)


def test_class_names_and_places_travel_inside_the_file(exported_scratch):
    predictor = load_predictor(exported_scratch)
    assert list(predictor.class_names) == LANDMARK_NAMES
    assert list(predictor.class_places) == ["Paris, France", "San Francisco, California, United States", "Brussels, Belgium"]


def test_the_exported_file_works_in_a_fresh_process_that_imports_only_torch(exported_scratch):
    code = f"""
import json, sys, torch
predictor = torch.jit.load({str(exported_scratch)!r})
probabilities = predictor(torch.randint(0, 256, (1, 3, 600, 800), dtype=torch.uint8))
print(json.dumps({{"names": list(predictor.class_names), "sum": float(probabilities.sum()),
                  "imported_src": any(m == "src" or m.startswith("src.") for m in sys.modules)}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    output = json.loads(result.stdout)
    assert output == {"names": LANDMARK_NAMES, "sum": pytest.approx(1.0, abs=1e-5), "imported_src": False}


def test_export_writes_atomically_and_leaves_the_model_where_it_was(small_scratch_model, tmp_path):
    path = tmp_path / "exported.pt"
    export_predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, path)
    assert [p.name for p in tmp_path.iterdir()] == ["exported.pt"]
    assert not small_scratch_model.training


def test_the_transfer_predictor_exports_and_reloads(transfer_model, tmp_path):
    path = tmp_path / "transfer_exported.pt"
    export_predictor(transfer_model, LANDMARK_NAMES, PRETRAINED_MEAN, PRETRAINED_STD, path)
    reloaded = load_predictor(path)
    eager = Predictor(transfer_model, LANDMARK_NAMES, PRETRAINED_MEAN, PRETRAINED_STD)
    image = photo(600, 800)
    assert (reloaded(image) - eager(image)).abs().max() <= 1e-5


# ----------------------------------------------------------------------------------------------------------------------
# From a training run to an exported file, and testing it


def test_export_from_a_cli_checkpoint_and_predictor_test(landmark_data, tmp_path, capsys):
    checkpoint = tmp_path / "scratch_landmarks.pt"
    argv = ["--model", "scratch", "--epochs", "1", "--image-size", "64", "--batch-size", "8",
            "--num-workers", "0", "--save-path", str(checkpoint)]  # fmt: skip
    assert train_main(argv) == 0
    exported = export(checkpoint, tmp_path / "original_exported.pt")
    predictor = load_predictor(exported)
    assert list(predictor.class_names) == json.loads(checkpoint.with_suffix(".json").read_text())["class_names"]
    assert predictor.image_size == 64

    loaders = get_data_loaders(batch_size=4, num_workers=0)
    accuracy, confusion = predictor_test(loaders["test"], predictor)
    assert confusion.shape == (3, 3) and confusion.sum() == len(loaders["test"].dataset)
    assert accuracy == pytest.approx(np.trace(confusion) / confusion.sum())
    assert "Accuracy of the exported predictor" in capsys.readouterr().out


def test_most_confused_pairs_lists_the_largest_mistakes_first():
    confusion = np.array([[5, 3, 0], [1, 7, 0], [0, 4, 2]])
    assert most_confused_pairs(confusion, ["A", "B", "C"], k=5) == [("C", "B", 4), ("A", "B", 3), ("B", "A", 1)]


def test_the_confusion_matrix_plot_is_titled_and_labelled():
    fig = plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["Eiffel Tower", "Atomium"])
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() == "predicted landmark" and ax.get_ylabel() == "true landmark"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Eiffel Tower", "Atomium"]
    matplotlib.pyplot.close(fig)


def test_a_fashion_mnist_predictor_preprocesses_like_its_eval_transform(small_scratch_model):
    """Fashion-MNIST's eval transform only resizes (no 256/224 crop): the exported file must do the same."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8), "L")
    transformed = get_transforms("fashion-mnist", MEAN, STD)["eval"](image).unsqueeze(0)
    expected = torch.softmax(small_scratch_model(transformed), dim=1)
    pixels = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).unsqueeze(0)
    predictor = Predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, 28, eval_resize_size("fashion-mnist", 28))
    assert (predictor(pixels) - expected).abs().max() < 1e-5


def test_the_command_line_tests_exported_models_on_the_test_split(landmark_data, exported_scratch, capsys):
    from src.predictor import main

    assert main([str(exported_scratch)]) == 0
    assert f"{exported_scratch}: test accuracy" in capsys.readouterr().out


def test_the_command_line_says_in_one_line_when_a_model_is_missing(landmark_data, tmp_path, capsys):
    from src.predictor import main

    assert main([str(tmp_path / "nothing.pt")]) == 2
    err = capsys.readouterr().err
    assert "no exported model there" in err and err.count("\n") == 1
