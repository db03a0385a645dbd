"""Specification of the static web page (src/web.py builds it from web/): the app's answers, computed in a browser.

The build's failures first (no browser needed: a stand-in web/ folder whose packages are already "installed"). Then the
page itself, built once for the module from two small models and served from 127.0.0.1 to headless Chromium, every
other request refused: its crop is Python's to the last bit, its answers are the predict CLI's, and it behaves like the
Voila app (tests/test_app.py). The browser tests skip, with one reason, without Node/npm, Chromium or Playwright, or
when `npm ci` cannot fetch the page's libraries (no registry).
"""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.crop import crop_box, crop_geometry
from src.images import open_photo
from src.landmarks import country_line
from src.paths import onnx_beside
from src.web import LOCK_STAMP, PACKAGE_FILES, PAGE, WEB_DIR, BuildError, build_site, make_server
from tests.conftest import CHROMIUM_ARGS, LANDMARK_NAMES, local_only_page

PROJECT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SAMPLES = PROJECT.parent / "shared" / "data" / "landmark_samples"  # bench/common.py's, without importing torch
KNOWS_ALL, KNOWS_NONE = "Knows every photo", "Knows no photo"  # the two models' labels in the page
OTHER_NAMES = ["Niagara Falls", "Machu Picchu", "Sydney Opera House"]  # KNOWS_NONE's classes


