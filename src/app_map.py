"""Where the landmarks are: a world map with a circle at each of a photo's top-k landmarks, sized by its probability and
numbered with its rank (its name and probability on hover), zoomed to fit them all (used by src/app_card.py).

The map is an ipyleaflet widget: its tiles come from the default provider (OpenStreetMap) in the viewer's browser.
Offline, the circles and their numbers are drawn on an empty background and everything else works as usual.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ipywidgets as widgets
from ipyleaflet import CircleMarker, DivIcon, Map, Marker

MAP_WIDTH, MAP_HEIGHT = 340, 260  # px
TILE = 256  # px: a Web Mercator tile; at zoom z the whole world is TILE * 2**z px wide
MARGIN = 40  # px kept free around the landmarks, for their circles
MAX_ZOOM = 6  # a single landmark is shown with its region, not its street
MAX_LATITUDE = 85.0  # Web Mercator's limit (the poles are infinitely far)
COLOURS = {True: "#3b7dd8", False: "#9099a8"}  # the chart's blue; grey for the guesses of a photo that is unknown
RANK_STYLE = "font:bold 12px sans-serif;color:#10243f;text-align:center"
# Leaflet draws a marker's div as a white box with a border (the app has no other such markers): the ranks are plain
# text on their circles instead. A style element in the marker's own HTML, so that the map needs nothing else.
RANK_CSS = "<style>.leaflet-div-icon{background:none;border:none}</style>"


def unwrapped(longitudes: Sequence[float]) -> list[float]:
    """The longitudes, those west of the widest gap between them moved by 360 degrees (then all of them back by 360 if
    their middle is past 180), so that they span the smallest arc: Hawaii (-156) and Sydney (151) are 53 degrees
    apart across the Pacific, not 307 across the world."""
    if len(longitudes) < 2:
        return list(longitudes)
    ordered = sorted(longitudes)
    gaps = [(east - west, west) for west, east in zip(ordered, ordered[1:])]
    widest, west_end = max(gaps)
    if widest <= ordered[0] + 360 - ordered[-1]:  # the widest gap is the one across the date line: nothing to move
        return list(longitudes)
    shifts = [360 if longitude <= west_end else 0 for longitude in longitudes]
    moved = [longitude + shift for longitude, shift in zip(longitudes, shifts)]
    back = 360 if (min(moved) + max(moved)) / 2 > 180 else 0  # the middle stays within -180..180
    return [longitude + (shift - back) for longitude, shift in zip(longitudes, shifts)]


def mercator_y(latitude: float) -> float:
    """Web Mercator's vertical coordinate of a latitude, in radians (0 at the equator, about pi at 85 degrees north)."""
    latitude = max(-MAX_LATITUDE, min(MAX_LATITUDE, latitude))
    return math.asinh(math.tan(math.radians(latitude)))


def latitude_of(y: float) -> float:
    """The latitude at Web Mercator's vertical coordinate y (the inverse of mercator_y)."""
    return math.degrees(math.atan(math.sinh(y)))


def view(latitudes: Sequence[float], longitudes: Sequence[float], width: int = MAP_WIDTH, height: int = MAP_HEIGHT
         ) -> tuple[tuple[float, float], int]:  # fmt: skip
    """The center (latitude, longitude) and the largest zoom level (0 to MAX_ZOOM) at which a width x height px map
    shows every point with MARGIN px to spare. Longitudes as unwrapped gives them."""
    ys = [mercator_y(latitude) for latitude in latitudes]
    zooms = [MAX_ZOOM]
    for span, circumference, pixels in ((max(longitudes) - min(longitudes), 360.0, width),
                                        (max(ys) - min(ys), 2 * math.pi, height)):  # fmt: skip
        if span > 0:
            zooms.append(math.floor(math.log2(max(pixels - 2 * MARGIN, 1) / (TILE * span / circumference))))
    center = (latitude_of((max(ys) + min(ys)) / 2), (max(longitudes) + min(longitudes)) / 2)
    return center, max(0, min(zooms))


def circle_radius(probability: float) -> float:
    """px: the circle's area grows with the probability, and an unlikely landmark is still visible."""
    return 4 + 18 * math.sqrt(max(0.0, min(1.0, probability)))


def rank_icon(rank: int, radius: float) -> DivIcon:
    """The landmark's rank (1 for the most likely, as in the chart) in the middle of its circle."""
    side = 2 * round(radius)
    return DivIcon(html=f'{RANK_CSS}<div class="map-rank" style="{RANK_STYLE};line-height:{side}px">{rank}</div>',
                   icon_size=[side, side], icon_anchor=[side // 2, side // 2])  # fmt: skip


def landmark_map(predictions: Sequence[dict], known: bool = True) -> Map | None:
    """A map of the predictions that have coordinates (src.runtime.answer's "predictions", most likely first), or None
    when none has (classes that are not among the 50 landmarks)."""
    located = [(rank, p) for rank, p in enumerate(predictions, 1) if p.get("latitude") is not None]
    if not located:
        return None
    longitudes = unwrapped([p["longitude"] for _, p in located])
    center, zoom = view([p["latitude"] for _, p in located], longitudes)
    size = widgets.Layout(width=f"{MAP_WIDTH}px", height=f"{MAP_HEIGHT}px", min_height=f"{MAP_HEIGHT}px", flex="0 0 auto")
    world = Map(center=center, zoom=zoom, scroll_wheel_zoom=False, layout=size)
    for tiles in world.layers:  # the basemap's tiles start at zoom 1, so Leaflet would not show the whole world at 0
        tiles.min_zoom = 0
    colour = COLOURS[known]
    for (rank, p), longitude in reversed(list(zip(located, longitudes))):  # the most likely drawn last: on top
        location, radius = (p["latitude"], longitude), circle_radius(p["probability"])
        name = f"{rank}. {p['name']}: {100 * p['probability']:.1f}%"
        world.add(CircleMarker(location=location, radius=round(radius), color=colour, fill_color=colour,
                               fill_opacity=0.45, weight=2, name=name))  # fmt: skip
        on_top = 1000 * (len(predictions) - rank)  # Leaflet stacks markers by latitude: here by rank, 1 on top
        world.add(Marker(location=location, icon=rank_icon(rank, radius), draggable=False, title=name, keyboard=False,
                         z_index_offset=on_top))  # fmt: skip
    return world
