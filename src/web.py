"""The app as a static web page: the model runs in the visitor's browser (ONNX Runtime Web), with no Python behind it.

    python -m src.web build [--out build/web]    # the page, its two libraries and the app's ONNX models, in one folder
    python -m src.web serve [--port 8000]        # that folder on http://127.0.0.1:8000

web/ holds the page (index.html, app.js, recipe.js, style.css) and package.json + package-lock.json, which pin onnxruntime-web and
Leaflet. `build` runs `npm ci` there when web/node_modules is missing or was installed from another lock file, then
copies the page, the few files of those packages it loads, the app's exported .onnx files (src.paths: the transfer model
first) and models.json: each model's label, file and metadata_props. ONNX Runtime Web gives a page no access to a
file's metadata_props, so they are read here, with ONNX Runtime, which also checks that each file loads. The folder is
built beside its target and renamed into place: a failed build leaves no folder, or the previous one as it was.

`serve` sends the headers that make the page cross-origin isolated, so that ONNX Runtime Web may use threads; any other
static host serves the same folder, with one thread. Every failure is one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from src.checks import OneLineParser, int_at_least
from src.paths import PROJECT_ROOT, onnx_beside
from src.runtime import APP_MODELS, load_model

WEB_DIR = PROJECT_ROOT / "web"
DEFAULT_OUT = PROJECT_ROOT / "build" / "web"
PAGE = ["index.html", "app.js", "recipe.js", "style.css"]
# What the page loads of each package: ONNX Runtime Web's wasm-only build (the .mjs loads the other two; 15 MB of
# wasm instead of the 90 MB dist folder; its licence is in its first lines) and Leaflet's script, stylesheet, images
# and licence.
PACKAGE_FILES = {
    "ort": ("onnxruntime-web", ["dist/ort.wasm.min.mjs", "dist/ort-wasm-simd-threaded.mjs",
                                "dist/ort-wasm-simd-threaded.wasm"]),
    "leaflet": ("leaflet", ["dist/leaflet.js", "dist/leaflet.css", "LICENSE"] + [
        f"dist/images/{name}.png" for name in ("layers", "layers-2x", "marker-icon", "marker-icon-2x", "marker-shadow")
    ]),
}  # fmt: skip
LOCK_STAMP = ".landmark-lock-sha256"  # in node_modules: the hash of the package-lock.json `npm ci` installed
HOW_TO_EXPORT = "run the notebooks or `make run` first: they export the app's models"


class BuildError(RuntimeError):
    """The page cannot be built or served; the message is one line saying why and what to do."""


def app_models() -> dict[str, Path]:
    """The app's models (src.runtime.APP_MODELS) that have an ONNX file, label -> file, the transfer model first (the
    page's default)."""
    choices = {label: onnx_beside(path) for label, path in APP_MODELS.items()}
    return {label: path for label, path in choices.items() if path.is_file()}


def lock_hash(web_dir: Path) -> str:
    try:
        return hashlib.sha256((web_dir / "package-lock.json").read_bytes()).hexdigest()
    except OSError as err:
        raise BuildError(f"{web_dir / 'package-lock.json'}: cannot read it ({err.strerror or err})") from None


def node_major(node: str | None) -> int:
    """The major version of the Node.js at `node`; 0 when there is none or it does not run."""
    try:
        text = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=60).stdout if node else ""
    except (OSError, subprocess.TimeoutExpired):
        return 0
    major = text.strip().lstrip("v").split(".")[0]
    return int(major) if major.isdigit() else 0


def install_packages(web_dir: Path) -> Path:
    """web_dir/node_modules as package-lock.json pins it: `npm ci` when it is missing or from another lock file."""
    modules, wanted = web_dir / "node_modules", lock_hash(web_dir)
    stamp = modules / LOCK_STAMP
    if stamp.is_file() and stamp.read_text().strip() == wanted:
        return modules
    npm, node = shutil.which("npm"), node_major(shutil.which("node"))
    if not npm or node < 18:  # older npm cannot read package-lock.json's version 3
        found = f" (this Node.js is version {node})" if node else ""
        raise BuildError(f"npm and Node.js are needed to fetch the page's libraries{found}: install Node 18+ and npm "
                         "(apt-get install nodejs npm)")  # fmt: skip
    # --ignore-scripts: none of the pinned packages needs its install script to be copied (protobufjs's only checks
    # its version)
    done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                          cwd=web_dir, capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise BuildError(f"npm ci failed in {web_dir} (exit status {done.returncode}): {lines[-1] if lines else ''}")
    stamp.write_text(wanted + "\n")
    return modules