def smooth_photo(height: int, width: int, seed: int) -> Image.Image:
    """A photo-like RGB image: upsampled noise, which compresses like a photo (as bench/common.py's)."""
    small = np.random.default_rng(seed).integers(0, 256, (max(height // 20, 2), max(width // 20, 2), 3), np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BICUBIC)


# ----------------------------------------------------------------------------------------------------------------------
# Building


def stand_in_web_dir(root: Path, installed: bool = True) -> Path:
    """A copy of web/'s page and lock file; with `installed`, a node_modules with a stand-in for every file the build
    copies and the stamp of this lock file, so that no npm runs."""
    web = root / "web"
    web.mkdir()
    for name in PAGE + ["package.json", "package-lock.json"]:
        shutil.copy(WEB_DIR / name, web / name)
    if installed:
        for package, files in PACKAGE_FILES.values():
            for file in files:
                (web / "node_modules" / package / file).parent.mkdir(parents=True, exist_ok=True)
                (web / "node_modules" / package / file).write_text("stand-in")
        lock = hashlib.sha256((web / "package-lock.json").read_bytes()).hexdigest()
        (web / "node_modules" / LOCK_STAMP).write_text(lock)
    return web


def fake_tools(folder: Path, npm_script: str) -> str:
    """A PATH holding only a `node` and an `npm` that runs npm_script (sh)."""
    folder.mkdir()
    for name, script in (("node", "echo v20.20.2"), ("npm", npm_script)):
        (folder / name).write_text(f"#!/bin/sh\n{script}\n")
        (folder / name).chmod(0o755)
    return str(folder)


def test_building_without_an_exported_model_is_one_line_and_exit_status_2(tmp_path):
    env = {**os.environ, "LANDMARK_CHECKPOINTS": str(tmp_path / "empty")}
    done = subprocess.run([sys.executable, "-m", "src.web", "build", "--out", str(tmp_path / "out")], cwd=PROJECT,
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: no exported ONNX model (") and done.stderr.count("\n") == 1, done.stderr
    assert "transfer_exported.onnx" in done.stderr and "run the notebooks or `make run` first" in done.stderr
    assert not (tmp_path / "out").exists()


def test_building_without_npm_says_how_to_install_it(tmp_path, monkeypatch):
    web = stand_in_web_dir(tmp_path, installed=False)
    monkeypatch.setenv("PATH", str(tmp_path / "no_tools"))
    with pytest.raises(BuildError, match=r"install Node 18\+ and npm \(apt-get install nodejs npm\)$"):
        build_site(tmp_path / "out", {"Model": tmp_path / "model.onnx"}, web)


def test_building_with_a_node_older_than_18_says_so(tmp_path, monkeypatch):
    web = stand_in_web_dir(tmp_path, installed=False)
    monkeypatch.setenv("PATH", fake_tools(tmp_path / "tools", "exit 0"))
    (tmp_path / "tools" / "node").write_text("#!/bin/sh\necho v12.22.9\n")
    with pytest.raises(BuildError, match=r"\(this Node.js is version 12\): install Node 18\+ and npm"):
        build_site(tmp_path / "out", {"Model": tmp_path / "model.onnx"}, web)


def test_a_failing_npm_ci_is_one_line_and_the_previous_page_stays(tmp_path, monkeypatch):
    web = stand_in_web_dir(tmp_path, installed=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "index.html").write_text("the previous page")
    offline = "echo 'npm error code ENOTFOUND'; echo 'npm error network request to https://registry.npmjs.org failed'"
    monkeypatch.setenv("PATH", fake_tools(tmp_path / "tools", f"({offline}) >&2; exit 1"))
    with pytest.raises(BuildError) as raised:
        build_site(tmp_path / "out", {"Model": tmp_path / "model.onnx"}, web)
    assert str(raised.value) == (f"npm ci failed in {web} (exit status 1): npm error network request to "
                                 "https://registry.npmjs.org failed")  # fmt: skip
    assert (tmp_path / "out" / "index.html").read_text() == "the previous page"


def test_npm_ci_runs_only_when_the_lock_file_changed(tmp_path, monkeypatch):
    web = stand_in_web_dir(tmp_path)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not a model")
    monkeypatch.setenv("PATH", fake_tools(tmp_path / "tools", "echo 'npm ran' >&2; exit 1"))
    with pytest.raises(BuildError, match="not a loadable ONNX model"):  # past the packages: npm did not run
        build_site(tmp_path / "out", {"Model": model}, web)
    lock = json.loads((web / "package-lock.json").read_text())
    (web / "package-lock.json").write_text(json.dumps({**lock, "name": "changed"}))
    with pytest.raises(BuildError, match="npm ci failed .*: npm ran$"):
        build_site(tmp_path / "out", {"Model": model}, web)


def test_a_broken_model_is_one_line_naming_it_and_nothing_half_built_is_left(tmp_path):
    web = stand_in_web_dir(tmp_path)
    broken = tmp_path / "transfer_exported.onnx"
    broken.write_bytes(b"not a model")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "index.html").write_text("the previous page")
    with pytest.raises(BuildError, match=f"^{broken}: not a loadable ONNX model .*export_predictor"):
        build_site(tmp_path / "out", {"Model": broken}, web)
    assert (tmp_path / "out" / "index.html").read_text() == "the previous page"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "transfer_exported.onnx", "web"]


def test_serving_a_folder_that_was_not_built_says_how_to_build_it(tmp_path):
    with pytest.raises(BuildError, match=r"has no built page: run `make web-build`"):
        make_server(tmp_path, 0)


# ----------------------------------------------------------------------------------------------------------------------
# The page in headless Chromium


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (shutil.which("node") and shutil.which("npm")):
        return "Node.js and npm are not installed (apt-get install nodejs npm)"
    if CHROMIUM is None:
        return "Chromium is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements.txt)"
    return None


def write_model(predictor, path: Path) -> Path:
    from src.onnx_export import write_onnx

    return write_onnx(predictor.eval(), path)


@pytest.fixture(scope="module")
def browser_tools() -> None:
    """Skips the test, before anything is exported, when the browser tests cannot run here."""
    if browser_missing():
        pytest.skip(browser_missing())


@pytest.fixture(scope="module")
def site(browser_tools, small_scratch_model, exported_scratch, tmp_path_factory) -> Path:
    """The page built from two small models: KNOWS_ALL (exported_scratch's ONNX file: LANDMARK_NAMES, threshold -inf,
    explains) and KNOWS_NONE (OTHER_NAMES, a threshold above any score, no explain); test photos in _photos/."""
    from src.calibration import Calibration
    from src.predictor import Predictor

    folder = tmp_path_factory.mktemp("web")
    settings = ([0.5, 0.45, 0.4], [0.25, 0.25, 0.25], 224, 256)
    strict = Calibration(1.0, "energy", 1e9, 10)
    models = {
        KNOWS_ALL: Path(shutil.copy(onnx_beside(exported_scratch), folder / "transfer_exported.onnx")),
        KNOWS_NONE: write_model(Predictor(small_scratch_model, OTHER_NAMES, *settings, strict),
                                folder / "original_exported.onnx"),
    }  # fmt: skip
    try:
        built = build_site(folder / "site", models)
    except BuildError as err:
        if str(err).startswith("npm ci failed"):  # no registry (offline): not something these tests can check
            pytest.skip(str(err))
        raise
    photos = built / "_photos"
    photos.mkdir()
    for name, (height, width) in {"landscape.png": (600, 800), "portrait.jpg": (800, 600),
                                  "panorama.png": (100, 1000), "tiny.png": (20, 30)}.items():  # fmt: skip
        smooth_photo(height, width, seed=height).save(photos / name)
    alpha = np.linspace(0, 255, 400).astype(np.uint8)[None, :, None].repeat(300, 0)  # transparent to opaque
    rgba = np.concatenate([np.asarray(smooth_photo(300, 400, 2)), alpha], 2)
    Image.fromarray(rgba, "RGBA").save(photos / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    smooth_photo(40, 80, 3).save(photos / "rotated.jpg", exif=exif, quality=95)
    real = sorted(SAMPLES.rglob("*.jpg"))[:2] if SAMPLES.is_dir() else []
    for i, path in enumerate(real):
        shutil.copy(path, photos / f"real{i}.jpg")
    (photos / "notes.txt").write_text("not a photo")
    return built


@pytest.fixture(scope="module")
def url(site):
    server = make_server(site, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def loaded_page(browser, url):
    """The page, loaded once for the module (loading ONNX Runtime's wasm is most of a test's time), offline: every
    request that is not to its server is refused (map tiles included) and recorded in page.refused."""
    page = local_only_page(browser, url)
    page.goto(url)
    page.locator("body[data-ready=true]").wait_for(timeout=60_000)
    yield page
    page.close()


@pytest.fixture
def page(loaded_page):
    """The loaded page as it starts: the first model chosen, no cards, nothing refused yet."""
    if loaded_page.input_value("#model") != KNOWS_ALL:
        loaded_page.select_option("#model", KNOWS_ALL)
        loaded_page.locator("body[data-ready=true]").wait_for(timeout=60_000)
    loaded_page.evaluate("() => window.landmark.show([])")
    loaded_page.refused.clear()
    return loaded_page


def photo_names(site: Path) -> list[str]:
    """Two photos to upload: the real samples when there are some, else synthetic ones."""
    real = sorted(path.name for path in (site / "_photos").glob("real*.jpg"))
    return real or ["landscape.png", "portrait.jpg"]


def predict_cli(model: Path, photos: list[Path]) -> list[dict]:
    """`python -m src.predict PHOTO ... --model X.onnx --json`: the reference answers."""
    done = subprocess.run([sys.executable, "-m", "src.predict", *map(str, photos), "--model", str(model), "--json"],
                          cwd=PROJECT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cards(page, count: int):
    """The page's result cards, once there are `count` of them."""
    found = page.locator("[data-testid=result-card]")
    found.nth(count - 1).wait_for(timeout=60_000)
    assert found.count() == count
    return found


# float32 arrays come back from the page as base64 (as a JSON list of numbers, they took seconds)
BASE64 = """(floats) => {
  const bytes = new Uint8Array(floats.buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return btoa(text);
}"""
CROP_IN_THE_PAGE = f"""async ([url, size, resize, aspect]) => {{
  const blob = await (await fetch(url)).blob();
  const photo = await window.landmark.decode(new File([blob], url));
  const crop = window.landmark.preprocess(photo, size, resize, aspect);
  return {{ height: photo.height, width: photo.width, crop: ({BASE64})(crop) }};
}}"""


def floats(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), np.float32)


def test_the_pages_crop_is_pythons_preprocess(page, url, site):
    from src.onnx_runtime import preprocess

    names = ["landscape.png", "portrait.jpg", "panorama.png", "tiny.png", "alpha.png", "rotated.jpg",
             *[path.name for path in (site / "_photos").glob("real*.jpg")]]  # fmt: skip
    worst = {}
    for name in names:
        found = page.evaluate(CROP_IN_THE_PAGE, [f"{url}_photos/{name}", 224, 256, 8])
        photo = open_photo(site / "_photos" / name)  # upright, flattened onto white
        expected = preprocess(photo, 224, 256, 8)
        assert (found["height"], found["width"]) == (photo.height, photo.width), name
        worst[name] = float(np.abs(floats(found["crop"]).reshape(expected.shape) - expected).max())
    assert max(worst.values()) <= 2e-3, worst  # measured: 0 for every one (Chromium's JPEG decoder is libjpeg-turbo)


def test_the_pages_crop_geometry_rounds_halves_to_even_as_python(page):
    sizes = [[600, 800], [800, 600], [100, 1000], [20, 30], [1, 20_000]]
    sizes += np.random.default_rng(0).integers(1, 3000, (300, 2)).tolist()
    found = page.evaluate("sizes => sizes.map(([h, w]) => [window.landmark.cropGeometry(h, w, 256, 224, 8), "
                          "window.landmark.cropBox(h, w, 256, 224, 8)])", sizes)  # fmt: skip
    assert found[0][0][-1] == 58, "600x800: (341 - 224) / 2 = 58.5 rounds to 58"
    assert [geometry for geometry, _ in found] == [crop_geometry(h, w, 256, 224, 8) for h, w in sizes]
    assert np.allclose([box for _, box in found], [crop_box(h, w, 256, 224, 8) for h, w in sizes], rtol=0, atol=1e-9)


def test_where_the_model_looked_lands_where_python_puts_it(page):
    from src.onnx_runtime import cam_to_photo

    cam = np.random.default_rng(1).random((7, 7), dtype=np.float32)
    for height, width in ((60, 80), (80, 60), (10, 200)):  # small photos: as exact a test, and quick to compare
        box = crop_box(height, width, 256, 224, 8)
        found = page.evaluate(f"([cam, h, w, box]) => ({BASE64})(window.landmark.camToPicture(cam, 7, 7, h, w, box))",
                              [cam.ravel().tolist(), height, width, box])  # fmt: skip
        expected = cam_to_photo(cam, height, width, 256, 224, 8)
        assert np.abs(floats(found).reshape(height, width) - expected).max() < 1e-5


def test_the_country_line_and_percentages_are_worded_as_python_words_them(page):
    countries = [("United States", 0.83), ("Canada / United States", 0.5), ("France", 0.125),
                 ("Israel / Jordan", 0.995)]  # fmt: skip
    found = page.evaluate("rows => rows.map(row => window.landmark.countryLine([row]))", [list(c) for c in countries])
    assert found == [country_line([row]) for row in countries]  # 0.125 -> "12%": Python rounds a tie to even
    assert page.evaluate("() => [0.25, 0.35, 2.5, 12.5].map(x => window.landmark.pyFixed(x, 1))") == [
        f"{x:.1f}" for x in (0.25, 0.35, 2.5, 12.5)
    ]


def test_two_photos_and_a_bad_file_get_the_clis_answers_and_one_line(page, site):
    names = photo_names(site)
    page.set_input_files("#photos", [str(site / "_photos" / name) for name in names + ["notes.txt"]])
    found = cards(page, 3)
    expected = predict_cli(site / "models" / "transfer_exported.onnx", [site / "_photos" / name for name in names])
    for i, answer in enumerate(expected):
        card = found.nth(i)
        assert card.get_attribute("data-top1") == answer["predictions"][0]["name"]
        assert card.get_attribute("data-model") == KNOWS_ALL and names[i] in card.locator(".name").inner_text()
        rows = card.locator(".prediction")
        assert rows.count() == len(answer["predictions"]) == 3
        for rank, prediction in enumerate(answer["predictions"]):
            assert prediction["name"] in rows.nth(rank).locator(".label").inner_text()
            assert abs(float(rows.nth(rank).get_attribute("data-probability")) - prediction["probability"]) < 0.02
        country = answer["countries"][0]
        assert card.locator(".country").inner_text().startswith(
            country_line([(country["country"], country["probability"])]).split("(")[0]
        )
    bad = found.nth(2)
    line = bad.get_attribute("data-error")
    assert line.startswith("notes.txt: not an image this browser can read") and "\n" not in line
    assert bad.inner_text() == line and bad.get_attribute("data-top1") is None


def test_the_map_shows_a_numbered_circle_for_each_landmark_offline(page, site):
    page.set_input_files("#photos", str(site / "_photos" / photo_names(site)[0]))
    world = cards(page, 1).first.locator(".leaflet-container")
    assert world.locator("path.leaflet-interactive").count() == 3, "a circle for each of the top 3"
    assert world.locator(".map-rank").all_inner_texts() == ["3", "2", "1"], "the most likely drawn last, on top"
    assert any("tile.openstreetmap.org" in refused for refused in page.refused), "it asked for its tiles, offline"
    assert all("tile.openstreetmap.org" in refused for refused in page.refused), "and for nothing else"


def test_a_dropped_photo_gets_its_card(page, url):
    dropped = page.evaluate_handle("""async (url) => {
      const transfer = new DataTransfer();
      transfer.items.add(new File([await (await fetch(url)).blob()], "dropped.png", { type: "image/png" }));
      return transfer;
    }""", f"{url}_photos/tiny.png")  # fmt: skip
    page.dispatch_event("body", "drop", {"dataTransfer": dropped})
    assert cards(page, 1).first.locator(".name").inner_text() == "dropped.png"


def test_the_toggle_shows_where_the_model_looked_and_back(page, site):
    page.set_input_files("#photos", str(site / "_photos" / "landscape.png"))
    card = cards(page, 1).first
    picture = card.locator("canvas.photo")
    plain = picture.evaluate("canvas => canvas.toDataURL()")
    card.get_by_role("button", name="Show where the model looked").click()
    assert card.get_by_role("button", name="Hide where the model looked").get_attribute("aria-pressed") == "true"
    assert picture.evaluate("canvas => canvas.toDataURL()") != plain
    card.get_by_role("button", name="Hide where the model looked").click()
    assert picture.evaluate("canvas => canvas.toDataURL()") == plain


def test_a_photo_that_is_none_of_the_landmarks_says_so_with_its_guesses_in_grey(page, site):
    page.select_option("#model", KNOWS_NONE)
    page.locator("body[data-ready=true]").wait_for(timeout=60_000)
    photo = site / "_photos" / photo_names(site)[0]
    page.set_input_files("#photos", str(photo))
    card = cards(page, 1).first
    assert card.locator(".verdict").inner_text() == "This does not look like any of the 3 landmarks."
    assert card.locator(".chart.unknown .prediction").count() == 3
    assert predict_cli(site / "models" / "original_exported.onnx", [photo])[0]["known"] is False
    assert "cannot show it" in card.locator(".no-explain").inner_text(), "this file has no class activation map"


def test_switching_the_model_answers_the_same_photos_with_the_other_model(page, site):
    page.set_input_files("#photos", str(site / "_photos" / photo_names(site)[0]))
    assert cards(page, 1).first.get_attribute("data-top1") in LANDMARK_NAMES
    page.select_option("#model", KNOWS_NONE)
    card = page.locator(f"[data-testid=result-card][data-model='{KNOWS_NONE}']")
    card.wait_for(timeout=60_000)
    assert card.get_attribute("data-top1") in OTHER_NAMES and cards(page, 1).count() == 1


def test_make_web_builds_the_app_models_and_serves_them(site, tmp_path):
    """`make web`'s two commands: the build finds the app's models through LANDMARK_CHECKPOINTS, transfer first."""
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for model in ("original_exported.onnx", "transfer_exported.onnx"):
        shutil.copy(site / "models" / model, checkpoints / model)
    env = {**os.environ, "LANDMARK_CHECKPOINTS": str(checkpoints)}
    out = tmp_path / "web"
    done = subprocess.run([sys.executable, "-m", "src.web", "build", "--out", str(out)], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
    manifest = json.loads((out / "models.json").read_text())
    assert [(model["label"], model["file"]) for model in manifest["models"]] == [
        ("Transfer learning (EfficientNet-Lite0)", "models/transfer_exported.onnx"),
        ("From scratch (MyModel)", "models/original_exported.onnx"),
    ]
    assert manifest["models"][0]["metadata"]["format"] == "landmark-classifier/1"
    built = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert built == sorted([*PAGE, "models.json", "models/original_exported.onnx", "models/transfer_exported.onnx",
                            *(f"{target}/{file.removeprefix('dist/')}" for target, (_, files) in PACKAGE_FILES.items()
                              for file in files)])  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "src.web", "serve", "--port", "0", "--dir", str(out)],
                              cwd=PROJECT, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        served = re.search(r"on (http://127\.0\.0\.1:\d+/)", server.stdout.readline())
        with urllib.request.urlopen(f"{served[1]}index.html", timeout=10) as response:
            assert response.read() == (out / "index.html").read_bytes()
    finally:
        server.terminate()
        server.wait(timeout=10)

def test_the_server_isolates_the_page_so_that_with_more_cores_the_model_runs_on_threads(browser, url, site):
    with urllib.request.urlopen(f"{url}ort/ort-wasm-simd-threaded.wasm") as response:
        assert response.headers["Content-Type"] == "application/wasm"
    with urllib.request.urlopen(f"{url}ort/ort.wasm.min.mjs") as response:
        assert response.headers["Content-Type"] == "text/javascript"
        assert response.headers["Cross-Origin-Embedder-Policy"] == "credentialless"
    page = browser.new_page()
    try:
        page.add_init_script("Object.defineProperty(navigator, 'hardwareConcurrency', { get: () => 8 })")
        page.goto(url)
        page.locator("body[data-ready=true]").wait_for(timeout=60_000)
        assert page.evaluate("() => [crossOriginIsolated, window.landmark.threads]") == [True, 4]
        photo = site / "_photos" / photo_names(site)[0]
        page.set_input_files("#photos", str(photo))
        expected = predict_cli(site / "models" / "transfer_exported.onnx", [photo])[0]["predictions"][0]
        top = cards(page, 1).first.locator(".prediction").first
        assert expected["name"] in top.inner_text()
        assert abs(float(top.get_attribute("data-probability")) - expected["probability"]) < 0.02
    finally:
        page.close()
