"""Specification of src/app_map.py: the map of a photo's most likely landmarks."""

import math
import re

import pytest
from ipyleaflet import CircleMarker, Marker, TileLayer

from src.app_map import (COLOURS, MAP_HEIGHT, MAP_WIDTH, MARGIN, MAX_ZOOM, TILE, circle_radius, landmark_map,
                         latitude_of, mercator_y, unwrapped, view)  # fmt: skip

PARIS, SAN_FRANCISCO, BRUSSELS = (48.8584, 2.2945), (37.8199, -122.4783), (50.8949, 4.3415)
HAWAII, SYDNEY = (20.7097, -156.2533), (-33.8568, 151.2153)
SPREAD = [(51.1784, -115.5708), (39.8822, 116.4066), (51.1079, 17.0385), (-13.1631, -72.545), (37.5794, 126.991)]


def prediction(name: str, probability: float, where: tuple[float, float] | None) -> dict:
    latitude, longitude = where or (None, None)
    return {"name": name, "place": "", "country": "", "probability": probability, "latitude": latitude,
            "longitude": longitude}  # fmt: skip


def pixels(latitude: float, longitude: float, zoom: int) -> tuple[float, float]:
    """Where a point is on the Web Mercator world at this zoom level, in px from its top-left corner."""
    world = TILE * 2**zoom
    return world * (longitude + 180) / 360, world * (1 - mercator_y(latitude) / math.pi) / 2


def fits(points: list[tuple[float, float]], center: tuple[float, float], zoom: int) -> bool:
    """Whether every point is inside a MAP_WIDTH x MAP_HEIGHT map at (center, zoom), MARGIN px from its edges."""
    middle_x, middle_y = pixels(*center, zoom)
    return all(abs(x - middle_x) <= MAP_WIDTH / 2 - MARGIN and abs(y - middle_y) <= MAP_HEIGHT / 2 - MARGIN
               for x, y in (pixels(*point, zoom) for point in points))  # fmt: skip


def test_mercator_latitudes_round_trip_and_stop_short_of_the_poles():
    assert latitude_of(mercator_y(48.8584)) == pytest.approx(48.8584)
    assert mercator_y(0) == 0 and mercator_y(90) == mercator_y(85) < math.inf


def test_longitudes_that_do_not_cross_the_date_line_are_kept():
    assert unwrapped([2.2945, -122.4783, 4.3415]) == [2.2945, -122.4783, 4.3415]
    assert unwrapped([151.2]) == [151.2] and unwrapped([]) == []


def test_landmarks_on_both_sides_of_the_date_line_are_fitted_across_the_pacific():
    assert unwrapped([HAWAII[1], SYDNEY[1]]) == [HAWAII[1] + 360, SYDNEY[1]]  # 53 degrees apart, not 307
    assert unwrapped([-170.0, 10.0, 20.0]) == [190.0, 10.0, 20.0]


def test_the_smallest_arc_stays_centred_between_minus_and_plus_180():
    longitudes = unwrapped([-122.0, 2.3, 151.0])  # Sydney, then east over the Pacific to California and Paris: 211
    assert longitudes == [-122.0, 2.3, 151.0 - 360]
    assert -180 <= (min(longitudes) + max(longitudes)) / 2 <= 180


@pytest.mark.parametrize("points", [[PARIS, BRUSSELS], [PARIS, SAN_FRANCISCO, BRUSSELS], [HAWAII, SYDNEY], SPREAD])
def test_the_view_is_the_largest_zoom_that_shows_every_landmark(points):
    latitudes = [latitude for latitude, _ in points]
    located = list(zip(latitudes, unwrapped([longitude for _, longitude in points])))
    center, zoom = view(latitudes, [longitude for _, longitude in located])
    assert fits(located, center, zoom)
    assert zoom == MAX_ZOOM or not fits(located, center, zoom + 1)


def test_a_single_landmark_is_centred_at_the_largest_zoom():
    assert view([PARIS[0]], [PARIS[1]]) == (pytest.approx(PARIS), MAX_ZOOM)


def test_the_map_has_a_circle_sized_by_probability_and_numbered_by_rank_for_each_landmark():
    predictions = [prediction("Eiffel Tower", 0.7, PARIS), prediction("Atomium", 0.2, BRUSSELS),
                   prediction("Golden Gate Bridge", 0.1, SAN_FRANCISCO)]  # fmt: skip
    world = landmark_map(predictions)
    circles = [layer for layer in world.layers if isinstance(layer, CircleMarker)]
    labels = [layer for layer in world.layers if isinstance(layer, Marker)]
    assert [circle.name for circle in circles] == ["3. Golden Gate Bridge: 10.0%", "2. Atomium: 20.0%",
                                                   "1. Eiffel Tower: 70.0%"], "the most likely drawn last, on top"
    assert [circle.radius for circle in circles] == [round(circle_radius(p)) for p in (0.1, 0.2, 0.7)]
    assert circles[0].radius < circles[1].radius < circles[2].radius
    assert [label.title for label in labels] == [circle.name for circle in circles], "name and probability on hover"
    ranks = [re.search(r'class="map-rank"[^>]*>(\d+)<', label.icon.html) for label in labels]
    assert [rank[1] for rank in ranks] == ["3", "2", "1"], "ranks, as in the chart"
    assert [label.icon.icon_size[0] for label in labels] == [2 * circle.radius for circle in circles], "centred"
    assert labels[0].z_index_offset < labels[1].z_index_offset < labels[2].z_index_offset, "1 on top, then 2..."
    assert {circle.color for circle in circles} == {COLOURS[True]}
    assert (tuple(world.center), world.zoom) == view([PARIS[0], BRUSSELS[0], SAN_FRANCISCO[0]],
                                              [PARIS[1], BRUSSELS[1], SAN_FRANCISCO[1]])  # fmt: skip


def test_the_tiles_come_from_the_default_provider_and_the_page_scrolls_past_the_map():
    world = landmark_map([prediction("Eiffel Tower", 1.0, PARIS)])
    tiles = [layer for layer in world.layers if isinstance(layer, TileLayer)]
    assert len(tiles) == 1 and "openstreetmap.org" in tiles[0].url
    assert not world.scroll_wheel_zoom


def test_landmarks_all_over_the_world_are_shown_on_the_whole_world():
    world = landmark_map([prediction(f"Landmark {i}", 0.2, where) for i, where in enumerate(SPREAD)])
    assert world.zoom == 0, "Banff, Beijing, Wroclaw, Machu Picchu and Seoul"
    assert all(layer.min_zoom <= world.zoom for layer in world.layers if isinstance(layer, TileLayer)), (
        "Leaflet zooms no further out than its tile layers allow")  # fmt: skip


def test_the_guesses_for_a_photo_that_is_none_of_the_landmarks_are_grey():
    world = landmark_map([prediction("Eiffel Tower", 0.4, PARIS)], known=False)
    assert {layer.color for layer in world.layers if isinstance(layer, CircleMarker)} == {COLOURS[False]}


def test_only_landmarks_with_coordinates_are_on_the_map_and_none_means_no_map():
    world = landmark_map([prediction("Synthetic Landmark A", 0.6, None), prediction("Atomium", 0.4, BRUSSELS)])
    assert [layer.name for layer in world.layers if isinstance(layer, CircleMarker)] == ["2. Atomium: 40.0%"]
    assert landmark_map([prediction("Synthetic Landmark A", 1.0, None)]) is None


def test_even_an_impossible_probability_gives_a_visible_circle():
    assert 0 < circle_radius(0.0) < circle_radius(0.5) < circle_radius(1.0) == circle_radius(3.0)
