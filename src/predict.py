"""Suggest the most likely landmarks for photos, with where they are.

    python -m src.predict PHOTO [PHOTO ...] [--model checkpoints/transfer_exported.pt] [--top-k 5] [--json]

A photo that cannot be used gets one line on stderr naming it and the problem; the others are still processed, and
the exit status is 1. A bad option or a model file that cannot be used: one line, exit status 2, before any photo.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import src  # noqa: F401 - sets OMP_WAIT_POLICY before torch loads
from src.checks import POSITIVE_INT, OneLineParser
from src.exported import TRANSFER_EXPORT, error_line, load_predictor, top_k
from src.images import PhotoError, open_photo


def format_predictions(photo: str, predictions: list[dict]) -> str:
    lines = [photo]
    for rank, p in enumerate(predictions, 1):
        where = f" ({p['place']})" if p["place"] else ""
        lines.append(f"  {rank}. {p['name'] + where:<60} {100 * p['probability']:5.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name the terminal cannot encode must not end the run
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = OneLineParser(description="Suggest the most likely landmarks for photos.")
    parser.add_argument("photos", nargs="+", type=Path, metavar="PHOTO")
    parser.add_argument("--model", type=Path, default=TRANSFER_EXPORT, help=f"exported predictor (default {TRANSFER_EXPORT})")
    parser.add_argument("--top-k", type=POSITIVE_INT, default=5, help="how many landmarks per photo (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)

    try:
        predictor = load_predictor(args.model)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results, failed = [], False
    for photo in args.photos:
        try:
            predictions = top_k(predictor, open_photo(photo), args.top_k)
        except PhotoError as err:
            print(f"error: {err}", file=sys.stderr)
            failed = True
            continue
        except Exception as err:  # noqa: BLE001 - e.g. out of memory: say so, and go on with the next photo
            print(f"error: {photo}: could not classify this photo ({error_line(err)})", file=sys.stderr)
            failed = True
            continue
        if args.json:
            results.append({"photo": str(photo), "predictions": predictions})
        else:
            print(format_predictions(str(photo), predictions))
    if args.json:
        print(json.dumps(results, indent=1, ensure_ascii=False))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
