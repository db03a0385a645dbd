"""Specification of the predict CLI (src/predict.py): top-k landmarks per photo, the likeliest country, "none of
these landmarks" below the file's threshold, and one clear line per bad input."""

import json
import os
import subprocess
import sys
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import src.runtime
from src.calibration import Calibration
from src.predict import main
from src.files import quiet_torchscript
from src.landmarks import landmark_place
from src.predictor import Predictor, export_predictor
from tests.conftest import LANDMARK_NAMES, SAMPLES, requires_samples


@pytest.fixture
def good_photo(tmp_path) -> Path:
    path = tmp_path / "holiday.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)).save(path)
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prints_the_top_k_landmarks_with_their_places_then_the_likeliest_country(exported_scratch, good_photo, capsys):
    code, out, err = run(capsys, good_photo, "--model", exported_scratch, "--top-k", "2")
    lines = out.strip().splitlines()
    assert code == 0 and err == ""
    assert lines[0] == str(good_photo) and len(lines) == 4
    assert lines[1].lstrip().startswith("1. ") and lines[1].rstrip().endswith("%")
    assert any("(Paris, France)" in line for line in lines) or any("(Brussels, Belgium)" in line for line in lines)
    assert lines[3].startswith("  Most likely in ") and lines[3].endswith("%)")


def test_json_output_has_names_places_coordinates_probabilities_countries_and_known(exported_scratch, good_photo, capsys):
    code, out, _ = run(capsys, good_photo, "--model", exported_scratch, "--json")
    [result] = json.loads(out)
    predictions = result["predictions"]
    assert code == 0 and result["photo"] == str(good_photo) and result["known"] is True
    by_country = {p["country"]: p["probability"] for p in predictions}  # one landmark per country here
    assert result["countries"] == sorted(result["countries"], key=lambda c: -c["probability"])
    assert {c["country"]: c["probability"] for c in result["countries"]} == pytest.approx(by_country)
    assert [p["name"] for p in predictions] and {p["name"] for p in predictions} == set(LANDMARK_NAMES)
    assert sum(p["probability"] for p in predictions) == pytest.approx(1.0, abs=1e-5)
    assert predictions == sorted(predictions, key=lambda p: -p["probability"])
    eiffel = next(p for p in predictions if p["name"] == "Eiffel Tower")
    assert eiffel["place"] == "Paris, France" and eiffel["latitude"] == pytest.approx(48.86, abs=0.01)


def bad_photos(folder: Path) -> dict[str, Path]:
    """One file per kind of bad input, and the words its error line must contain."""
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photo at all")
    whole = folder / "whole.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(whole)
    (folder / "truncated.jpg").write_bytes(whole.read_bytes()[:2000])
    Image.new("1", (10_000, 9_500)).save(folder / "bomb.png")  # 95 megapixels, a few kB on disk
    return {
        "missing.jpg": folder / "missing.jpg",
        "empty": folder / "empty.jpg",
        "not an image": folder / "notes.jpg",
        "truncated": folder / "truncated.jpg",
        "megapixel": folder / "bomb.png",
        "folder": folder,
    }


def test_each_bad_photo_gets_one_line_naming_it_and_the_others_are_still_processed(
    exported_scratch, good_photo, tmp_path, capsys
):
    bad = bad_photos(tmp_path / "bad")
    code, out, err = run(capsys, *bad.values(), good_photo, "--model", exported_scratch)
    error_lines = err.strip().splitlines()
    assert code == 1
    assert len(error_lines) == len(bad)
    for (words, path), line in zip(bad.items(), error_lines):
        assert line.startswith(f"error: {path}:"), line
        assert (words if words != "missing.jpg" else "no such file") in line, line
    assert out.startswith(str(good_photo)), "the good photo is still processed"


def test_an_unreadable_model_file_is_one_line_and_exit_status_2(good_photo, tmp_path, capsys):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"definitely not a TorchScript archive")
    code, out, err = run(capsys, good_photo, "--model", broken)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {broken}: not a loadable exported model") and err.count("\n") == 1


