"""An exported ONNX file (src/onnx_export.py writes them) in ONNX Runtime: a photo in, the same answer as its
TorchScript twin out, without torch (a cold `python -m src.predict` starts in a fraction of torch's import time).

    model = OnnxPredictor("checkpoints/transfer_exported.onnx")
    probabilities, score, heatmap = model.run(photo, explain=True)   # photo: PIL RGB

The graph starts at the central crop; preprocess() makes it with src/crop.py's recipe, as the TorchScript file does
inside itself: cut to at most max_aspect:1, resize the shorter side to resize_size with PIL's antialiased BILINEAR
filter in float (torch's F.interpolate(..., antialias=True) is the same filter: they agree to 3e-5 on 0-1 pixels),
central image_size crop, / 255. web/app.js ports the same three steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from src.crop import crop_box, crop_geometry

FORMAT = "landmark-classifier/1"  # metadata "format" of the files this module reads (src/onnx_export.py writes it)


def preprocess(image: Image.Image, image_size: int, resize_size: int, max_aspect: int) -> np.ndarray:
    """PIL RGB photo -> its central crop float32 [3, image_size, image_size] in [0, 1] (src/crop.py's recipe)."""
    cut_top, cut_left, height, width, new_height, new_width, top, left = crop_geometry(
        image.height, image.width, resize_size, image_size, max_aspect
    )
    cut = image.crop((cut_left, cut_top, cut_left + width, cut_top + height))
    channels = [  # float ("F") images: no rounding to 8 bits between the horizontal and the vertical pass
        np.asarray(channel.convert("F").resize((new_width, new_height), Image.BILINEAR))[
            top : top + image_size, left : left + image_size
        ]
        for channel in cut.split()
    ]
    return np.stack(channels) / np.float32(255.0)


def _interpolation_weights(pixels: int, start: float, end: float, cells: int) -> np.ndarray:
    """[pixels, cells]: the bilinear weights of each photo row (or column) on `cells` map cells tiling [start, end)
    (align_corners=False: an edge cell's value holds out to the edge); 0 for rows whose centre is outside it.
    src.cam._interpolation_weights in NumPy: the TorchScript file computes the same inside itself."""
    centres = np.arange(pixels, dtype=np.float32) + 0.5
    position = np.clip((centres - start) * (cells / (end - start)) - 0.5, 0.0, cells - 1)
    weights = np.clip(1.0 - np.abs(position[:, None] - np.arange(cells, dtype=np.float32)[None, :]), 0.0, None)
    return weights * ((centres >= start) & (centres < end))[:, None]


def cam_to_photo(cam: np.ndarray, photo_height: int, photo_width: int, resize_size: int, image_size: int,
                 max_aspect: int) -> np.ndarray:  # fmt: skip
    """A map [h, w] of the central crop -> float32 [photo_height, photo_width] on the photo, 0 outside the crop
    (src.cam.to_photo's arithmetic)."""
    top, left, bottom, right = crop_box(photo_height, photo_width, resize_size, image_size, max_aspect)
    rows = _interpolation_weights(photo_height, top, bottom, cam.shape[0])
    columns = _interpolation_weights(photo_width, left, right, cam.shape[1])
    return (rows @ cam.astype(np.float32) @ columns.T).astype(np.float32)


class OnnxPredictor:
    """An exported ONNX file, checked and warmed up: class_names, class_places, threshold, can_explain, and run()."""

    runtime = "ONNX Runtime"

    def __init__(self, path: str | Path, session) -> None:
        """path: the .onnx file; session: an onnxruntime.InferenceSession of it (open_session). Raises KeyError or
        ValueError for a file without this project's metadata (src.runtime.load_model turns it into one line)."""
        self.path = Path(path)
        meta = session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise ValueError(f"its format is {meta.get('format')!r}")
        self.session = session
        self.classes = json.loads(meta["classes"])  # [{"name", "place", "country", "latitude", "longitude"}]
        self.class_names = [row["name"] for row in self.classes]
        self.class_places = [row["place"] for row in self.classes]
        self.image_size, self.resize_size = int(meta["image_size"]), int(meta["resize_size"])
        self.max_aspect = int(meta["max_aspect"])
        self.threshold = float(meta["threshold"])  # "-inf": every photo is known
        self.can_explain = meta.get("has_cam") == "1"
        self.outputs = [output.name for output in session.get_outputs()]

    def run(self, image: Image.Image, explain: bool = False) -> tuple[np.ndarray, float, np.ndarray | None]:
        """PIL RGB photo -> (calibrated probabilities float32 [classes], score (below `threshold`: none of the known
        classes), heatmap float32 [H, W] in [0, 1] at the photo's size, or None without explain or a CAM output)."""
        crop = preprocess(image, self.image_size, self.resize_size, self.max_aspect)[None]
        explain = explain and self.can_explain
        found = self.session.run(self.outputs if explain else self.outputs[:2], {"crop": crop})
        heatmap = None
        if explain:
            heatmap = cam_to_photo(found[2][0], image.height, image.width, self.resize_size, self.image_size,
                                   self.max_aspect)  # fmt: skip
        return found[0][0], float(found[1][0]), heatmap


def open_session(data: bytes):
    """An onnxruntime.InferenceSession of the file's bytes on the CPU; ImportError when onnxruntime is missing."""
    import onnxruntime  # here: importing this module must not need it (the app and the CLI fall back to TorchScript)

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are about graph optimizations a user cannot change
    # Its threads must not busy-wait for work after each run, for the reason torch's must not (src/__init__.py): on
    # 2 cores, anything else running at the same time (the app's server, a second model) would lose its core.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
