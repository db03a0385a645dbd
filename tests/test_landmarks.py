"""Specification of src/landmarks.py: every landmark's display name, place and coordinates."""

import pytest

from src.landmarks import country_line, display_name, in_country, landmark_place, landmarks


@pytest.mark.parametrize(
    "folder, name",
    [("16.Eiffel_Tower", "Eiffel Tower"), ("00.Haleakala_National_Park", "Haleakalā National Park"),
     ("04.Wroclaws_Dwarves", "Wrocław's Dwarves"), ("00.Synthetic_Landmark_A", "Synthetic Landmark A"),
     ("T-shirt/top", "T-shirt/top")],
)  # fmt: skip
def test_display_name_uses_the_landmark_table_else_drops_the_number_and_underscores(folder, name):
    assert display_name(folder) == name


def test_every_class_folder_has_a_name_a_place_and_coordinates():
    table = landmarks()
    assert list(table) == sorted(table) and len(table) == 50
    assert [folder[:2] for folder in table] == [f"{i:02d}" for i in range(50)]
    for row in table.values():
        assert row["name"] and row["place"] and row["country"]
        assert -90 <= float(row["latitude"]) <= 90 and -180 <= float(row["longitude"]) <= 180


@pytest.mark.parametrize(
    "name, place", [("Eiffel Tower", "Paris, France"), ("16.Eiffel_Tower", "Paris, France"), ("Synthetic Landmark A", "")]
)
def test_landmark_place_knows_display_names_and_folders(name, place):
    assert landmark_place(name) == place


def test_the_most_likely_country_is_named_with_its_summed_probability():
    assert country_line([("United States", 0.834), ("France", 0.1)]) == "Most likely in the United States (83%)"
    assert country_line([("France", 0.51)]) == "Most likely in France (51%)"
    assert country_line([]) == "", "classes that are not among the 50 landmarks have no country"


@pytest.mark.parametrize("country, words", [("United States", "the United States"), ("France", "France"),
                                            ("Canada / United States", "Canada or the United States"),
                                            ("Czech Republic", "the Czech Republic"),
                                            ("United Kingdom", "the United Kingdom"),
                                            ("Switzerland / Italy", "Switzerland or Italy")])  # fmt: skip
def test_countries_are_named_as_in_a_sentence_the_same_by_the_app_and_the_cli(country, words):
    assert in_country(country) == words