def model_metadata(path: Path) -> dict[str, str]:
    """The file's metadata_props, once src.runtime.load_model has checked it: an exported predictor that ONNX Runtime
    loads and that answers a blank photo, as the app and the CLI check theirs."""
    try:
        return dict(load_model(path).session.get_modelmeta().custom_metadata_map)
    except ValueError as err:  # one line naming the file and how to export a good one
        raise BuildError(str(err)) from None


def write_site(folder: Path, models: dict[str, Path], web_dir: Path, modules: Path) -> None:
    """Everything the page needs, in `folder`: the page, its libraries, the models and models.json."""
    for name in PAGE:
        shutil.copy2(web_dir / name, folder / name)
    for target, (package, files) in PACKAGE_FILES.items():
        for file in files:
            source = modules / package / file
            if not source.is_file():
                raise BuildError(f"{source}: missing from the installed {package}: delete {modules} and build again")
            destination = folder / target / file.removeprefix("dist/")  # leaflet.css loads images/*.png
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    (folder / "models").mkdir()
    manifest = []
    for label, path in models.items():
        metadata, file = model_metadata(path), f"models/{path.name}"
        shutil.copy2(path, folder / file)
        manifest.append({"label": label, "file": file, "bytes": path.stat().st_size, "metadata": metadata})
    (folder / "models.json").write_text(json.dumps({"models": manifest}, indent=1, ensure_ascii=False) + "\n")


def build_site(out: Path = DEFAULT_OUT, models: dict[str, Path] | None = None, web_dir: Path = WEB_DIR) -> Path:
    """Build the page into `out` (replacing what is there) from web_dir and `models` (label -> .onnx file; default:
    app_models()). Raises BuildError (one line); a failed build leaves `out` as it was."""
    models = app_models() if models is None else models
    if not models:
        files = ", ".join(str(onnx_beside(path)) for path in APP_MODELS.values())
        raise BuildError(f"no exported ONNX model ({files}): {HOW_TO_EXPORT}")
    modules = install_packages(web_dir)
    out = Path(out).absolute()
    building = out.with_name(f".{out.name}.building-{os.getpid()}")  # beside it: the renames stay on one disk
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    try:
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        write_site(building, models, web_dir, modules)
        if out.exists():
            out.rename(old)
        try:
            building.rename(out)
        except OSError:
            if old.exists():
                old.rename(out)
            raise
    except OSError as err:
        raise BuildError(f"cannot write {out}: {err.strerror or err} ({getattr(err, 'filename', '')})") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out


class StaticHandler(SimpleHTTPRequestHandler):
    """Static files, with the types browsers insist on for modules and wasm: what any static host does."""

    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript", ".mjs": "text/javascript",
        ".wasm": "application/wasm", ".json": "application/json", ".onnx": "application/octet-stream",
    }  # fmt: skip

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")  # a rebuilt page is never mixed with an old model
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # one line per file is noise: the page says what went wrong


class IsolatedHandler(StaticHandler):
    """StaticHandler, with the headers that make the page cross-origin isolated: ONNX Runtime Web may then share
    memory between threads. "credentialless" (not "require-corp") still lets the map show OpenStreetMap's tiles,
    which carry no Cross-Origin-Resource-Policy header."""

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "credentialless")
        super().end_headers()


def make_server(folder: Path, port: int, isolated: bool = True) -> ThreadingHTTPServer:
    """A server for the built page in `folder` on 127.0.0.1:port (0: any free port), cross-origin isolated or as a
    plain static host; BuildError when it cannot."""
    if not (Path(folder) / "index.html").is_file():
        raise BuildError(f"{folder} has no built page: run `make web-build` (python -m src.web build) first")
    handler = functools.partial(IsolatedHandler if isolated else StaticHandler, directory=str(folder))
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as err:
        raise BuildError(f"cannot serve on 127.0.0.1:{port} ({err.strerror or err}): pass another --port") from None


def parse_args(argv: list[str] | None):
    parser = OneLineParser(description="The landmark app as a static web page that runs the model in the browser.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the page into a folder")
    build.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT.relative_to(PROJECT_ROOT)}")
    serve = commands.add_parser("serve", help="serve the built page on 127.0.0.1")
    serve.add_argument("--port", type=int_at_least(0, 65535), default=8000, help="default 8000")
    serve.add_argument("--dir", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT.relative_to(PROJECT_ROOT)}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "build":
            out = build_site(args.out)
            where = "" if out == DEFAULT_OUT else f" --dir {out}"
            print(f"built {out}: `python -m src.web serve{where}` shows it on http://127.0.0.1:8000")
            return 0
        server = make_server(args.dir, args.port)
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"serving {args.dir} on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
