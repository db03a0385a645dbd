"""src/crop.py: the recipe's arithmetic, which the TorchScript file, the ONNX runtime and the web page share."""

import torch

from src.crop import crop_geometry
from src.files import quiet_torchscript


def test_crop_geometry_of_a_landscape_photo():
    # 533 x 800: nothing cut; 800 * 256 / 533 = 384.2 -> 384; (384 - 224) / 2 = 80 columns off each side, 16 rows
    assert crop_geometry(533, 800, 256, 224, 8) == [0, 0, 533, 800, 256, 384, 16, 80]


def test_a_photo_longer_than_max_aspect_keeps_its_middle():
    # 10 x 200: cut to its middle 80 columns; 10 rows -> 256, 80 columns -> 2048
    assert crop_geometry(10, 200, 256, 224, 8) == [0, 60, 10, 80, 256, 2048, 16, 912]


def test_halves_round_to_even():
    # 600 x 800: 800 * 256 / 600 = 341.3 -> 341 columns; (341 - 224) / 2 = 58.5 -> 58 (Python's round; JS's Math.round
    # would give 59, one column off)
    assert crop_geometry(600, 800, 256, 224, 8) == [0, 0, 600, 800, 256, 341, 16, 58]


def test_it_compiles_with_torchscript_and_computes_the_same():
    with quiet_torchscript():
        scripted = torch.jit.script(crop_geometry)
    for shape in ((10, 200), (600, 800), (801, 333)):
        assert scripted(*shape, 256, 224, 8) == crop_geometry(*shape, 256, 224, 8)
