"""The exported predictor as an ONNX file, beside its TorchScript file: for ONNX Runtime on a CPU (src/onnx_runtime.py)
and in a browser (web/).

    write_onnx(predictor, "checkpoints/transfer_exported.onnx")   # predictor: a src.predictor.Predictor

The graph holds the network, the normalization, the calibrated softmax, the "unknown" score and, for an
ExplainingPredictor, the class activation map:

    crop          float32 [B, 3, S, S], RGB in [0, 1]: a photo's central crop, by src/crop.py's recipe
    probabilities float32 [B, classes], calibrated (softmax(logits / temperature))
    scores        float32 [B]: below metadata "threshold", none of the known classes
    cam           float32 [B, h, w] in [0, 1] (only with metadata has_cam = "1"): where the model looked for its top
                  class; cell (i, j) covers rows [i, i + 1) * S / h and columns [j, j + 1) * S / w of the crop

The resize lives outside the graph: ONNX cannot export the photo-size arithmetic of the recipe as a graph that stays
right for every size (torch.export specializes it to the example photo's shape), and a browser would have to send a
whole photo through it. src/crop.py and src/onnx_runtime.py's preprocess are the recipe, tested against the TorchScript
file's own. Everything else a caller needs is in the file's metadata_props (strings; lists as JSON): see metadata().
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from src.calibration import calibrated
from src.checks import error_line
from src.files import write_atomically
from src.landmarks import landmark_info
from src.onnx_runtime import FORMAT



class OnnxGraph(nn.Module):
    """A Predictor's network part: crop [B,3,S,S] in [0, 1] -> (probabilities, scores) or (probabilities, scores, cam),
    exactly as the predictor's classify/explain compute them after their resize and crop."""

    def __init__(self, predictor: nn.Module) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, crop: torch.Tensor) -> tuple[torch.Tensor, ...]:
        predictor = self.predictor
        normalized = (crop - predictor.mean) / predictor.std
        if hasattr(predictor, "cam"):
            logits, maps = predictor.cam.crop_maps(normalized)
            return (*calibrated(logits, predictor.temperature, predictor.score_kind), maps)
        return calibrated(predictor.logits(normalized), predictor.temperature, predictor.score_kind)


def metadata(predictor: nn.Module) -> dict[str, str]:
    """The file's metadata_props: what its graph does not say. Numbers as text, lists as JSON; threshold "-inf" when
    every photo counts as known."""
    rows = [landmark_info(name) or {} for name in predictor.class_names]
    classes = [
        {"name": name, "place": place, "country": row.get("country", ""),
         "latitude": float(row["latitude"]) if row else None, "longitude": float(row["longitude"]) if row else None}
        for name, place, row in zip(predictor.class_names, predictor.class_places, rows)
    ]  # fmt: skip
    return {
        "format": FORMAT,
        "classes": json.dumps(classes, ensure_ascii=False),
        "image_size": str(predictor.image_size), "resize_size": str(predictor.resize_size),
        "max_aspect": str(predictor.max_aspect),
        "threshold": repr(predictor.threshold) if math.isfinite(predictor.threshold) else "-inf",
        "score_kind": predictor.score_kind, "temperature": repr(predictor.temperature),
        "mean": json.dumps(predictor.mean.flatten().tolist()), "std": json.dumps(predictor.std.flatten().tolist()),
        "has_cam": "1" if hasattr(predictor, "cam") else "0",
    }  # fmt: skip


def onnx_bytes(predictor: nn.Module) -> bytes:
    """The serialized ONNX model of an eval-mode Predictor on the CPU (torch.onnx.export with dynamo, any batch size,
    weights inside the file). Raises ValueError (one line: why_not_exported) for a model the exporter cannot export."""
    graph = OnnxGraph(predictor).eval()
    example = torch.rand(2, 3, predictor.image_size, predictor.image_size)  # batch 2: a batch of 1 would be fixed
    outputs = ["probabilities", "scores"] + (["cam"] if hasattr(predictor, "cam") else [])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and "training mode" chatter, none of it ours
        try:
            program = torch.onnx.export(
                graph, (example,), dynamo=True, external_data=False, verbose=False, input_names=["crop"],
                output_names=outputs, dynamic_shapes={"crop": {0: torch.export.Dim("batch", min=1, max=1024)}},
            )  # fmt: skip
        except Exception as err:  # noqa: BLE001 - the exporter raises many kinds; all mean the same to a caller
            raise ValueError(f"the model cannot be exported to ONNX: {why_not_exported(err)}") from err
    model = program.model_proto
    for key, value in metadata(predictor).items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


def why_not_exported(err: BaseException) -> str:
    """One line for an exporter failure: the operator ONNX lacks when that is the cause (the exporter's own message is
    a page of advice for PyTorch developers), else the innermost error's first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # the exporter colours its messages
    missing = re.search(r"No ONNX function found for <OpOverload\(op='([\w.]+)'", text)
    if missing:
        return f"ONNX has no operator for {missing.group(1)}, which the model uses"
    while err.__cause__ is not None:
        err = err.__cause__
    return error_line(err)


def write_onnx(predictor: nn.Module, path: str | Path) -> Path:
    """Export an eval-mode Predictor (on the CPU) to the ONNX file `path`, atomically (src.files.write_atomically:
    a failed write leaves no file and raises a one-line WriteError)."""
    return write_atomically(path, onnx_bytes(predictor))
