"""Specification of src/cam.py: class activation maps, exact for models that end in global average pooling and one
linear layer, and carried from the Predictor's central crop back onto the photo."""

import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from skimage import data
import timm

from src.cam import (
    ClassActivationMapper,
    cam_parts,
    class_activation_maps,
    class_evidence,
    to_photo,
)
from src.crop import MAX_ASPECT, crop_box
from src.files import quiet_torchscript
from src.model import MLPBaseline, MyModel, PlainCNN
from src.predictor import Predictor
from src.saliency import grad_cam
from src.train import train_one_epoch
from src.transfer import AVAILABLE_MODELS, build_model, get_model_transfer_learning, load_imagenet_model
from tests.conftest import LANDMARK_NAMES, needs_weights, small_model
from tests.test_transfer import preprocess

PHOTOS = {  # (height, width): the Predictor's cases
    "landscape": (533, 800), "portrait": (800, 533), "square": (300, 300), "half-pixel margin": (300, 453),
    "wider than 8:1 (cut)": (10, 201), "taller than 8:1 (cut)": (401, 20),  # odd: uncut, they would round otherwise
}  # fmt: skip
SIZES = [(32, 40), (224, 256)]  # (image_size, resize_size): a small crop, and the landmark photos'
PIXEL = 0.1  # photo pixels: PyTorch's antialiased resize moves a pixel's centre by up to 0.08 px from its nominal place


def script(function):
    with quiet_torchscript():
        return torch.jit.script(function)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


# ----------------------------------------------------------------------------------------------------------------------
# What the Predictor does to a photo, seen from inside: a model that records the crop it is given


class CropRecorder(nn.Module):
    """A 'model' for the Predictor that keeps the normalized crop it receives and gives len(LANDMARK_NAMES) zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.crops: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.crops.append(x.clone())
        return torch.zeros(len(x), len(LANDMARK_NAMES))


def ramp_photo(height: int, width: int) -> torch.Tensor:
    """A float photo [1,3,H,W] whose pixel (y, x) is ((x + 0.5) / W, (y + 0.5) / H, 0): its centre, in photo pixels,
    over the photo's size. Resizing keeps a linear ramp linear, so every pixel of the crop says where in the photo it is."""
    rows = ((torch.arange(height) + 0.5) / height).view(height, 1).expand(height, width)
    columns = ((torch.arange(width) + 0.5) / width).view(1, width).expand(height, width)
    return torch.stack([columns, rows, torch.zeros(height, width)]).unsqueeze(0)


def predictor_crop(photo: torch.Tensor, image_size: int, resize_size: int) -> torch.Tensor:
    """The crop [B,3,S,S] the eager Predictor feeds its model for `photo` (mean 0, std 1: the crop is the resized
    photo's pixels)."""
    recorder = CropRecorder()
    Predictor(recorder, LANDMARK_NAMES, [0.0] * 3, [1.0] * 3, image_size, resize_size)(photo)
    return recorder.crops[0]


def seen_box(height: int, width: int, image_size: int, resize_size: int) -> list[float]:
    """[top, left, bottom, right] in photo pixels of what the Predictor's model sees, read off a ramp photo's crop:
    the centres of its first and last pixels, widened by half a pixel's step."""
    crop = predictor_crop(ramp_photo(height, width), image_size, resize_size)[0].double()
    columns, rows = crop[0, 0] * width, crop[1, :, 0] * height  # photo x of each crop column, photo y of each crop row
    column_step, row_step = (columns[-1] - columns[0]) / (image_size - 1), (rows[-1] - rows[0]) / (image_size - 1)
    return [float(rows[0] - row_step / 2), float(columns[0] - column_step / 2),
            float(rows[-1] + row_step / 2), float(columns[-1] + column_step / 2)]  # fmt: skip


def centres(length: int) -> torch.Tensor:
    return torch.arange(length, dtype=torch.float64) + 0.5


# ----------------------------------------------------------------------------------------------------------------------
# cam_parts


def imagenet_lite0() -> nn.Module:
    return load_imagenet_model("efficientnet_lite0")


MODELS = [
    pytest.param(lambda: MyModel(num_classes=5), id="MyModel for 224 px"),
    pytest.param(lambda: build_model("scratch", 3, 32), id="MyModel for 32 px (build_model)"),
    *[pytest.param(lambda name=name: build_model(name, 3, 224), id=f"{name} transfer (build_model)",
                   marks=needs_weights(name)) for name in AVAILABLE_MODELS],  # fmt: skip
    pytest.param(imagenet_lite0, id="ImageNet EfficientNet-Lite0 (timm)"),
]


