"""Specification of the app (src/app.py, app.ipynb): widgets first, then the Voila page in a real browser."""

import datetime
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from ipyleaflet import CircleMarker
from PIL import Image

import src.app as app_module
import src.app_card as card_module
from src.app import LandmarkApp, held_out_photos, prediction_gallery, show_gallery
from src.app_card import answer_html, bar_chart_html
from src.files import quiet_torchscript
from src.images import open_photo
from src.landmarks import display_name
from src.runtime import answer, chosen_file, load_model, top_k
from tests.conftest import CHROMIUM_ARGS, local_only_page
from tests.test_app_card import card_parts, explaining_file

PROJECT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def jpeg_bytes(seed: int = 0, size=(640, 480)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        buffer, format="JPEG"
    )
    return buffer.getvalue()


def upload(app: LandmarkApp, *files: tuple[str, bytes]) -> None:
    """What the browser does: ipywidgets 8 FileUpload.value is a tuple of dicts with the content as bytes."""
    app.upload.value = tuple(
        {"name": name, "type": "", "size": len(content), "content": memoryview(content),
         "last_modified": datetime.datetime.now(datetime.timezone.utc)}
        for name, content in files
    )


@pytest.fixture
def app(exported_scratch):
    return LandmarkApp({"From scratch (MyModel)": exported_scratch})


def expected_top(exported: Path, content: bytes, k: int = 5) -> list[dict]:
    return top_k(load_model(chosen_file(exported)), open_photo(io.BytesIO(content)), k)  # the file the app runs


# ----------------------------------------------------------------------------------------------------------------------
# The static gallery (what app.ipynb shows in its saved web page)


def test_the_gallery_shows_each_photo_with_each_models_top_k_chart(exported_scratch, tmp_path):
    photos = []
    for seed in range(2):
        photos.append(tmp_path / f"photo{seed}.jpg")
        photos[-1].write_bytes(jpeg_bytes(seed))
    page = prediction_gallery(photos, {"From scratch (MyModel)": exported_scratch, "Missing": tmp_path / "no.pt"}, k=3)
    assert page.count("data:image/jpeg;base64,") == 2, "each photo is embedded in the page itself"
    assert page.count(f"shows: {display_name(tmp_path.name)}") == 2, "the landmark each photo shows: its folder's"
    assert page.count(bar_chart_html(expected_top(exported_scratch, jpeg_bytes(0), 3))) == 1
    assert page.count(bar_chart_html(expected_top(exported_scratch, jpeg_bytes(1), 3))) == 1
    assert page.count("Most likely in ") == 2, "each answer names its most likely country"
    assert "Missing" not in page, "models that were not exported are left out"


