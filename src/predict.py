"""Suggest the most likely landmarks for photos, with where they are, and say when a photo shows none of them.

    python -m src.predict PHOTO [PHOTO ...] [--model checkpoints/transfer_exported.onnx] [--top-k 5] [--json]

For each photo: "This does not look like any of the N landmarks" first when it scores below the file's threshold
(src/calibration.py), then the k likeliest landmarks with their places and calibrated probabilities, then the likeliest
country. A photo that cannot be used gets one line on stderr naming it and the problem; the others are still
processed, and the exit status is 1. A bad option or a model file that cannot be used: one line, exit status 2, before
any photo.

--model X.onnx runs in ONNX Runtime and --model X.pt in TorchScript, with the same output. Without --model, the
transfer model's ONNX file when it exists and ONNX Runtime is installed, else its TorchScript file; stderr says which.
The arguments are parsed before anything heavy is imported: --help and a bad option answer at once, and the ONNX path
never imports torch (README, "Fast answers").
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import src  # noqa: F401 - sets OMP_WAIT_POLICY before torch loads
from src.checks import POSITIVE_INT, OneLineParser, error_line
from src.paths import model_file, onnx_beside

DEFAULT_MODEL = model_file("transfer", exported=True)


def format_answer(photo: str, result: dict, n_classes: int) -> str:
    """The text for one photo: its name; "This does not look like any of the N landmarks" when it is not known; the
    predictions, one per line; the likeliest country, when the classes have countries."""
    from src.landmarks import country_line
    from src.runtime import none_of_these

    lines = [photo] + ([] if result["known"] else [f"  {none_of_these(n_classes)}"])
    for rank, p in enumerate(result["predictions"], 1):
        where = f" ({p['place']})" if p["place"] else ""
        lines.append(f"  {rank}. {p['name'] + where:<60} {100 * p['probability']:5.1f}%")
    if result["countries"]:
        lines.append(f"  {country_line(result['countries'])}")
    return "\n".join(lines)


def json_answer(photo: str, result: dict) -> dict:
    """The JSON object for one photo: photo, known, countries [{country, probability}], predictions."""
    countries = [{"country": country, "probability": probability} for country, probability in result["countries"]]
    return {"photo": photo, "known": result["known"], "countries": countries, "predictions": result["predictions"]}


def parse_args(argv: list[str] | None):
    parser = OneLineParser(description="Suggest the most likely landmarks for photos.")
    parser.add_argument("photos", nargs="+", type=Path, metavar="PHOTO")
    parser.add_argument("--model", type=Path, help=f"exported model: .onnx (ONNX Runtime) or .pt (TorchScript); "
                        f"default {onnx_beside(DEFAULT_MODEL)} when it exists, else {DEFAULT_MODEL}")  # fmt: skip
    parser.add_argument("--top-k", type=POSITIVE_INT, default=5, help="how many landmarks per photo (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name the terminal cannot encode must not end the run
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = parse_args(argv)
    from src.images import PhotoError, open_photo  # after parsing: --help and bad options need none of it
    from src.runtime import answer, chosen_file, describe, load_model

    try:  # few photos: TorchScript's optimizing first calls would cost more than they save (src/exported.py)
        model = load_model(args.model or chosen_file(DEFAULT_MODEL), optimize=False)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.model is None:
        print(describe(model), file=sys.stderr)
    results, failed = [], False
    for photo in args.photos:
        try:
            result = answer(model, open_photo(photo), args.top_k)
            problem = "" if all(math.isfinite(p["probability"]) for p in result["predictions"]) else "NaN probabilities"
        except PhotoError as err:
            print(f"error: {err}", file=sys.stderr)
            failed = True
            continue
        except Exception as err:  # noqa: BLE001 - e.g. out of memory: say so, and go on with the next photo
            problem = error_line(err)
        if problem:  # a model that breaks down on this photo (NaN logits) is said in one line too
            print(f"error: {photo}: could not classify this photo ({problem})", file=sys.stderr)
            failed = True
            continue
        if args.json:
            results.append(json_answer(str(photo), result))
        else:
            print(format_answer(str(photo), result, len(model.class_names)))
    if args.json:
        print(json.dumps(results, indent=1, ensure_ascii=False))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