@pytest.mark.parametrize("make", MODELS)
def test_the_linear_layer_on_the_average_of_the_features_is_the_model(make):
    torch.manual_seed(0)
    model = make().eval()
    features, classifier = cam_parts(model)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feature_maps = features(x)
        assert feature_maps.dim() == 4 and feature_maps.shape[1] == classifier.in_features
        torch.testing.assert_close(classifier(feature_maps.mean((2, 3))), model(x), atol=1e-5, rtol=1e-5)


def test_the_parts_are_the_models_own_modules():
    model = get_model_transfer_learning(n_classes=3).eval()
    features, classifier = cam_parts(model)
    own = {id(parameter) for parameter in model.parameters()}
    assert {id(parameter) for parameter in (*features.parameters(), *classifier.parameters())} <= own
    assert classifier is model.head[-1]


def max_pooled_efficientnet() -> nn.Module:
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, global_pool="max")


def two_layer_head(model: nn.Module) -> nn.Module:
    model.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 8), nn.ReLU(), nn.Linear(8, 3))
    return model


def max_pooled_head(model: nn.Module) -> nn.Module:
    model.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(256, 3))
    return model


def two_layer_transfer_head(model: nn.Module) -> nn.Module:
    model.head = nn.Sequential(nn.Linear(model.num_features, 8), nn.ReLU(), nn.Linear(8, 3))
    return model


@pytest.mark.parametrize(
    "make",
    [
        lambda: PlainCNN(3, 32),  # flattens the feature maps: one weight per position, no pooling
        lambda: MLPBaseline(3, 32),
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)),
        lambda: two_layer_head(MyModel(num_classes=3)),
        lambda: max_pooled_head(MyModel(num_classes=3)),
        lambda: two_layer_transfer_head(get_model_transfer_learning(n_classes=3)),
        max_pooled_efficientnet,
    ],
    ids=["PlainCNN", "MLPBaseline", "unknown Sequential", "MyModel, two-layer head", "MyModel, max-pooled",
         "TransferModel, two-layer head", "EfficientNet, max-pooled"],
)  # fmt: skip
def test_a_model_without_global_average_pooling_and_one_linear_layer_is_refused(make):
    with pytest.raises(ValueError, match="does not end in global average pooling and one linear layer"):
        cam_parts(make())


# ----------------------------------------------------------------------------------------------------------------------
# Class activation maps


def test_the_evidence_averages_to_the_logit_less_the_bias():
    torch.manual_seed(0)
    linear = nn.Linear(6, 4)
    feature_maps = torch.randn(3, 6, 5, 7)
    classes = torch.tensor([2, 0, 3])
    evidence = class_evidence(feature_maps, linear.weight, classes)
    assert evidence.shape == (3, 5, 7)
    with torch.no_grad():
        logits = linear(feature_maps.mean((2, 3)))
    torch.testing.assert_close(evidence.mean((1, 2)) + linear.bias[classes], logits[torch.arange(3), classes])


def test_the_map_keeps_what_raises_the_class_scaled_to_a_peak_of_one():
    feature_maps = torch.tensor([[[[1.0, -2.0], [4.0, 0.5]]]])  # one channel: its weight 2 doubles it
    maps = class_activation_maps(feature_maps, torch.tensor([[2.0]]), torch.tensor([0]))
    torch.testing.assert_close(maps, torch.tensor([[[0.25, 0.0], [1.0, 0.125]]]))  # negatives 0, peak 1


def test_a_class_nothing_supports_has_an_all_zero_map():
    maps = class_activation_maps(torch.ones(1, 2, 3, 3), torch.tensor([[-1.0, -1.0]]), torch.tensor([0]))
    assert torch.equal(maps, torch.zeros(1, 3, 3))


def test_each_image_gets_the_map_of_its_own_class():
    feature_maps = torch.rand(2, 3, 4, 4) + 0.1
    weight = torch.eye(3)  # class c: channel c
    maps = class_activation_maps(feature_maps, weight, torch.tensor([2, 0]))
    for image, channel in ((0, 2), (1, 0)):
        expected = feature_maps[image, channel] / feature_maps[image, channel].max()
        torch.testing.assert_close(maps[image], expected)


# ----------------------------------------------------------------------------------------------------------------------
# From the crop to the photo


@pytest.mark.parametrize("image_size, resize_size", SIZES)
@pytest.mark.parametrize("height, width", PHOTOS.values(), ids=PHOTOS.keys())
def test_the_crop_box_is_where_the_predictor_crops(height, width, image_size, resize_size):
    expected = seen_box(height, width, image_size, resize_size)
    box = crop_box(height, width, resize_size, image_size, MAX_ASPECT)
    assert box == pytest.approx(expected, abs=PIXEL)


