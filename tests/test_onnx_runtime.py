"""Specification of src/onnx_runtime.py: the ONNX file in ONNX Runtime answers as its TorchScript twin does.

The recipe outside the graph (preprocess, cam_to_photo) is checked against the TorchScript file's own; the graph is
checked on the same crops (probabilities within 1e-4), and the whole path from the photo file on real and synthetic
photos (the same top-1 on every photo).
"""

import numpy as np
import pytest
import torch
from PIL import Image

from src.cam import to_photo
from src.crop import MAX_ASPECT
from src.images import open_photo
from src.model import MyModel
from src.onnx_runtime import cam_to_photo, preprocess
from src.predictor import ExplainingPredictor, export_predictor
from src.runtime import load_model
from src.transfer import PRETRAINED_MEAN, PRETRAINED_STD, load_imagenet_model
from tests.conftest import SAMPLES, requires_samples

# (height, width): landscape; 600 x 800, whose crop offset is 58.5 px before rounding (half to even: 58); portrait;
# wider than MAX_ASPECT (cut first); smaller than the crop (upsampled); exactly the resize
PHOTOS = [(533, 800), (600, 800), (640, 427), (40, 900), (20, 30), (256, 256)]


def random_photo(height: int, width: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def pixels(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0)


@pytest.mark.parametrize("height, width", PHOTOS)
def test_the_recipe_outside_the_graph_makes_the_torchscript_files_crop(height, width):
    predictor = ExplainingPredictor(MyModel(num_classes=3), ["a", "b", "c"], [0.5, 0.45, 0.4], [0.25, 0.2, 0.3], 224, 256)
    image = random_photo(height, width)
    expected = predictor.preprocess(pixels(image)) * predictor.std + predictor.mean  # back to [0, 1]
    crop = preprocess(image, 224, 256, MAX_ASPECT)
    assert crop.shape == (3, 224, 224) and crop.dtype == np.float32
    np.testing.assert_allclose(crop, expected[0].numpy(), atol=1e-4)  # measured: at most 3.3e-5


@pytest.mark.parametrize("height, width", PHOTOS)
def test_the_map_lands_on_the_photo_where_the_torchscript_file_puts_it(height, width):
    maps = torch.rand(1, 7, 7, generator=torch.Generator().manual_seed(0))
    expected = to_photo(maps, height, width, 256, 224, MAX_ASPECT)[0].numpy()
    np.testing.assert_allclose(cam_to_photo(maps[0].numpy(), height, width, 256, 224, MAX_ASPECT), expected, atol=1e-5)


def scratch_model() -> MyModel:
    """An untrained 50-class MyModel with varied BatchNorm statistics (its answers are not all alike)."""
    torch.manual_seed(0)
    model = MyModel(num_classes=50)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def exported_pairs(tmp_path_factory) -> dict:
    """{name: (TorchScript model, ONNX model)}: a 50-class MyModel, and EfficientNet-Lite0 with its real ImageNet
    weights and 1,000 classes (answers about real photos, near-ties included), both exported by export_predictor."""
    folder = tmp_path_factory.mktemp("exported")
    pairs = {}
    for name, model, mean, std in [("MyModel", scratch_model(), [0.5, 0.45, 0.4], [0.25, 0.25, 0.25]),
                                   ("Lite0", load_imagenet_model("efficientnet_lite0"), PRETRAINED_MEAN, PRETRAINED_STD)]:
        classes = [f"class {i}" for i in range(model(torch.zeros(1, 3, 32, 32)).shape[1])]
        export_predictor(model, classes, mean, std, folder / f"{name}.pt", 224, 256)
        pairs[name] = load_model(folder / f"{name}.pt"), load_model(folder / f"{name}.onnx")
    return pairs


@pytest.mark.parametrize("name", ["MyModel", "Lite0"])
def test_on_the_same_crops_both_runtimes_give_the_same_probabilities_within_1e4(exported_pairs, name):
    torchscript, onnx_model = exported_pairs[name]
    crops = np.random.default_rng(1).random((4, 3, 224, 224), dtype=np.float32)
    found = onnx_model.session.run(None, {"crop": crops})
    normalized = (torch.from_numpy(crops) - torchscript.predictor.mean) / torchscript.predictor.std
    with torch.no_grad():
        probabilities = torch.softmax(torchscript.predictor.logits(normalized) / torchscript.predictor.temperature, 1)
    np.testing.assert_allclose(found[0], probabilities.numpy(), atol=1e-4)
    assert (found[0].argmax(1) == probabilities.numpy().argmax(1)).all()


def photo_files(folder) -> list:
    """Synthetic photos of every shape in PHOTOS, as PNG and JPEG files."""
    files = []
    for index, (height, width) in enumerate(PHOTOS):
        for suffix in ("png", "jpg"):
            files.append(folder / f"{index}.{suffix}")
            random_photo(height, width, index).save(files[-1])
    return files


def same_answers(pair, files, explain: bool) -> list:
    """The files on which the two runtimes disagree on the top-1, or whose probabilities or scores differ by over
    1e-3; with explain, their heat maps must also be alike."""
    differ = []
    for path in files:
        image = open_photo(path)
        (expected, score, heat), (found, found_score, found_heat) = (model.run(image, explain) for model in pair)
        if expected.argmax() != found.argmax() or np.abs(expected - found).max() > 1e-3 or abs(score - found_score) > 1e-3:
            differ.append(path.name)
        assert not explain or np.abs(heat - found_heat).max() < 0.02  # the same place on the photo
    return differ


@pytest.mark.parametrize("name", ["MyModel", "Lite0"])
def test_from_the_photo_file_both_runtimes_agree_on_synthetic_photos(exported_pairs, name, tmp_path):
    assert same_answers(exported_pairs[name], photo_files(tmp_path), explain=True) == []


@requires_samples
def test_from_the_photo_file_both_runtimes_agree_on_every_real_landmark_photo(exported_pairs):
    files = sorted(SAMPLES.rglob("*.jpg"))
    assert len(files) >= 100
    assert same_answers(exported_pairs["Lite0"], files, explain=False) == []
