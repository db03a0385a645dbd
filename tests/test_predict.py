"""Specification of the predict CLI (src/predict.py): top-k landmarks per photo, and one clear line per bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.predict import main
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


def test_prints_the_top_k_landmarks_with_their_places(exported_scratch, good_photo, capsys):
    code, out, err = run(capsys, good_photo, "--model", exported_scratch, "--top-k", "2")
    lines = out.strip().splitlines()
    assert code == 0 and err == ""
    assert lines[0] == str(good_photo) and len(lines) == 3
    assert lines[1].lstrip().startswith("1. ") and lines[1].rstrip().endswith("%")
    assert any("(Paris, France)" in line for line in lines) or any("(Brussels, Belgium)" in line for line in lines)


def test_json_output_has_names_places_coordinates_and_probabilities(exported_scratch, good_photo, capsys):
    code, out, _ = run(capsys, good_photo, "--model", exported_scratch, "--json")
    [result] = json.loads(out)
    predictions = result["predictions"]
    assert code == 0 and result["photo"] == str(good_photo)
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
    assert code == 0 and len(out.strip().splitlines()) == 2


@requires_samples
def test_real_landmark_photos(exported_scratch, capsys):
    photos = sorted((SAMPLES / "test").rglob("*.jpg"))[:3]
    code, out, _ = run(capsys, *photos, "--model", exported_scratch, "--json")
    assert code == 0 and len(json.loads(out)) == 3