@pytest.mark.parametrize("height, width", PHOTOS.values(), ids=PHOTOS.keys())
def test_the_heatmap_covers_the_crop_and_is_zero_outside_it(height, width):
    top, left, bottom, right = seen_box(height, width, 32, 40)
    heat = to_photo(torch.ones(1, 4, 4), height, width, 40, 32, MAX_ASPECT)[0]
    rows, columns = centres(height), centres(width)
    row_in, row_out = (rows > top + PIXEL) & (rows < bottom - PIXEL), (rows < top - PIXEL) | (rows > bottom + PIXEL)
    column_in = (columns > left + PIXEL) & (columns < right - PIXEL)
    column_out = (columns < left - PIXEL) | (columns > right + PIXEL)
    assert heat.shape == (height, width)
    assert torch.all(heat[row_in][:, column_in] == 1)
    assert torch.all(heat[row_out] == 0) and torch.all(heat[:, column_out] == 0)


@pytest.mark.parametrize("height, width", [PHOTOS["landscape"], PHOTOS["portrait"]], ids=["landscape", "portrait"])
@pytest.mark.parametrize("cell", [(1, 1), (2, 5), (5, 3)])  # inside: an edge cell's value holds out to the crop's edge
def test_each_cell_of_the_map_lands_where_it_was_in_the_crop(height, width, cell):
    top, left, bottom, right = seen_box(height, width, 224, 256)
    maps = torch.zeros(1, 7, 7)
    maps[0, cell[0], cell[1]] = 1.0
    heat = to_photo(maps, height, width, 256, 224, MAX_ASPECT)[0]
    cell_height, cell_width = (bottom - top) / 7, (right - left) / 7
    centre_y, centre_x = top + (cell[0] + 0.5) * cell_height, left + (cell[1] + 0.5) * cell_width
    peak = divmod(int(heat.argmax()), width)
    assert abs(peak[0] + 0.5 - centre_y) <= 0.5 + PIXEL and abs(peak[1] + 0.5 - centre_x) <= 0.5 + PIXEL  # nearest
    assert float(heat.max()) >= (1 - (0.5 + PIXEL) / cell_height) * (1 - (0.5 + PIXEL) / cell_width)  # half a pixel off
    rows, columns = torch.nonzero(heat, as_tuple=True)  # bilinear: nothing beyond the neighbouring cells' centres
    assert torch.all((rows + 0.5 - centre_y).abs() < cell_height)
    assert torch.all((columns + 0.5 - centre_x).abs() < cell_width)


