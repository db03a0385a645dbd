"""The 50 landmarks: their display names, places and coordinates (src/landmarks.csv), by class folder or by name.

    display_name("16.Eiffel_Tower") -> "Eiffel Tower";  landmark_place("Eiffel Tower") -> "Paris, France"
    country_line([("United States", 0.83), ...]) -> "Most likely in the United States (83%)"
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Sequence
from pathlib import Path

COUNTRIES_WITH_THE = {"United States", "United Kingdom", "Czech Republic", "Netherlands", "Philippines"}
LANDMARKS_CSV = Path(__file__).with_name("landmarks.csv")  # name and location of each of the 50 landmarks


@functools.cache
def landmarks() -> dict[str, dict[str, str]]:
    """Class folder -> its row of src/landmarks.csv: name, place, country, latitude, longitude (all strings)."""
    with open(LANDMARKS_CSV, newline="", encoding="utf-8") as f:
        return {row["folder"]: row for row in csv.DictReader(f)}


def display_name(class_folder: str) -> str:
    """'16.Eiffel_Tower' -> 'Eiffel Tower' (from src/landmarks.csv when the folder is a known landmark).

    Other names lose a numeric 'NN.' prefix and underscores: '00.Synthetic_Landmark_A' -> 'Synthetic Landmark A'.
    """
    if class_folder in landmarks():
        return landmarks()[class_folder]["name"]
    prefix, dot, rest = class_folder.partition(".")
    name = rest if dot and prefix.isdigit() else class_folder
    return name.replace("_", " ")


@functools.cache
def _landmarks_by_name() -> dict[str, dict[str, str]]:
    return {row["name"]: row for row in landmarks().values()}


def landmark_info(name: str) -> dict[str, str] | None:
    """The src/landmarks.csv row for a display name or a class folder; None for anything else."""
    return landmarks().get(name) or _landmarks_by_name().get(name)


def landmark_place(name: str) -> str:
    """'Eiffel Tower' -> 'Paris, France'; '' when the name is not a known landmark."""
    info = landmark_info(name)
    return f"{info['place']}, {info['country']}" if info else ""


def in_country(country: str) -> str:
    """How a sentence names a country of src/landmarks.csv: 'United States' -> 'the United States',
    'Canada / United States' (a landmark on a border) -> 'Canada or the United States', 'France' -> 'France'."""
    return " or ".join(f"the {part}" if part in COUNTRIES_WITH_THE else part for part in country.split(" / "))


def country_line(countries: Sequence[tuple[str, float]]) -> str:
    """'Most likely in the United States (83%)' for the first of [(country, probability)], most likely first (as
    src.runtime.answer gives them); "" when there is none (classes that are not among the 50 landmarks)."""
    if not countries:
        return ""
    country, probability = countries[0]
    return f"Most likely in {in_country(country)} ({100 * probability:.0f}%)"
