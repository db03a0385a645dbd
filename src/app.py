"""The landmark app: upload photos, see the most likely landmarks and where they are (used by app.ipynb and Voila).

    from src.app import LandmarkApp
    LandmarkApp().widget      # display it as the last expression of a notebook cell

Everything a person can do to it ends in a message on the page, never a traceback.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import ipywidgets as widgets
from PIL import Image

from src.exported import SCRATCH_EXPORT, TRANSFER_EXPORT, error_line, load_predictor, top_k, warm_up
from src.helpers import DataError, class_folders, get_data_location, list_images
from src.images import PhotoError, open_photo
from src.landmarks import display_name
from src.results import RESULTS_MIME

MODEL_CHOICES = {  # label in the dropdown -> exported file; the first one that exists is the default
    "Transfer learning (EfficientNet-Lite0)": TRANSFER_EXPORT,
    "From scratch (MyModel)": SCRATCH_EXPORT,
}
THUMBNAIL_SIZE = 256  # px, longest side of the photo shown next to its chart


def bar_chart_html(predictions: list[dict]) -> str:
    """A horizontal bar chart (HTML) of predictions from src.exported.top_k, most likely first."""
    rows = []
    for p in predictions:
        label = html.escape(p["name"]) + (f' <span class="place">{html.escape(p["place"])}</span>' if p["place"] else "")
        percent = 100 * p["probability"]
        rows.append(
            f'<div class="prediction" style="display:flex;align-items:center;margin:3px 0">'
            f'<div class="label" style="width:270px;font-size:13px;line-height:1.2">{label}</div>'
            f'<div style="width:220px;background:#eef1f5;height:16px;margin:0 8px">'
            f'<div style="width:{percent:.1f}%;background:#3b7dd8;height:16px"></div></div>'
            f'<div class="probability" style="width:55px;text-align:right;font-size:13px">{percent:.1f}%</div></div>'
        )
    return (
        '<style>.place{color:#667;font-size:11px;display:block}</style>'
        '<div class="chart"><b>Most likely landmarks</b>' + "".join(rows) + "</div>"
    )


def jpeg_thumbnail(image: Image.Image) -> bytes:
    """The photo as a JPEG at most THUMBNAIL_SIZE px on its longest side."""
    image = image.copy()
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def message_html(text: str, kind: str = "error") -> str:
    colour = {"error": "#b00020", "info": "#333"}[kind]
    return f'<div class="{kind}" style="color:{colour};margin:6px 0">{html.escape(text)}</div>'


class LandmarkApp:
    """The app's widgets and what happens when someone uploads photos, changes k or switches the model."""

    def __init__(self, model_choices: dict[str, Path] | None = None):
        choices = {label: Path(path) for label, path in (model_choices or MODEL_CHOICES).items() if Path(path).is_file()}
        self.upload = widgets.FileUpload(accept="image/*", multiple=True, description="Upload photos")
        self.top_k = widgets.IntSlider(value=5, min=1, max=10, description="Top k")
        self.model = widgets.Dropdown(options=list(choices), description="Model", style={"description_width": "initial"})
        self.results = widgets.VBox()
        self.status = widgets.HTML()
        self.choices, self.predictors = choices, {}
        if not choices:
            files = ", ".join(str(path) for path in (model_choices or MODEL_CHOICES).values())
            self.status.value = message_html(
                f"No exported model yet ({files}). Run cnn_from_scratch.ipynb and transfer_learning.ipynb first "
                f"(or `make run`): they export the models this app uses.",
                "info",
            )
            self.widget = widgets.VBox([self.status])
            return
        self.upload.observe(lambda _: self.show(), names="value")
        self.top_k.observe(lambda _: self.show(), names="value")
        self.model.observe(lambda _: self.show(), names="value")
        controls = widgets.HBox([self.upload, self.model, self.top_k])
        self.widget = widgets.VBox([controls, self.status, self.results])
        self.prepare_model()  # now, so that the first upload gets its answer at full speed

    def prepare_model(self) -> None:
        """Load and warm up the chosen model; a broken file shows its one-line message."""
        try:
            warm_up(self.predictor())
        except Exception as err:  # noqa: BLE001 - the app's boundary: a message on the page, never a traceback
            self.status.value = message_html(self.model_problem(err))

    def predictor(self):
        """The chosen model, loaded and checked once; a file that failed is tried again next time (it may be fixed)."""
        label = self.model.value
        if label not in self.predictors:
            self.predictors[label] = load_predictor(self.choices[label])
        return self.predictors[label]

    def model_problem(self, err: Exception) -> str:
        """One line for a model that cannot be used: load_predictor's own line, else the file and the error."""
        if isinstance(err, ValueError) and str(err).strip() and "\n" not in str(err).strip():
            return str(err).strip()
        return f"{self.choices.get(self.model.value, self.model.value)}: cannot use this model ({error_line(err)})."

    def show(self) -> None:
        """Predict every uploaded photo with the chosen model and k; each photo gets a row or an error line.

        Runs from the widgets' observers: whatever goes wrong ends as one line on the page, never an exception.
        """
        self.status.value = ""
        try:
            predictor = self.predictor()
        except Exception as err:  # noqa: BLE001 - the app's boundary
            self.results.children = ()  # the rows of another model must not look like this one's answers
            self.status.value = message_html(self.model_problem(err))
            return
        try:  # ipywidgets 8: a tuple of dicts with name, type, size, content
            uploads = [(str(upload["name"]), bytes(upload["content"])) for upload in self.upload.value]
        except Exception as err:  # noqa: BLE001 - the app's boundary
            self.results.children = ()
            self.status.value = message_html(f"Could not read the uploaded files ({error_line(err)}). Upload again.")
            return
        self.results.children = [self.photo_row(predictor, name, content) for name, content in uploads]

    def photo_row(self, predictor, name: str, content: bytes) -> widgets.Widget:
        """The photo's thumbnail and chart, or one error line."""
        try:
            image = open_photo(io.BytesIO(content), name)
            predictions = top_k(predictor, image, self.top_k.value)
            thumbnail = jpeg_thumbnail(image)
        except PhotoError as err:
            return widgets.HTML(message_html(f"{err}. Please upload a photo (JPEG, PNG, ...)."))
        except Exception as err:  # noqa: BLE001 - the app must keep working whatever happens with one photo
            return widgets.HTML(message_html(f"{name}: could not classify this photo ({error_line(err)})."))
        picture = widgets.Image(value=thumbnail, format="jpeg", layout=widgets.Layout(margin="0 16px 0 0"))
        caption = widgets.HTML(f"<b>{html.escape(name)}</b>")
        return widgets.HBox([widgets.VBox([caption, picture]), widgets.HTML(bar_chart_html(predictions))],
                            layout=widgets.Layout(margin="10px 0"))  # fmt: skip