@pytest.mark.parametrize("side, cells", [(32, 4), (64, 7), (224, 7)])
def test_a_crop_that_is_the_whole_photo_is_plain_bilinear_upsampling(side, cells):
    maps = torch.rand(2, cells, cells)
    heat = to_photo(maps, side, side, 32, 32, MAX_ASPECT)  # resize to 32, crop 32: the model sees the whole photo
    expected = F.interpolate(maps.unsqueeze(1), size=(side, side), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(heat, expected)


def test_the_functions_compile_with_torchscript_and_compute_the_same():
    feature_maps, weight, classes = torch.randn(2, 5, 7, 7), torch.randn(3, 5), torch.tensor([1, 2])
    maps = class_activation_maps(feature_maps, weight, classes)
    assert torch.equal(script(class_activation_maps)(feature_maps, weight, classes), maps)
    assert torch.equal(script(to_photo)(maps, 533, 800, 256, 224, 8), to_photo(maps, 533, 800, 256, 224, 8))


# ----------------------------------------------------------------------------------------------------------------------
# ClassActivationMapper: the crop -> (logits, heat maps of the photo), scripted as it runs in the exported predictor


def ramp_mapper(image_size: int, resize_size: int, explained: int) -> torch.jit.ScriptModule:
    """Features: the crop averaged over 4x4 cells; class 0 is the first channel (the photo's x), class 1 the second (its
    y); the bias makes `explained` the top class (the map leaves the bias out)."""
    classifier = nn.Linear(3, 2)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        classifier.bias.copy_(torch.tensor([10.0, 0.0] if explained == 0 else [0.0, 10.0]))
    return script(ClassActivationMapper(nn.AvgPool2d(4), classifier, image_size, resize_size, MAX_ASPECT))


@pytest.mark.parametrize("explained, along", [(0, "x"), (1, "y")])
@pytest.mark.parametrize("height, width", PHOTOS.values(), ids=PHOTOS.keys())
def test_a_ramp_seen_by_the_model_lands_on_the_photo_pixels_it_came_from(height, width, explained, along):
    """The crop of a ramp photo, averaged over cells, is the ramp at the cells' centres; their bilinear interpolation on
    the photo is the ramp again (held at its first and last cell's value beyond them), divided by the last cell's."""
    mapper = ramp_mapper(32, 40, explained)
    top, left, bottom, right = seen_box(height, width, 32, 40)
    logits, heat = mapper(predictor_crop(ramp_photo(height, width), 32, 40), height, width)
    assert logits.argmax().item() == explained and heat.shape == (1, height, width)
    start, end, length = (left, right, width) if along == "x" else (top, bottom, height)
    cell = (end - start) / 8  # 32 px crop / 4 px cells
    ramp = centres(length).clamp(start + cell / 2, end - cell / 2) / (end - cell / 2)
    rows = (centres(height) > top + PIXEL) & (centres(height) < bottom - PIXEL)
    columns = (centres(width) > left + PIXEL) & (centres(width) < right - PIXEL)
    expected = (ramp.view(1, -1) if along == "x" else ramp.view(-1, 1)).expand(height, width)
    tolerance = PIXEL / (end - cell / 2)  # a tenth of a pixel, on the ramp's scale
    torch.testing.assert_close(heat[0][rows][:, columns].double(), expected[rows][:, columns], atol=tolerance, rtol=0)


@pytest.mark.parametrize("kind", ["scratch", "transfer"])
def test_the_scripted_mapper_gives_the_models_logits_and_its_eager_heatmaps(kind, small_scratch_model):
    model = small_scratch_model if kind == "scratch" else get_model_transfer_learning(n_classes=3).eval()
    mapper = ClassActivationMapper(*cam_parts(model), 224, 256, MAX_ASPECT)
    crop = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits, heat = script(mapper)(crop, 533, 800)
        torch.testing.assert_close(logits, model(crop))
        torch.testing.assert_close(heat, mapper(crop, 533, 800)[1])
    assert heat.shape == (2, 533, 800) and heat.min() >= 0 and heat.max() <= 1


class ExplainingModel(nn.Module):
    """How the Predictor will hold it: the model, and a mapper built on the model's own modules."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.cam = ClassActivationMapper(*cam_parts(model), 224, 256, MAX_ASPECT)

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        return self.model(crop)

    @torch.jit.export
    def explain(self, crop: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cam(crop, height, width)


def saved(module: nn.Module) -> bytes:
    buffer = io.BytesIO()
    with quiet_torchscript():
        torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


def test_a_file_with_the_mapper_holds_the_weights_once_and_explains_after_loading():
    model = MyModel(num_classes=50).eval()  # 11 MB of weights
    with_mapper = saved(ExplainingModel(model))
    assert len(with_mapper) < 1.01 * len(saved(model))  # the mapper's code, not a second copy of the weights
    with quiet_torchscript():
        loaded = torch.jit.load(io.BytesIO(with_mapper))
    crop = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits, heat = loaded.explain(crop, 300, 400)
        torch.testing.assert_close(logits, model(crop))
    assert heat.shape == (1, 300, 400)


# ----------------------------------------------------------------------------------------------------------------------
# The CAM is Grad-CAM on the pooled layer: the gradient of the logit there is the class's weights over h * w


def cam_and_grad_cam(model: nn.Module, images: torch.Tensor, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(CAM, Grad-CAM) [B,H,W] of each image's predicted class, both bilinearly upsampled to the images' size and
    scaled to a peak of 1, as src.saliency.grad_cam does."""
    features, classifier = cam_parts(model)
    with torch.no_grad():
        feature_maps = features(images)
        classes = classifier(feature_maps.mean((2, 3))).argmax(1)
        maps = class_activation_maps(feature_maps, classifier.weight, classes)
    upsampled = F.interpolate(maps.unsqueeze(1), size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    upsampled = upsampled / upsampled.amax((1, 2), keepdim=True).clamp_min(1e-12)
    return upsampled, grad_cam(model, images, layer)


def test_cam_is_grad_cam_on_a_trained_model(loaders):
    model = small_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        train_one_epoch(loaders["train"], model, optimizer, nn.CrossEntropyLoss())
    images = next(iter(loaders["test"]))[0]
    cam, reference = cam_and_grad_cam(model.eval(), images, model.stages[-1])  # the layer the notebook explains
    torch.testing.assert_close(cam, reference, atol=1e-4, rtol=0)
    for a, b in zip(cam, reference):
        assert b.max() == 0 or pearson(a, b) > 0.999


def test_cam_is_grad_cam_on_imagenet_photos():
    model = imagenet_lite0()
    images = torch.cat([preprocess(photo(), 224) for photo in (data.coffee, data.chelsea, data.rocket)])
    cam, reference = cam_and_grad_cam(model, images, model.bn2)  # the layer the transfer notebook explains
    torch.testing.assert_close(cam, reference, atol=1e-4, rtol=0)
    assert min(pearson(a, b) for a, b in zip(cam, reference)) > 0.999