def test_a_missing_model_file_says_how_to_make_one(good_photo, tmp_path, capsys):
    code, _, err = run(capsys, good_photo, "--model", tmp_path / "nothing.pt")
    assert code == 2 and "Run the notebooks" in err and err.count("\n") == 1


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_unusual_image_modes_are_converted(mode, exported_scratch, tmp_path, capsys):
    path = tmp_path / ("photo.jpg" if mode == "CMYK" else "photo.png")
    Image.new("RGB", (320, 240), (90, 140, 200)).convert(mode).save(path)
    code, out, _ = run(capsys, path, "--model", exported_scratch, "--top-k", "1")
    assert code == 0 and len(out.strip().splitlines()) == 3


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header that declares width x height pixels, followed by almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes(100))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_hostile_photos_each_get_one_line_and_odd_but_valid_ones_are_classified(exported_scratch, tmp_path, capsys):
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "animation.gif", save_all=True, append_images=frames[1:], duration=100)
    Image.fromarray(rng.integers(0, 65536, (60, 80)).astype(np.uint16)).save(tmp_path / "sixteen_bit.png")
    Image.new("RGB", (20_000, 1), (40, 90, 200)).save(tmp_path / "one_pixel_high.png")  # 150 bytes on disk
    Image.new("RGB", (1, 20_000), (40, 90, 200)).save(tmp_path / "one_pixel_wide.png")
    Image.new("RGB", (1, 1), (40, 90, 200)).save(tmp_path / "one_pixel.png")
    frames[0].save(tmp_path / "Tōkyō 東京 ☀.jpg")
    frames[0].save(tmp_path / os.fsdecode(b"caf\xe9.jpg"))  # a name that is not UTF-8: cannot be printed as it is
    good = sorted(tmp_path.iterdir())
    bad = {"drawing.svg": "not an image file", "declares_81_megapixels.png": "damaged or truncated",
           "declares_3600_megapixels.png": "too large to open safely", "loop.jpg": "cannot read the file",
           "dangling.jpg": "no such file", "pipe.jpg": "not a regular file"}  # fmt: skip
    (tmp_path / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"></svg>')
    (tmp_path / "declares_81_megapixels.png").write_bytes(png_declaring(9_000, 9_000))
    (tmp_path / "declares_3600_megapixels.png").write_bytes(png_declaring(60_000, 60_000))
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it would wait for a writer forever
    code, out, err = run(capsys, *good, *(tmp_path / name for name in bad), "--model", exported_scratch, "--top-k", "1")
    assert code == 1
    assert len(out.splitlines()) == 3 * len(good) and "caf\\udce9.jpg" in out and "Tōkyō 東京 ☀.jpg" in out
    error_lines = err.splitlines()
    assert len(error_lines) == len(bad)
    for (name, words), line in zip(bad.items(), error_lines):
        assert line.startswith(f"error: {tmp_path / name}: ") and words in line, line


def test_a_photo_the_model_fails_on_is_one_line_and_the_next_photo_is_still_classified(
    exported_scratch, good_photo, tmp_path, monkeypatch, capsys
):
    answer = src.runtime.answer
    failing = tmp_path / "fails.jpg"
    failing.write_bytes(good_photo.read_bytes())

    def sometimes_fails(predictor, image, k):
        if image.size == (800, 600) and not sometimes_fails.failed:
            sometimes_fails.failed = True
            raise RuntimeError("The following operation failed in the TorchScript interpreter.\n"
                               "RuntimeError: out of memory")  # fmt: skip
        return answer(predictor, image, k)

    sometimes_fails.failed = False
    monkeypatch.setattr(src.runtime, "answer", sometimes_fails)
    code, out, err = run(capsys, failing, good_photo, "--model", exported_scratch)
    assert code == 1 and err == f"error: {failing}: could not classify this photo (RuntimeError: out of memory)\n"
    assert out.startswith(str(good_photo))


@pytest.mark.parametrize(
    "argv, words",
    [(["--top-k", "0"], "argument --top-k: must be at least 1, got 0"),
     (["--top-k", "many"], "argument --top-k: must be a whole number, got 'many'"),
     ([], "the following arguments are required: PHOTO")],
)  # fmt: skip
def test_a_bad_option_is_one_line_and_exit_status_2_before_any_work(argv, words, good_photo, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*([str(good_photo)] if argv else []), *argv])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""
    assert captured.err.startswith("error: ") and words in captured.err and captured.err.count("\n") == 1


def test_a_scripted_model_that_is_not_a_predictor_is_one_line(small_scratch_model, good_photo, tmp_path, capsys):
    import torch

    bare = tmp_path / "my_model.pt"
    with quiet_torchscript():
        torch.jit.script(small_scratch_model).save(str(bare))
    code, out, err = run(capsys, good_photo, "--model", bare)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {bare}: a TorchScript model without class names") and "export_predictor" in err


def test_top_k_larger_than_the_classes_lists_every_class(small_scratch_model, good_photo, tmp_path, capsys):
    import torch

    two_classes = torch.nn.Sequential(small_scratch_model, torch.nn.Linear(3, 2)).eval()
    export_predictor(two_classes, LANDMARK_NAMES[:2], [0.5] * 3, [0.25] * 3, tmp_path / "two.pt", 224, 256, onnx=False)
    code, out, _ = run(capsys, good_photo, "--model", tmp_path / "two.pt", "--top-k", "10")
    assert code == 0 and len(out.strip().splitlines()) == 4, "the photo, both landmarks, the country"