def prediction_gallery(photos: Sequence[Path], model_choices: dict[str, Path] | None = None, k: int = 5) -> str:
    """The app's answer for each photo as static HTML (it survives a notebook's export to a web page, where widgets
    do not react): the photo with the landmark it shows (its folder's name), beside the top-k chart of every exported
    model that exists. A photo or a model that
    cannot be used gets its one-line message instead."""
    choices = {label: Path(path) for label, path in (model_choices or MODEL_CHOICES).items() if Path(path).is_file()}
    predictors = {}
    for label, path in choices.items():
        try:
            predictors[label] = load_predictor(path)
        except Exception as err:  # noqa: BLE001 - a broken model file is a message, the other model still answers
            predictors[label] = error_line(err)
    rows = []
    for photo in photos:
        try:
            image = open_photo(photo)
        except PhotoError as err:
            rows.append(message_html(str(err)))
            continue
        picture = base64.b64encode(jpeg_thumbnail(image)).decode()
        caption = f"{html.escape(Path(photo).name)}<br>shows: {html.escape(display_name(Path(photo).parent.name))}"
        charts = []
        for label, predictor in predictors.items():
            answer = message_html(predictor) if isinstance(predictor, str) else bar_chart_html(top_k(predictor, image, k))
            charts.append(f"<div style='margin-bottom:8px'><i>{html.escape(label)}</i>{answer}</div>")
        rows.append(f"<div style='display:flex;margin:12px 0'><div style='margin-right:16px'><b>{caption}</b><br>"
                    f"<img src='data:image/jpeg;base64,{picture}'></div><div>{''.join(charts)}</div></div>")  # fmt: skip
    return "".join(rows) or message_html("No photos to show.", "info")


def held_out_photos(n: int = 4) -> list[Path]:
    """Held-out photos for the gallery: the first test photo of n landmarks spread over the classes (none without
    the dataset)."""
    try:
        folders = class_folders(get_data_location() / "test")
    except (DataError, OSError):
        return []
    chosen = folders[:: max(1, len(folders) // n)][:n]
    return [images[0] for images in (sorted(list_images(folder)[0]) for folder in chosen) if images]


def show_gallery(photos: Sequence[Path], k: int = 5) -> None:
    """Display prediction_gallery in a notebook, with a record of what it showed for src/report.py's summary."""
    from IPython.display import display

    models = [label for label, path in MODEL_CHOICES.items() if path.is_file()]
    record = {"kind": "app", "photos": len(photos), "models": models, "top_k": k}
    gallery = prediction_gallery(photos, k=k) if photos else message_html(
        f"No test photos in {get_data_location()}/test: the gallery shows held-out photos of the dataset.", "info"
    )  # fmt: skip
    display({"text/html": f"<div id='results-app'>{gallery}</div>", "text/plain": str(record), RESULTS_MIME: record},
            raw=True)  # fmt: skip
