"""Specification of src/predictor.py: the exported predictor file and the tools to test it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from src.data import get_data_loaders, get_normalization
from src.exported import load_predictor
from src.files import WriteError, quiet_torchscript
from src.predictor import (
    MAX_ASPECT,
    Predictor,
    export,
    export_predictor,
    export_settings,
    most_confused_pairs,
    plot_confusion_matrix,
    predictor_test,
)
from src.presets import LANDMARK_IMAGE_SIZE, LANDMARK_RESIZE_SIZE, eval_resize_size, get_transforms
from src.train_cli import main as train_main
from src.transfer import PRETRAINED_MEAN, PRETRAINED_STD, get_model_transfer_learning
from tests.conftest import LANDMARK_NAMES, tmpfs

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


def reference(model: torch.nn.Module, image: torch.Tensor, image_size: int = 224, resize_size: int = 256):
    """Probabilities [B, classes] by the plain formula: shorter side to resize_size (antialiased bilinear), central
    crop, normalize, model, softmax."""
    x = image.float() / 255.0
    height, width = x.shape[-2:]
    scale = resize_size / min(height, width)
    new_height, new_width = max(round(height * scale), image_size), max(round(width * scale), image_size)
    x = torch.nn.functional.interpolate(x, size=[new_height, new_width], mode="bilinear", antialias=True)
    top, left = round((new_height - image_size) / 2), round((new_width - image_size) / 2)
    x = x[:, :, top : top + image_size, left : left + image_size]
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return torch.softmax(model((x - mean) / std), dim=1)


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
probabilities = predictor(torch.randint(0, 256, (1, 3, 600, 800), dtype=torch.uint8))
print(json.dumps({{"names": list(predictor.class_names), "sum": float(probabilities.sum()),
                  "imported_src": any(m == "src" or m.startswith("src.") for m in sys.modules)}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    output = json.loads(result.stdout)
    assert output == {"names": LANDMARK_NAMES, "sum": pytest.approx(1.0, abs=1e-5), "imported_src": False}


def test_export_writes_atomically_and_leaves_the_model_where_it_was(small_scratch_model, tmp_path):
    path = tmp_path / "exported.pt"
    export_predictor(small_scratch_model, LANDMARK_NAMES, MEAN, STD, path, *SIZES)
    assert [p.name for p in tmp_path.iterdir()] == ["exported.pt"]
    assert not small_scratch_model.training


def test_the_transfer_predictor_exports_and_reloads(transfer_model, tmp_path):
    path = tmp_path / "transfer_exported.pt"
    export_predictor(transfer_model, LANDMARK_NAMES, PRETRAINED_MEAN, PRETRAINED_STD, path, *SIZES)
    reloaded = load_predictor(path)
    eager = Predictor(transfer_model, LANDMARK_NAMES, PRETRAINED_MEAN, PRETRAINED_STD, *SIZES)
    image = photo(600, 800)
    assert (reloaded(image) - eager(image)).abs().max() <= 1e-5


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


def test_export_of_a_checkpoint_without_a_readable_run_record_is_one_line(tmp_path, small_scratch_model):
    checkpoint = tmp_path / "scratch.pt"
    torch.save(small_scratch_model.state_dict(), checkpoint)
    with pytest.raises(ValueError, match=r"scratch.json: no such file\. Export a checkpoint that"):
        export(checkpoint)
    checkpoint.with_suffix(".json").write_text("")  # what a full disk left before records were written atomically
    with pytest.raises(ValueError, match=r"is damaged or from another model \(Expecting value: line 1"):
        export(checkpoint)


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


def test_a_model_trained_by_the_cli_reaches_the_app_by_one_command(landmark_data, tmp_path, monkeypatch, capsys):
    """python -m src.train writes checkpoints/best_val_loss.pt; python -m src.predictor --export turns it into
    checkpoints/original_exported.pt, the file the app loads, and tests it."""
    from src import helpers, predictor

    monkeypatch.setattr(helpers, "CHECKPOINTS_DIR", tmp_path)
    argv = ["--epochs", "1", "--image-size", "64", "--batch-size", "8", "--num-workers", "0"]
    assert train_main(argv) == 0
    assert (tmp_path / "best_val_loss.pt").is_file() and (tmp_path / "best_val_loss.json").is_file()
    assert predictor.main(["--export", str(tmp_path / "best_val_loss.pt")]) == 0
    out = capsys.readouterr().out
    assert f"Exported {tmp_path / 'best_val_loss.pt'} to {tmp_path / 'original_exported.pt'}" in out
    assert f"{tmp_path / 'original_exported.pt'}: test accuracy" in out
    assert list(load_predictor(tmp_path / "original_exported.pt").class_names) == [
        "Synthetic Landmark A", "Synthetic Landmark B", "Synthetic Landmark C"
    ]  # fmt: skip


def test_the_command_line_exports_nothing_from_a_checkpoint_without_its_record(tmp_path, small_scratch_model, capsys):
    from src import predictor

    torch.save(small_scratch_model.state_dict(), tmp_path / "m.pt")
    assert predictor.main(["--export", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'm.json'}: no such file") and err.count("\n") == 1


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


def test_the_command_line_checks_every_model_before_reading_the_test_split(
    exported_scratch, small_scratch_model, tmp_path, monkeypatch, capsys
):
    import src.predictor

    monkeypatch.setattr(src.predictor, "get_data_loaders", lambda **_: pytest.fail("the test split was read first"))
    bare = tmp_path / "bare.pt"
    script(small_scratch_model).save(str(bare))  # a scripted network that is not an exported predictor
    assert src.predictor.main([str(exported_scratch), str(bare)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bare}: a TorchScript model without class names") and err.count("\n") == 1


@pytest.mark.parametrize("argv, words", [(["--dataset", "imagenet"], "argument --dataset: invalid choice"),
                                         (["--bogus"], "unrecognized arguments: --bogus")])  # fmt: skip
def test_the_command_line_refuses_bad_options_in_one_line(argv, words, capsys):
    from src.predictor import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1
