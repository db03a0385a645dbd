"""The landmark app: upload photos, see the most likely landmarks and where they are (used by app.ipynb and Voila).

    from src.app import LandmarkApp
    LandmarkApp().widget      # display it as the last expression of a notebook cell

Everything a person can do to it ends in a message on the page, never a traceback.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import ipywidgets as widgets

from src.app_card import answer_html, jpeg_thumbnail, message_html, result_card
from src.checks import error_line
from src.helpers import DataError, class_folders, get_data_location, list_images
from src.images import PhotoError, open_photo
from src.landmarks import display_name
from src.results import RESULTS_MIME
from src.runtime import APP_MODELS, answer, chosen_file, describe, load_model, warm_up



class LandmarkApp:
    """The app's widgets and what happens when someone uploads photos, changes k or switches the model."""

    def __init__(self, model_choices: dict[str, Path] | None = None):
        choices = {label: Path(path) for label, path in (model_choices or APP_MODELS).items() if Path(path).is_file()}
        self.upload = widgets.FileUpload(accept="image/*", multiple=True, description="Upload photos")
        self.top_k = widgets.IntSlider(value=5, min=1, max=10, description="Top k")
        self.model = widgets.Dropdown(options=list(choices), description="Model", style={"description_width": "initial"})
        self.results = widgets.VBox()
        self.status = widgets.HTML()
        self.using = widgets.HTML()  # which file and runtime answer: src.runtime.describe
        self.choices, self.predictors = choices, {}
        if not choices:
            files = ", ".join(str(path) for path in (model_choices or APP_MODELS).values())
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
        self.widget = widgets.VBox([controls, self.using, self.status, self.results])
        self.prepare_model()  # now, so that the first upload gets its answer at full speed

    def prepare_model(self) -> None:
        """Load and warm up the chosen model (and its explain, which each photo's answer runs when the file has it);
        a broken file shows its one-line message."""
        try:
            warm_up(self.predictor())  # with explain when the file has it: each photo's answer runs it
        except Exception as err:  # noqa: BLE001 - the app's boundary: a message on the page, never a traceback
            self.status.value = message_html(self.model_problem(err))

    def predictor(self):
        """The chosen model (src.runtime.load_model of its chosen_file), loaded and checked once; a file that failed
        is tried again next time (it may be fixed)."""
        label = self.model.value
        if label not in self.predictors:
            self.using.value = ""
            self.predictors[label] = load_model(chosen_file(self.choices[label]))
        line = html.escape(describe(self.predictors[label]))
        self.using.value = f'<div class="using" style="color:#667;font-size:12px">{line}</div>'
        return self.predictors[label]

    def model_problem(self, err: Exception) -> str:
        """One line for a model that cannot be used: load_model's own line, else the file and the error."""
        if isinstance(err, ValueError) and str(err).strip() and "\n" not in str(err).strip():
            return str(err).strip()
        return f"{self.choices.get(self.model.value, self.model.value)}: cannot use this model ({error_line(err)})."

    def show(self) -> None:
        """Answer every uploaded photo with the chosen model and k; each photo gets a card (src/app_card.py) or an error
        line.

        Runs from the widgets' observers: whatever goes wrong ends as one line on the page, never an exception.
        """
        self.status.value = ""
        try:
            predictor = self.predictor()
        except Exception as err:  # noqa: BLE001 - the app's boundary
            self.replace_results([])  # the cards of another model must not look like this one's answers
            self.status.value = message_html(self.model_problem(err))
            return
        try:  # ipywidgets 8: a tuple of dicts with name, type, size, content
            uploads = [(str(upload["name"]), bytes(upload["content"])) for upload in self.upload.value]
        except Exception as err:  # noqa: BLE001 - the app's boundary
            self.replace_results([])
            self.status.value = message_html(f"Could not read the uploaded files ({error_line(err)}). Upload again.")
            return
        self.replace_results([result_card(predictor, name, content, self.top_k.value) for name, content in uploads])

    def replace_results(self, cards: list[widgets.Widget]) -> None:
        """Show these cards instead of the previous ones, which are closed: a long session does not pile up widgets."""
        previous, self.results.children = self.results.children, cards
        for card in previous:
            close_widgets(card)


def close_widgets(widget: widgets.Widget) -> None:
    """Close a widget and every widget it holds (children, layouts, styles, a map's layers, controls and icons), so
    that the kernel and the page forget them."""
    stack, seen = [widget], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        for value in (getattr(item, name, None) for name in item.keys):
            stack.extend(held for held in (value if isinstance(value, (list, tuple)) else [value])
                         if isinstance(held, widgets.Widget))  # fmt: skip
        item.close()


def prediction_gallery(photos: Sequence[Path], model_choices: dict[str, Path] | None = None, k: int = 5) -> str:
    """The app's answer for each photo as static HTML (it survives a notebook's export to a web page, where widgets
    do not react): the photo with the landmark it shows (its folder's name), beside the answer of every exported model
    that exists (its top-k chart and most likely country; its verdict when the photo is none of the landmarks). A
    photo or a model that cannot be used gets its one-line message instead."""
    choices = {label: Path(path) for label, path in (model_choices or APP_MODELS).items() if Path(path).is_file()}
    predictors = {}
    for label, path in choices.items():
        try:
            predictors[label] = load_model(chosen_file(path))
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
            shown = message_html(predictor) if isinstance(predictor, str) else answer_html(
                answer(predictor, image, k), len(predictor.class_names))  # fmt: skip
            charts.append(f"<div style='margin-bottom:8px'><i>{html.escape(label)}</i>{shown}</div>")
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


def where_test_photos_are() -> str:
    """'in <dataset>/test', or '(no landmark dataset found)' when there is none."""
    try:
        return f"in {get_data_location()}/test"
    except (DataError, OSError):
        return "(no landmark dataset found)"


def show_gallery(photos: Sequence[Path], k: int = 5) -> None:
    """Display prediction_gallery in a notebook, with a record of what it showed for src/report.py's summary."""
    from IPython.display import display

    models = [label for label, path in APP_MODELS.items() if path.is_file()]
    record = {"kind": "app", "photos": len(photos), "models": models, "top_k": k}
    gallery = prediction_gallery(photos, k=k) if photos else message_html(
        f"No test photos {where_test_photos_are()}: the gallery shows held-out photos of the dataset.", "info"
    )  # fmt: skip
    display({"text/html": f"<div id='results-app'>{gallery}</div>", "text/plain": str(record), RESULTS_MIME: record},
            raw=True)  # fmt: skip