def test_the_gallery_gives_a_bad_photo_or_a_broken_model_one_line_and_goes_on(exported_scratch, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a photo")
    (tmp_path / "good.jpg").write_bytes(jpeg_bytes(0))
    (tmp_path / "broken.pt").write_bytes(b"not a model")
    choices = {"Broken": tmp_path / "broken.pt", "From scratch (MyModel)": exported_scratch}
    page = prediction_gallery([tmp_path / "bad.jpg", tmp_path / "good.jpg"], choices)
    assert page.count('class="error"') == 2, "one line for the photo, one for the model"
    assert "bad.jpg" in page and page.count("data:image/jpeg;base64,") == 1
    assert page.count('class="chart"') == 1, "the working model still answers"


def test_held_out_photos_are_test_photos_of_different_landmarks(landmark_data):
    photos = held_out_photos(2)
    assert len(photos) == 2 and all(photo.parent.parent == landmark_data / "test" for photo in photos)
    assert len({photo.parent for photo in photos}) == 2


def test_held_out_photos_without_the_dataset_are_none(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDMARK_DATA", str(tmp_path / "missing"))
    assert held_out_photos(4) == []


def test_the_gallery_without_the_dataset_says_so_in_one_line(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda data, raw: shown.append(data))
    monkeypatch.setenv("LANDMARK_DATA", str(tmp_path / "missing"))
    show_gallery(held_out_photos(4))
    page = shown[0]["text/html"]
    assert "No test photos (no landmark dataset found)" in page and one_line_message(page.split(">", 1)[1])


# ----------------------------------------------------------------------------------------------------------------------
# Widgets


def expected_answer(exported: Path, content: bytes, k: int = 5) -> str:
    predictor = load_model(chosen_file(exported))  # the file the app runs
    return answer_html(answer(predictor, open_photo(io.BytesIO(content)), k), len(predictor.class_names))


def test_each_uploaded_photo_gets_a_card_with_its_picture_answer_and_map(app, exported_scratch):
    photos = [("a.jpg", jpeg_bytes(0)), ("b.jpg", jpeg_bytes(1, (480, 640)))]
    upload(app, *photos)
    assert len(app.results.children) == 2
    for card, (name, content) in zip(app.results.children, photos):
        column, words, world = card_parts(card)
        assert name in column.children[0].value and column.children[1].format == "jpeg"
        assert words.value == expected_answer(exported_scratch, content)
        assert len([layer for layer in world.layers if isinstance(layer, CircleMarker)]) == 3


def test_k_is_adjustable_from_1_to_10(app):
    upload(app, ("a.jpg", jpeg_bytes()))
    app.top_k.value = 1
    _, words, world = card_parts(app.results.children[0])
    assert words.value.count('class="prediction"') == 1
    assert len([layer for layer in world.layers if isinstance(layer, CircleMarker)]) == 1
    assert (app.top_k.min, app.top_k.max) == (1, 10)


def test_a_bad_upload_gets_a_friendly_message_and_the_app_keeps_working(app):
    upload(app, ("notes.txt", b"hello"), ("empty.jpg", b""), ("good.jpg", jpeg_bytes()))
    first, second, good = app.results.children
    assert "notes.txt: not an image file" in first.value and "Traceback" not in first.value
    assert "empty.jpg: the file is empty" in second.value
    assert 'class="chart"' in card_parts(good)[1].value
    upload(app, ("next.jpg", jpeg_bytes(2)))
    assert 'class="chart"' in card_parts(app.results.children[0])[1].value


def test_the_cards_an_upload_replaces_are_closed_with_all_their_widgets(app):
    upload(app, ("a.jpg", jpeg_bytes()))
    column, words, world = card_parts(app.results.children[0])
    held = [app.results.children[0], column, column.children[1], words, words.layout, world, *world.layers,
            world.layers[-1].icon, *world.controls]  # fmt: skip
    upload(app, ("b.jpg", jpeg_bytes(1)))
    assert [widget for widget in held if widget.comm is not None] == []
    assert app.results.children[0].comm is not None and app.upload.comm is not None, "the new card and the app stay"


def test_a_photo_that_is_none_of_the_landmarks_says_so_with_the_number_of_landmarks(exported_scratch, tmp_path):
    app = LandmarkApp({"Strict": explaining_file(exported_scratch, 1.01, tmp_path / "strict.pt")})
    upload(app, ("cat.jpg", jpeg_bytes()))
    assert "This does not look like any of the 3 landmarks." in card_parts(app.results.children[0])[1].value


def test_the_dropdown_switches_between_exported_models(exported_scratch, tmp_path):
    other = tmp_path / "transfer_exported.pt"
    shutil.copy(exported_scratch, other)
    app = LandmarkApp({"Transfer": other, "Scratch": exported_scratch})
    assert app.model.options == ("Transfer", "Scratch") and app.model.value == "Transfer"
    upload(app, ("a.jpg", jpeg_bytes()))
    app.model.value = "Scratch"
    assert set(app.predictors) == {"Transfer", "Scratch"}


def test_the_chosen_model_is_loaded_and_warmed_up_before_the_first_upload(exported_scratch, monkeypatch):
    warmed = []
    monkeypatch.setattr(app_module, "warm_up", warmed.append)
    app = LandmarkApp({"Scratch": exported_scratch})
    assert list(app.predictors) == ["Scratch"] and warmed == [app.predictors["Scratch"]]


def test_without_an_exported_model_the_app_says_which_notebook_to_run_first(tmp_path):
    app = LandmarkApp({"Transfer": tmp_path / "missing.pt"})
    assert "cnn_from_scratch.ipynb" in app.status.value and "transfer_learning.ipynb" in app.status.value
    assert app.widget.children == (app.status,)


def test_a_broken_model_file_is_a_message_not_a_traceback(tmp_path):
    broken = tmp_path / "transfer_exported.pt"
    broken.write_bytes(b"not a model")
    app = LandmarkApp({"Transfer": broken})
    assert "not a loadable exported model" in app.status.value, "said when the app starts"
    upload(app, ("a.jpg", jpeg_bytes()))
    assert "not a loadable exported model" in app.status.value and app.results.children == ()


def one_line_message(html_text: str) -> bool:
    """True if the page shows exactly one message, on one line, without a traceback."""
    return html_text.count("<div") == 1 and "\n" not in html_text and "Traceback" not in html_text


@pytest.fixture
def bare_model(small_scratch_model, tmp_path) -> Path:
    """torch.jit.script(MyModel) saved as is: a TorchScript file, but not an exported predictor."""
    import torch

    path = tmp_path / "bare.pt"
    with quiet_torchscript():
        torch.jit.script(small_scratch_model).save(str(path))
    return path


def test_a_file_that_is_not_a_predictor_is_one_line_and_a_good_model_can_still_be_chosen(bare_model, exported_scratch):
    app = LandmarkApp({"Bare": bare_model, "Scratch": exported_scratch})
    assert "without class names" in app.status.value and one_line_message(app.status.value), "said when the app starts"
    upload(app, ("a.jpg", jpeg_bytes()), ("b.jpg", jpeg_bytes(1)))  # no exception escapes the observer
    assert "without class names" in app.status.value and one_line_message(app.status.value)
    assert app.results.children == ()
    app.model.value = "Scratch"
    assert app.status.value == "" and len(app.results.children) == 2
    assert 'class="chart"' in card_parts(app.results.children[0])[1].value
    app.model.value = "Bare"
    assert "without class names" in app.status.value and app.results.children == (), "no answers of another model"


def test_a_model_file_deleted_after_the_app_started_is_one_line(exported_scratch, tmp_path):
    other = tmp_path / "transfer_exported.pt"
    shutil.copy(exported_scratch, other)
    app = LandmarkApp({"Scratch": exported_scratch, "Transfer": other})
    other.unlink()
    app.model.value = "Transfer"
    assert f"{other}: no such file" in app.status.value and one_line_message(app.status.value)


def torchscript_error(*args, **kwargs):
    raise RuntimeError(
        "The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript (most recent call "
        "last):\n  File \"code/__torch__.py\", line 8\nRuntimeError: out of memory"
    )


def test_any_error_while_preparing_the_model_is_one_line(exported_scratch, monkeypatch):
    monkeypatch.setattr(app_module, "warm_up", torchscript_error)
    app = LandmarkApp({"Scratch": exported_scratch})
    assert f"{exported_scratch}: cannot use this model (RuntimeError: out of memory)" in app.status.value
    assert one_line_message(app.status.value)


def test_any_error_while_loading_the_model_for_an_upload_is_one_line(exported_scratch, monkeypatch):
    app = LandmarkApp({"Scratch": exported_scratch})
    app.predictors.clear()

    def no_memory(path):
        raise MemoryError()

    monkeypatch.setattr(app_module, "load_model", no_memory)
    upload(app, ("a.jpg", jpeg_bytes()))
    assert "cannot use this model (MemoryError)" in app.status.value and one_line_message(app.status.value)


def test_any_error_with_one_photo_is_one_line_in_its_place_and_the_others_are_shown(app, monkeypatch):
    real_answer = card_module.answer

    def fails_on_the_small_photo(predictor, image, k, explain):
        return torchscript_error() if image.width == 100 else real_answer(predictor, image, k, explain)

    monkeypatch.setattr(card_module, "answer", fails_on_the_small_photo)
    upload(app, ("big.jpg", jpeg_bytes(0, (100, 80))), ("good.jpg", jpeg_bytes(1)))
    failed, good = app.results.children
    assert "big.jpg: could not classify this photo (RuntimeError: out of memory)" in failed.value
    assert one_line_message(failed.value) and 'class="chart"' in card_parts(good)[1].value


# ----------------------------------------------------------------------------------------------------------------------
# The Voila page in headless Chromium


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def voila_url(exported_scratch, tmp_path):
    """`make app`'s command on a free port. Its two models are small exported files that explain: the transfer one
    knows every photo, the from-scratch one none (its threshold is above any probability)."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    explaining_file(exported_scratch, 0.0, checkpoints / "transfer_exported.pt")
    explaining_file(exported_scratch, 1.01, checkpoints / "original_exported.pt")
    port = free_port()
    env = {**os.environ, "LANDMARK_CHECKPOINTS": str(checkpoints), "LANDMARK_DATA": str(tmp_path / "no_data")}
    voila = Path(sys.executable).with_name("voila")
    server = subprocess.Popen(
        [voila, "app.ipynb", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"],
        cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(120):  # up to 60 s for the server to come up
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"voila exited: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.fixture
def offline_page(voila_url):
    """A headless Chromium page with the Voila app loaded, offline: every request that is not to the app's server is
    refused (map tiles included) and recorded in page.refused."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = local_only_page(browser, voila_url)
            page.goto(voila_url, timeout=120_000)
            page.get_by_role("button", name="Upload photos").wait_for(timeout=120_000)  # the kernel ran the notebook
            yield page
        finally:
            browser.close()


def choose_files(page, *paths: Path) -> None:
    """The FileUpload widget has no <input type=file> in the page: the click opens a file chooser."""
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Upload photos").click()
    chooser.value.set_files([str(path) for path in paths])


def test_the_voila_page_answers_an_upload_with_a_chart_the_country_and_a_map_offline(offline_page, exported_scratch,
                                                                                      tmp_path):  # fmt: skip
    from playwright.sync_api import expect

    page = offline_page
    photo = tmp_path / "holiday.jpg"
    photo.write_bytes(jpeg_bytes(3))
    choose_files(page, photo)
    chart = page.locator(".chart").first
    chart.wait_for(timeout=60_000)
    expected = expected_top(exported_scratch, photo.read_bytes())
    labels = chart.locator(".prediction .label")
    expect(labels).to_have_count(len(expected))  # top 5 of a 3-class model: all 3
    assert labels.first.locator(".rank").inner_text() == "1"
    assert expected[0]["name"] in labels.first.inner_text() and expected[0]["place"] in labels.first.inner_text()
    assert chart.locator(".probability").first.inner_text() == f"{100 * expected[0]['probability']:.1f}%"
    assert page.locator(".country").first.inner_text().startswith("Most likely in ")

    world = page.locator(".leaflet-container").first
    expect(world.locator("path.leaflet-interactive")).to_have_count(3)  # a circle for each of the top 3
    expect(world.locator(".map-rank")).to_have_count(3)
    assert world.locator(".map-rank").all_inner_texts() == ["3", "2", "1"]  # the most likely drawn last, on top
    assert any("tile.openstreetmap.org" in url for url in page.refused), "the map asked for its tiles, offline"
    page.screenshot(path=str(tmp_path / "app_screenshot.png"), full_page=True)


def test_the_voila_toggle_shows_where_the_model_looked(offline_page, tmp_path):
    page = offline_page
    photo = tmp_path / "holiday.jpg"
    photo.write_bytes(jpeg_bytes(3))
    choose_files(page, photo)
    toggle = page.get_by_role("button", name="Show where the model looked")
    toggle.wait_for(timeout=60_000)
    picture = page.locator(".widget-image").first
    before = picture.screenshot()
    toggle.click()
    page.get_by_role("button", name="Hide where the model looked").wait_for(timeout=30_000)
    page.wait_for_function("() => [...document.querySelectorAll('.widget-image')].every(img => img.complete)")
    assert picture.screenshot() != before
    page.screenshot(path=str(tmp_path / "app_where_it_looked.png"), full_page=True)


def test_the_voila_page_says_when_a_photo_is_none_of_the_landmarks_and_a_bad_file_is_one_line(offline_page, tmp_path):
    page = offline_page
    photo, text_file = tmp_path / "cat.jpg", tmp_path / "notes.txt"
    photo.write_bytes(jpeg_bytes(4))
    text_file.write_text("not a photo")
    page.get_by_role("combobox").select_option("From scratch (MyModel)")  # this file knows no photo
    choose_files(page, photo, text_file)
    verdict = page.locator(".verdict").first
    verdict.wait_for(timeout=60_000)
    assert verdict.inner_text() == "This does not look like any of the 3 landmarks."
    assert page.locator(".chart.unknown .prediction").count() == 3, "its guesses, in grey"
    error = page.locator(".error").first
    error.wait_for(timeout=60_000)
    assert "notes.txt: not an image file" in error.inner_text()
    assert "Traceback" not in page.content() and "There was an error" not in page.content(), "every cell ran"
    page.screenshot(path=str(tmp_path / "app_unknown.png"), full_page=True)
