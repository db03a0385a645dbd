"""Specification of src/app_card.py: one photo's answer as the app shows it."""

import io
from pathlib import Path

import ipyleaflet
import ipywidgets as widgets
import numpy as np
import pytest
import torch
from PIL import Image

import src.app_card as card_module
from src.app_card import answer_html, bar_chart_html, heatmap_overlay, jpeg, result_card
from src.runtime import answer, load_model
from src.files import quiet_torchscript


class Older(torch.nn.Module):
    """An exported file from before classify, explain and threshold: forward only, around any exported file."""

    def __init__(self, predictor: torch.jit.ScriptModule):
        super().__init__()
        self.predictor = predictor
        self.class_names = list(predictor.class_names)
        self.class_places = list(predictor.class_places)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(x)


class Explaining(Older):
    """The interface an exported file gets from the calibration and class-activation-map work (classify, explain,
    threshold; see src/exported.py's answer), around any exported file. Its score is the top probability; its heatmap
    is the photo's brightness, so a test can tell where it is hot."""

    def __init__(self, predictor: torch.jit.ScriptModule, threshold: float):
        super().__init__(predictor)
        self.threshold = threshold

    @torch.jit.export
    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = self.predictor(x)
        return probabilities, probabilities.max(dim=1).values

    @torch.jit.export
    def explain(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        probabilities, scores = self.classify(x)
        heat = x.float().mean(dim=1)
        low, high = heat.amin(dim=(1, 2), keepdim=True), heat.amax(dim=(1, 2), keepdim=True)
        return probabilities, scores, (heat - low) / (high - low).clamp_min(1e-6)


def explaining_file(exported: Path, threshold: float, path: Path) -> Path:
    """An exported file with classify/explain/threshold: threshold 0 knows every photo, above 1 none."""
    with quiet_torchscript():
        torch.jit.script(Explaining(torch.jit.load(str(exported)), threshold)).save(str(path))
    return path


def older_file(exported: Path, path: Path) -> Path:
    """An exported file without classify, explain or threshold, as the first exports were."""
    with quiet_torchscript():
        torch.jit.script(Older(torch.jit.load(str(exported)))).save(str(path))
    return path


@pytest.fixture(scope="module")
def explaining(exported_scratch, tmp_path_factory):
    """Loaded predictors that explain: {"known": knows every photo, "unknown": knows none}."""
    folder = tmp_path_factory.mktemp("explaining")
    return {kind: load_model(explaining_file(exported_scratch, threshold, folder / f"{kind}.pt"))
            for kind, threshold in (("known", 0.0), ("unknown", 1.01))}  # fmt: skip


def half_bright_jpeg() -> bytes:
    """A 320x240 photo, dark on the left, bright on the right."""
    pixels = np.full((240, 320, 3), 30, dtype=np.uint8)
    pixels[:, 160:] = 230
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def card_parts(card: widgets.Widget) -> tuple[widgets.VBox, widgets.HTML, ipyleaflet.Map | None]:
    """(the photo's column: caption, picture, toggle or line; the answer in words; the map, if any)."""
    column, words, *world = card.children
    return column, words, (world[0] if world else None)


# ----------------------------------------------------------------------------------------------------------------------
# The answer in words


def test_the_chart_labels_bars_with_name_place_and_probability():
    chart = bar_chart_html([{"name": "Eiffel Tower", "place": "Paris, France", "probability": 0.873}])
    assert "Eiffel Tower" in chart and "Paris, France" in chart and "87.3%" in chart and "width:87.3%" in chart


def test_a_known_photo_gets_its_chart_and_country_and_no_verdict():
    result = {"predictions": [{"name": "Atomium", "place": "Brussels, Belgium", "probability": 0.9}],
              "countries": [("Belgium", 0.9)], "known": True, "heatmap": None}  # fmt: skip
    words = answer_html(result, 50)
    assert words.startswith(bar_chart_html(result["predictions"]))
    assert "Most likely in Belgium (90%)" in words and "does not look like" not in words


def test_a_photo_that_is_none_of_the_landmarks_says_so_and_keeps_its_guesses_in_grey():
    result = {"predictions": [{"name": "Atomium", "place": "Brussels, Belgium", "probability": 0.4}],
              "countries": [("Belgium", 0.4)], "known": False, "heatmap": None}  # fmt: skip
    words = answer_html(result, 50)
    assert "This does not look like any of the 50 landmarks." in words
    assert bar_chart_html(result["predictions"], known=False) in words and "Atomium" in words and "40.0%" in words
    assert 'class="chart unknown"' in words and card_module.BAR_COLOURS[False] in words
    assert card_module.BAR_COLOURS[True] not in words


# ----------------------------------------------------------------------------------------------------------------------
# Where the model looked


def test_the_heatmap_colours_the_photo_hot_where_it_is_high_and_barely_where_it_is_low():
    photo = Image.new("RGB", (64, 32), (128, 128, 128))
    heatmap = np.zeros((8, 16), dtype=np.float32)  # another size than the photo: it is resized to the photo's
    heatmap[:, 8:] = 1.0
    overlaid = np.asarray(heatmap_overlay(photo, heatmap)).astype(int)
    assert overlaid.shape == (32, 64, 3)
    red, green, blue = overlaid[16, 60]
    assert red > 180 and green < 90 and blue < 90, "hot: red"
    assert np.abs(overlaid[16, 2] - 128).max() < 0.2 * 128 + 1, "cold: mostly the photo"


def test_a_heatmap_with_values_out_of_range_or_nan_is_clipped():
    photo = Image.new("RGB", (10, 10), (0, 0, 0))
    heatmap = np.array([[np.nan, -3.0], [7.0, 0.5]], dtype=np.float32)
    assert np.asarray(heatmap_overlay(photo, heatmap)).shape == (10, 10, 3)


# ----------------------------------------------------------------------------------------------------------------------
# The card


def test_the_card_shows_the_photo_its_answer_and_the_map(explaining):
    predictor = explaining["known"]
    card = result_card(predictor, "holiday.jpg", half_bright_jpeg(), 2)
    column, words, world = card_parts(card)
    caption, picture, toggle = column.children
    expected = answer(predictor, Image.open(io.BytesIO(half_bright_jpeg())).convert("RGB"), 2)
    assert "holiday.jpg" in caption.value and picture.format == "jpeg"
    assert Image.open(io.BytesIO(picture.value)).size == (256, 192), "the photo, 256 px on its longest side"
    assert words.value == answer_html(expected, 3)
    assert isinstance(world, ipyleaflet.Map)
    assert len([layer for layer in world.layers if isinstance(layer, ipyleaflet.CircleMarker)]) == 2


def test_the_toggle_shows_where_the_model_looked_and_hides_it_again(explaining):
    column, _, _ = card_parts(result_card(explaining["known"], "holiday.jpg", half_bright_jpeg(), 3))
    _, picture, toggle = column.children
    plain = picture.value
    toggle.value = True
    overlaid = np.asarray(Image.open(io.BytesIO(picture.value))).astype(int)
    assert picture.value != plain and "Hide" in toggle.description
    dark_side, bright_side = overlaid[96, 20], overlaid[96, 236]  # this file looks at the bright half
    assert bright_side[0] > 150 and bright_side[0] - bright_side[2] > 60, "hot colour over the bright half"
    assert abs(dark_side - 30).max() < 60, "the dark half stays nearly as it was"
    toggle.value = False
    assert picture.value == plain and "Show" in toggle.description


def test_a_file_that_cannot_explain_says_so_in_one_line_instead_of_the_toggle(exported_scratch, tmp_path):
    predictor = load_model(older_file(exported_scratch, tmp_path / "older.pt"))
    column, words, _ = card_parts(result_card(predictor, "a.jpg", half_bright_jpeg(), 3))
    line = column.children[2]
    assert isinstance(line, widgets.HTML) and "cannot show it" in line.value and "\n" not in line.value
    assert 'class="chart"' in words.value


def test_a_photo_that_is_none_of_the_landmarks_gets_the_verdict_and_grey_guesses_on_the_map(explaining):
    _, words, world = card_parts(result_card(explaining["unknown"], "cat.jpg", half_bright_jpeg(), 3))
    assert "This does not look like any of the 3 landmarks." in words.value and 'class="chart unknown"' in words.value
    circles = [layer for layer in world.layers if isinstance(layer, ipyleaflet.CircleMarker)]
    assert len(circles) == 3 and {circle.color for circle in circles} == {"#9099a8"}


def test_a_bad_photo_is_one_line(explaining):
    line = result_card(explaining["known"], "notes.txt", b"hello", 3)
    assert isinstance(line, widgets.HTML) and "notes.txt: not an image file" in line.value


def test_any_other_error_is_one_line_naming_the_photo(explaining, monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError("The following operation failed in the TorchScript interpreter.\nRuntimeError: no memory")

    monkeypatch.setattr(card_module, "answer", fails)
    line = result_card(explaining["known"], "big.jpg", jpeg(Image.new("RGB", (40, 30))), 3)
    assert line.value.count("<div") == 1 and "big.jpg: could not classify this photo (RuntimeError: no memory)" in line.value