@requires_samples
def test_real_landmark_photos(exported_scratch, capsys):
    photos = sorted((SAMPLES / "test").rglob("*.jpg"))[:3]
    code, out, _ = run(capsys, *photos, "--model", exported_scratch, "--json")
    assert code == 0 and len(json.loads(out)) == 3


# ----------------------------------------------------------------------------------------------------------------------
# None of these landmarks, and where


def save_predictor(module: torch.nn.Module, path: Path) -> Path:
    with quiet_torchscript():
        torch.jit.script(module).save(str(path))
    return path


def with_threshold(model: torch.nn.Module, threshold: float, path: Path) -> Path:
    """The model exported with a max-probability threshold: 2.0 makes every photo unknown, 0.0 every photo known."""
    calibration = Calibration(temperature=1.0, score_kind="max_probability", threshold=threshold, images=10)
    return save_predictor(Predictor(model, LANDMARK_NAMES, [0.5] * 3, [0.25] * 3, 224, 256, calibration), path)


def test_a_photo_below_the_threshold_first_says_it_is_none_of_the_landmarks_then_the_best_guesses(
    small_scratch_model, good_photo, tmp_path, capsys
):
    unknown = with_threshold(small_scratch_model, 2.0, tmp_path / "unknown.pt")
    code, out, err = run(capsys, good_photo, "--model", unknown, "--top-k", "2")
    lines = out.strip().splitlines()
    assert code == 0 and err == "" and len(lines) == 5
    assert lines[:2] == [str(good_photo), "  This does not look like any of the 3 landmarks"]
    assert lines[2].lstrip().startswith("1. ") and lines[4].startswith("  Most likely in ")
    known = with_threshold(small_scratch_model, 0.0, tmp_path / "known.pt")
    _, out, _ = run(capsys, good_photo, "--model", known, "--top-k", "2")
    assert "does not look like" not in out and len(out.strip().splitlines()) == 4


def test_json_says_whether_the_photo_is_known(small_scratch_model, good_photo, tmp_path, capsys):
    for threshold, known in ((2.0, False), (0.0, True)):
        path = with_threshold(small_scratch_model, threshold, tmp_path / f"{threshold}.pt")
        code, out, _ = run(capsys, good_photo, "--model", path, "--json")
        [result] = json.loads(out)
        assert code == 0 and result["known"] is known and len(result["predictions"]) == 3


