"""Specification of the package's structure: layers in course order, and faces that load no training code.

data -> models -> training -> export -> faces: a module imports only from its own layer or the layers below it.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = [  # bottom to top
    ("checks", "files", "recipe", "paths", "crop", "progress"),  # what every layer uses: option checks, atomic writes,
    # the training settings, where models live, the crop recipe, progress bars
    ("images", "landmarks", "helpers", "unpack", "download", "presets", "synthetic", "fashion_mnist", "splits", "data",
     "augment", "gpu_data"),  # data
    ("model", "transfer", "visualize", "convolution", "saliency", "cam"),  # models, and pictures of data and models
    ("optimization", "checkpoints", "train", "train_cli", "experiments"),  # training
    ("exported", "calibration", "predictor", "predictor_cli", "results", "onnx_export", "onnx_runtime", "runtime"),  # export
    ("predict", "app", "app_card", "app_map", "report", "web"),  # faces
]
LAYER_OF = {module: level for level, modules in enumerate(LAYERS) for module in modules}


def src_imports(module: str) -> set[str]:
    """The src modules that src/<module>.py imports (at any depth in the file)."""
    tree = ast.parse((SRC / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("src."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "src":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("src."))
    return found


def test_every_module_has_a_layer():
    modules = {path.stem for path in SRC.glob("*.py")} - {"__init__"}
    assert modules == set(LAYER_OF), "add new modules to LAYERS"


@pytest.mark.parametrize("module", sorted(LAYER_OF))
def test_a_module_imports_nothing_from_a_layer_above_it(module):
    upward = {name for name in src_imports(module) if LAYER_OF[name] > LAYER_OF[module]}
    assert not upward, f"src/{module}.py imports from a higher layer: {sorted(upward)}"


@pytest.mark.parametrize("face", ["src.predict", "src.app", "src.app_card", "src.app_map"])
def test_the_faces_load_no_training_code(face):
    """The predict CLI and the app run an exported TorchScript file: torch is all they need."""
    heavy = ["timm", "src.train", "src.gpu_data", "src.transfer", "src.predictor", "matplotlib"]
    code = f"import sys, {face}; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=SRC.parent)
    assert loaded.stdout.strip() == ""
