"""Where the model's central crop lies in a photo: the one recipe both exported runtimes follow, in plain Python.

The TorchScript predictor (src/predictor.py) runs it inside the file; the ONNX runtime (src/onnx_runtime.py) and the
web page (web/app.js) run it outside their graph, with the same arithmetic. For a photo_height x photo_width photo:

    1. keep its middle part of at most MAX_ASPECT:1;
    2. resize that so its shorter side is resize_size (antialiased bilinear: PIL's BILINEAR filter, in float);
    3. keep the central image_size x image_size square.

Everything here compiles with torch.jit.script and needs no torch.
"""

from __future__ import annotations

from typing import List, Tuple

# A photo more elongated than MAX_ASPECT:1 keeps only its middle MAX_ASPECT:1 part before it is resized. The centre
# crop after resizing keeps only the middle image_size/resize_size (224/256) of the shorter side's length along the
# long side, so it sees the same pixels; without this, a 1 x 20,000 photo resized to 256 px would become 256 x 5,120,000
# floats (15.7 GB). Panoramas are about 4:1: every ordinary photo keeps exactly the same resize, and a resized photo
# has at most 256 x 2,048 pixels (6 MB as float32).
MAX_ASPECT = 8


def _cut(length: int, longest: int) -> Tuple[int, int]:
    """(start, length) of the middle `longest` pixels of a side, or of all of it when it is not longer."""
    if length > longest:
        return (length - longest) // 2, longest
    return 0, length


def crop_geometry(photo_height: int, photo_width: int, resize_size: int, image_size: int, max_aspect: int) -> List[int]:
    """The steps of the recipe for a photo_height x photo_width photo, in pixels:
    [cut_top, cut_left, cut_height, cut_width, resized_height, resized_width, crop_top, crop_left].

    The photo keeps its middle cut_height x cut_width rows and columns (at most max_aspect:1), is resized to
    resized_height x resized_width (shorter side resize_size), and the model sees the image_size x image_size square
    at (crop_top, crop_left) of that. Python's round() rounds halves to even (round(58.5) == 58): a port to another
    language must too, or the crop moves by one pixel.
    """
    longest = max_aspect * min(photo_height, photo_width)
    cut_top, height = _cut(photo_height, longest)
    cut_left, width = _cut(photo_width, longest)
    scale = resize_size / min(height, width)
    resized_height = max(int(round(height * scale)), image_size)
    resized_width = max(int(round(width * scale)), image_size)
    crop_top = int(round((resized_height - image_size) / 2.0))
    crop_left = int(round((resized_width - image_size) / 2.0))
    return [cut_top, cut_left, height, width, resized_height, resized_width, crop_top, crop_left]


def crop_box(photo_height: int, photo_width: int, resize_size: int, image_size: int, max_aspect: int) -> List[float]:
    """The part of the photo the model sees, [top, left, bottom, right] in photo pixels (pixel (i, j) covers
    [i, i + 1) x [j, j + 1)): the central crop of crop_geometry, mapped back through the resize (edges scale exactly
    under align_corners=False) and the cut."""
    cut_top, cut_left, height, width, resized_height, resized_width, top, left = crop_geometry(
        photo_height, photo_width, resize_size, image_size, max_aspect
    )
    row_step, column_step = height / resized_height, width / resized_width  # photo pixels per resized pixel
    return [cut_top + top * row_step, cut_left + left * column_step,
            cut_top + (top + image_size) * row_step, cut_left + (left + image_size) * column_step]  # fmt: skip