class FixedProbabilities(torch.nn.Module):
    """A predictor file that gives every photo the same probabilities."""

    def __init__(self, names: list[str], probabilities: list[float]):
        super().__init__()
        self.class_names, self.class_places = names, [landmark_place(name) for name in names]
        self.register_buffer("probabilities", torch.tensor([probabilities]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probabilities


def test_the_likeliest_country_sums_its_landmarks_probabilities(good_photo, tmp_path, capsys):
    """The Eiffel Tower is the likeliest landmark (40%), but two landmarks in the United States add up to 60%."""
    module = FixedProbabilities(["Golden Gate Bridge", "Eiffel Tower", "Mount Rainier National Park"], [0.35, 0.4, 0.25])
    path = save_predictor(module, tmp_path / "fixed.pt")
    _, out, _ = run(capsys, good_photo, "--model", path, "--top-k", "1")
    assert out.splitlines()[1:] == [f"  1. {'Eiffel Tower (Paris, France)':<60}  40.0%", "  Most likely in the United States (60%)"]
    _, out, _ = run(capsys, good_photo, "--model", path, "--json")
    assert json.loads(out)[0]["countries"] == [{"country": "United States", "probability": pytest.approx(0.6)},
                                               {"country": "France", "probability": pytest.approx(0.4)}]  # fmt: skip


def test_classes_that_are_not_landmarks_get_no_country_line(small_scratch_model, good_photo, tmp_path, capsys):
    path = tmp_path / "clothes.pt"
    export_predictor(small_scratch_model, ["T-shirt", "Trouser", "Bag"], [0.5] * 3, [0.25] * 3, path, 224, 256, onnx=False)
    code, out, _ = run(capsys, good_photo, "--model", path, "--top-k", "1")
    assert code == 0 and len(out.strip().splitlines()) == 2 and "Most likely in" not in out


class OlderPredictor(torch.nn.Module):
    """A file exported before calibration: forward only, no classify, temperature or threshold."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.class_names = model, LANDMARK_NAMES
        self.class_places = ["Paris, France", "San Francisco, California, United States", "Brussels, Belgium"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(x.float() / 255, size=[224, 224], mode="bilinear")
        return torch.softmax(self.model((x - 0.5) / 0.25), dim=1)


def test_a_file_exported_before_calibration_knows_every_photo(small_scratch_model, good_photo, tmp_path, capsys):
    older = save_predictor(OlderPredictor(small_scratch_model), tmp_path / "older.pt")
    code, out, err = run(capsys, good_photo, "--model", older, "--top-k", "1")
    assert code == 0 and err == "" and "does not look like" not in out and "Most likely in" in out
    code, out, _ = run(capsys, good_photo, "--model", older, "--json")
    assert code == 0 and json.loads(out)[0]["known"] is True


class NaNOnBrightPhotos(torch.nn.Module):
    """A network that breaks down (NaN logits) on bright photos, and works on dark ones."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return torch.where(x.mean() > 0, logits * float("nan"), logits)


def test_nan_probabilities_are_one_line_and_the_next_photo_is_still_classified(
    small_scratch_model, tmp_path, capsys
):
    path = tmp_path / "nan.pt"
    export_predictor(NaNOnBrightPhotos(small_scratch_model), LANDMARK_NAMES, [0.5] * 3, [0.25] * 3, path, 224, 256,
                     onnx=False)
    Image.new("RGB", (300, 200), (250, 250, 250)).save(tmp_path / "bright.png")
    Image.new("RGB", (300, 200), (10, 10, 10)).save(tmp_path / "dark.png")
    code, out, err = run(capsys, tmp_path / "bright.png", tmp_path / "dark.png", "--model", path, "--json")
    assert code == 1
    assert err == f"error: {tmp_path / 'bright.png'}: could not classify this photo (NaN probabilities)\n"
    assert [result["photo"] for result in json.loads(out)] == [str(tmp_path / "dark.png")]


# ----------------------------------------------------------------------------------------------------------------------
# ONNX Runtime: the same answers, fast, without torch


@pytest.mark.parametrize("output", [[], ["--json"]], ids=["text", "json"])
def test_an_onnx_model_gives_exactly_the_torchscript_files_output(exported_scratch, good_photo, output, capsys):
    runs = [run(capsys, good_photo, "--model", model, "--top-k", "3", *output)
            for model in (exported_scratch, exported_scratch.with_suffix(".onnx"))]  # fmt: skip
    (code, out, err), (onnx_code, onnx_out, onnx_err) = runs
    assert (code, err) == (onnx_code, onnx_err) == (0, "")
    if output:  # JSON: the same names and places, probabilities equal to float32 precision
        for expected, found in zip(json.loads(out)[0]["predictions"], json.loads(onnx_out)[0]["predictions"]):
            assert found == {**expected, "probability": pytest.approx(expected["probability"], abs=1e-5)}
    else:
        assert onnx_out == out


def test_without_model_the_onnx_file_answers_when_it_exists_and_stderr_says_so(exported_scratch, good_photo,
                                                                                monkeypatch, capsys):  # fmt: skip
    monkeypatch.setattr(src.predict, "DEFAULT_MODEL", exported_scratch)
    code, out, err = run(capsys, good_photo, "--json")
    assert code == 0 and err == f"Using {exported_scratch.with_suffix('.onnx')} (ONNX Runtime)\n"
    assert json.loads(out)[0]["photo"] == str(good_photo)
    monkeypatch.setattr(src.runtime, "onnx_runtime_installed", lambda: False)
    assert run(capsys, good_photo, "--json")[2] == f"Using {exported_scratch} (TorchScript)\n"


def imported_after(code: str) -> list[str]:
    """Which of torch, numpy and onnxruntime a fresh Python has imported after running `code`."""
    script = f"import sys\n{code}\nprint([m for m in ('torch', 'numpy', 'onnxruntime') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1]).stdout  # fmt: skip
    return json.loads(out.splitlines()[-1].replace("'", '"'))  # the last line: what the command printed comes first


@pytest.mark.parametrize("argv", [["--help"], ["photo.jpg", "--top-k", "0"], []], ids=["help", "bad option", "none"])
def test_help_and_argument_errors_answer_before_anything_heavy_is_imported(argv):
    code = f"from src.predict import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert imported_after(code) == []


def test_a_photo_through_the_onnx_file_never_imports_torch(exported_scratch, good_photo):
    code = f"from src.predict import main; main([{str(good_photo)!r}, '--model', {str(exported_scratch.with_suffix('.onnx'))!r}])"
    assert imported_after(code) == ["numpy", "onnxruntime"]


def test_the_cli_runs_a_torchscript_file_without_its_optimizing_first_calls(exported_scratch, good_photo, monkeypatch,
                                                                            capsys):  # fmt: skip
    """A cold CLI answers a few photos: TorchScript's optimizing first two calls would cost more than they save."""
    loaded = []
    real = src.runtime.load_model
    monkeypatch.setattr(src.runtime, "load_model", lambda path, optimize=True: loaded.append(optimize) or real(path, optimize))
    assert run(capsys, good_photo, "--model", exported_scratch)[0] == 0
    assert loaded == [False]
