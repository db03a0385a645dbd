"""One photo's answer as the app shows it (src/app.py): the photo, with where the model looked on a toggle; the top-k
chart with the most likely country; the map of the landmarks. Or one line, when the photo cannot be used.

Everything shown comes from src.runtime.answer. A photo that scores below the file's "unknown" threshold keeps its
best guesses, in grey, under "This does not look like any of the N landmarks".
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
from PIL import Image

from src.app_map import landmark_map
from src.checks import error_line
from src.images import PhotoError, open_photo
from src.landmarks import country_line
from src.runtime import answer, none_of_these

THUMBNAIL_SIZE = 256  # px, longest side of the photo shown next to its chart
# The heatmap's colours, cold to hot (like matplotlib's "turbo"): dark blue, blue, green, yellow, red
HEAT_STOPS = [0.0, 0.25, 0.5, 0.75, 1.0]
HEAT_COLOURS = np.array([[48, 18, 59], [70, 130, 250], [40, 220, 140], [250, 200, 40], [220, 30, 20]], dtype=float)
HEAT_LUT = np.stack([np.interp(np.linspace(0, 1, 256), HEAT_STOPS, channel) for channel in HEAT_COLOURS.T], 1)
HEAT_OPACITY = (0.15, 0.65)  # of the colour over the photo, where the model looked least and most
BAR_COLOURS = {True: "#3b7dd8", False: "#b4bac4"}  # known; the grey guesses of a photo that is none of the landmarks


def message_html(text: str, kind: str = "error") -> str:
    colour = {"error": "#b00020", "info": "#333"}[kind]
    return f'<div class="{kind}" style="color:{colour};margin:6px 0">{html.escape(text)}</div>'


def bar_chart_html(predictions: Sequence[dict], known: bool = True) -> str:
    """A horizontal bar chart (HTML) of answer(...)["predictions"], most likely first; grey when the photo is unknown."""
    rows = []
    for rank, p in enumerate(predictions, 1):
        place = f' <span class="place">{html.escape(p["place"])}</span>' if p["place"] else ""
        label = f'<span class="rank">{rank}</span>{html.escape(p["name"])}{place}'
        percent = 100 * p["probability"]
        rows.append(
            f'<div class="prediction" style="display:flex;align-items:center;margin:3px 0">'
            f'<div class="label" style="width:230px;font-size:13px;line-height:1.2">{label}</div>'
            f'<div style="width:160px;background:#eef1f5;height:16px;margin:0 8px">'
            f'<div style="width:{percent:.1f}%;background:{BAR_COLOURS[known]};height:16px"></div></div>'
            f'<div class="probability" style="width:50px;text-align:right;font-size:13px">{percent:.1f}%</div></div>'
        )
    title, colour = ("Most likely landmarks", "inherit") if known else ("Its closest guesses", "#7a808a")
    return (
        "<style>.place{color:#667;font-size:11px;display:block;margin-left:18px}"
        ".rank{display:inline-block;width:18px;color:#667;font-size:11px}</style>"
        f'<div class="chart{"" if known else " unknown"}" style="color:{colour}"><b>{title}</b>{"".join(rows)}</div>'
    )


def answer_html(result: dict, n_classes: int) -> str:
    """What answer(...) says of a photo, in words: whether it looks like a known landmark, the chart, the country."""
    verdict = "" if result["known"] else (
        f'<div class="verdict" style="font-weight:bold;margin:2px 0 6px">{none_of_these(n_classes)}.</div>'
    )  # fmt: skip
    line = country_line(result["countries"])
    colour = "#333" if result["known"] else "#7a808a"
    country = f'<div class="country" style="margin-top:6px;color:{colour}">{html.escape(line)}</div>' if line else ""
    return verdict + bar_chart_html(result["predictions"], result["known"]) + country


def thumbnail(image: Image.Image) -> Image.Image:
    """A copy of the photo at most THUMBNAIL_SIZE px on its longest side."""
    image = image.copy()
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    return image


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def jpeg_thumbnail(image: Image.Image) -> bytes:
    """The photo as a JPEG at most THUMBNAIL_SIZE px on its longest side."""
    return jpeg(thumbnail(image))


def heatmap_overlay(image: Image.Image, heatmap: np.ndarray) -> Image.Image:
    """The image with the heatmap (float [H, W] in [0, 1], any size) blended in: hot colours where it is high."""
    heat = Image.fromarray(np.uint8(np.clip(np.nan_to_num(heatmap), 0, 1) * 255)).resize(image.size, Image.BILINEAR)
    levels = np.asarray(heat)
    low, high = HEAT_OPACITY
    opacity = (low + (high - low) * levels / 255.0)[..., None]
    blended = np.asarray(image, dtype=float) * (1 - opacity) + HEAT_LUT[levels] * opacity
    return Image.fromarray(np.uint8(np.round(blended)))


def where_it_looked(picture: widgets.Image, photo: Image.Image, heatmap: np.ndarray | None, top: str) -> widgets.Widget:
    """A toggle that shows the heatmap on the picture and back; one line instead when the file cannot explain."""
    if heatmap is None:
        return widgets.HTML(f'<div class="no-explain" style="color:#667;font-size:12px;width:{THUMBNAIL_SIZE}px">Where '
                            "the model looked: this model file cannot show it (exported without explain).</div>")  # fmt: skip
    plain, overlaid = picture.value, jpeg(heatmap_overlay(photo, heatmap))
    tooltip = f"Colours the photo by how much each part of it made the model answer {top}: red most, blue least"
    toggle = widgets.ToggleButton(description="Show where the model looked", icon="eye", tooltip=tooltip,
                                  layout=widgets.Layout(width=f"{THUMBNAIL_SIZE}px"))  # fmt: skip

    def switch(change: dict) -> None:
        picture.value = overlaid if change["new"] else plain
        toggle.description = "Hide where the model looked" if change["new"] else "Show where the model looked"

    toggle.observe(switch, names="value")
    return toggle


def result_card(predictor, name: str, content: bytes, k: int) -> widgets.Widget:
    """The photo with where the model looked, its answer and its map; or one error line (never an exception)."""
    try:
        image = open_photo(io.BytesIO(content), name)
        result = answer(predictor, image, k, explain=True)
        photo = thumbnail(image)
        picture = widgets.Image(value=jpeg(photo), format="jpeg")
        caption = widgets.HTML(f'<b style="overflow-wrap:anywhere">{html.escape(name)}</b>')
        toggle = where_it_looked(picture, photo, result["heatmap"], result["predictions"][0]["name"])
        column = widgets.VBox([caption, picture, toggle],
                              layout=widgets.Layout(margin="0 16px 0 0", width=f"{THUMBNAIL_SIZE + 4}px"))  # fmt: skip
        words = widgets.HTML(answer_html(result, len(predictor.class_names)), layout=widgets.Layout(margin="0 16px 0 0"))
        world = landmark_map(result["predictions"], result["known"])
        parts = [column, words] + ([world] if world is not None else [])
    except PhotoError as err:
        return widgets.HTML(message_html(f"{err}. Please upload a photo (JPEG, PNG, ...)."))
    except Exception as err:  # noqa: BLE001 - the app must keep working whatever happens with one photo
        return widgets.HTML(message_html(f"{name}: could not classify this photo ({error_line(err)})."))
    return widgets.HBox(parts, layout=widgets.Layout(margin="10px 0", flex_flow="row wrap", align_items="flex-start"))
