"""The report a reviewer grades: run the notebooks in course order, then write one self-contained page.

    python -m src.report                      # what `make report` runs: reports/report.html and one page per notebook
    python -m src.report --output-dir DIR NOTEBOOK ...

Each notebook runs top to bottom in a fresh kernel, with a progress bar over its cells (cells done, elapsed time, the
cell running now). The run's settings come from the environment the notebooks read (LANDMARK_QUICK, LANDMARK_DATASET,
LANDMARK_EPOCHS, ...). report.html starts with a summary, each course rubric item with the figure that meets it,
PASS or FAIL and a link to where it is shown; the figures are the ones the notebooks' results cells measured
(src/results.py). Then comes a table of contents and the three executed notebooks, plots embedded.
"""

from __future__ import annotations

import html
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from nbconvert import HTMLExporter
from tqdm import tqdm
from traitlets.config import Config

from src.checks import OneLineParser
from src.files import WriteError, check_writable, write_atomically
from src.results import RESULTS_MIME, TARGETS, verdict
from src.visualize import format_table

PROJECT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("cnn_from_scratch.ipynb", "transfer_learning.ipynb", "app.ipynb")  # course order: the app uses both exports
REPORT = "report.html"
CELL_TIMEOUT = None  # seconds a cell may run; None: no limit (a full training cell runs for hours on a CPU)


def first_line(cell: nbformat.NotebookNode) -> str:
    """What a progress bar and an error line show of a cell: its first non-empty line, shortened."""
    line = next((line.strip() for line in cell.source.splitlines() if line.strip()), "(empty cell)")
    return line if len(line) <= 60 else line[:57] + "..."


def run_notebook(
    path: Path, env: dict[str, str] | None = None, timeout: int | None = CELL_TIMEOUT
) -> tuple[nbformat.NotebookNode, str | None, float]:
    """Execute a notebook in a fresh kernel (cwd: the project; env: its environment, default this process's), with a
    progress bar on stderr. Returns (the executed notebook, None or one line saying which cell failed and why, seconds).
    """
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as sockets:
        # The kernel talks to us over local sockets (IPC) rather than TCP: no "running over TCP without encryption"
        # warning in the terminal, and no port another user could connect to.
        config = Config({"KernelManager": {"transport": "ipc", "ip": f"{sockets}/kernel"}})
        # coalesce_streams: a progress bar's updates (text joined by \r, src/progress.py) are saved as its last line
        client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", config=config, coalesce_streams=True,
                                resources={"metadata": {"path": str(PROJECT)}})  # fmt: skip
        return _execute(client, notebook, path, env)


def _execute(client: NotebookClient, notebook: nbformat.NotebookNode, path: Path, env: dict[str, str] | None):
    """run_notebook's work: the client runs every cell while a bar shows which one."""
    bar = tqdm(total=len(notebook.cells), desc=path.stem, unit="cell", file=sys.stderr, dynamic_ncols=True)

    def on_cell_start(cell, cell_index: int) -> None:
        bar.n = cell_index
        bar.set_postfix_str(first_line(cell), refresh=True)

    client.on_cell_start = on_cell_start
    start, error = time.perf_counter(), None
    try:
        # the kernel's own stderr is its log, not the notebook's (that is in the cells' outputs): stopped by Ctrl-C, it
        # logs a ZMQError traceback a reader cannot act on
        client.execute(stderr=subprocess.DEVNULL, **({} if env is None else {"env": env}))
        bar.n = len(notebook.cells)
    except CellExecutionError as err:
        index = bar.n
        reason = (err.ename + ": " + err.evalue) if err.ename else str(err).strip().splitlines()[-1]
        error = f"{path.name} stopped in cell {index + 1} ({first_line(notebook.cells[index])}): {reason}"
    except Exception as err:  # noqa: BLE001 - only a stopped kernel is handled here
        if not _kernel_stopped(err):
            raise
        error = (f"{path.name} stopped in cell {bar.n + 1} ({first_line(notebook.cells[bar.n])}): its kernel stopped "
                 f"(Ctrl-C, out of memory, or killed); the files it saved before are intact")  # fmt: skip
    finally:
        bar.set_postfix_str("done" if error is None else "failed", refresh=False)
        bar.close()
    return notebook, error, time.perf_counter() - start


def _kernel_stopped(err: BaseException | None) -> bool:
    """Whether err is nbclient's DeadKernelError, or was raised while handling one. Ctrl-C makes nbclient shut its
    kernel down (its own SIGINT handler): the running cell then ends in DeadKernelError, and nbclient's clean-up after
    it in an AssertionError (nbclient 0.11)."""
    while err is not None and not isinstance(err, DeadKernelError):
        err = err.__context__
    return err is not None


def records(notebook: nbformat.NotebookNode) -> list[dict]:
    """The results records (src/results.py, src/app.py) that the notebook's cells displayed, in order."""
    return [output["data"][RESULTS_MIME] for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.get("outputs", []) if RESULTS_MIME in output.get("data", {})]  # fmt: skip


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def rubric(found: list[dict]) -> list[tuple[str, str, bool, str]]:
    """(rubric item, the figure that meets it, passed, link) for each course rubric item, from the records."""
    by_kind = {record["kind"]: record for record in found}
    models = [by_kind.get(kind) for kind in TARGETS]
    names = {"scratch": "from scratch", "transfer": "transfer"}
    missing = [names[kind] for kind, record in zip(TARGETS, models) if record is None]
    rows = []
    for kind, record in zip(TARGETS, models):
        item = f"{'CNN from scratch' if kind == 'scratch' else 'Transfer learning'}: test accuracy at least " \
               f"{percent(TARGETS[kind])}"  # fmt: skip
        if record is None:
            rows.append((item, "not measured: its notebook did not reach its results cell", False, ""))
        else:
            figure = f"{percent(record['test_accuracy'])} ({record['n_test']} test images)"
            rows.append((item, figure, record["passed"], f"#results-{kind}"))
    trained = [record for record in models if record is not None]

    def both(describe, passed) -> tuple[str, bool]:
        parts = [f"{names[record['kind']]}: {describe(record)}" for record in trained]
        text = "; ".join(parts + [f"{name}: not measured" for name in missing])
        return text, bool(trained) and not missing and all(passed(record) for record in trained)

    rows.append(("A learning-rate scheduler", *both(
        lambda r: f"{r['scheduler']} (lr from {r['lr'][0]:.1e} to {r['lr'][1]:.1e})", lambda r: bool(r["scheduler"])
    ), "#results-scratch"))  # fmt: skip
    rows.append(("A checkpoint at the validation minimum", *both(
        lambda r: f"epoch {r['checkpoint_epoch']} of {r['epochs']}, validation loss {r['best_valid_loss']:.3f}"
        if r["checkpoint_epoch"] else "none saved",
        lambda r: r["checkpoint_epoch"] is not None,
    ), "#results-scratch"))  # fmt: skip
    rows.append(("Both models exported", *both(
        lambda r: f"{Path(r['exported']).name} scores {percent(r['exported_accuracy'])} "
                  f"(the model {percent(r['test_accuracy'])})",
        lambda r: r["export_agrees"],
    ), "#results-transfer"))  # fmt: skip
    app = by_kind.get("app")
    if app is None:
        rows.append(("An app that shows the photo and its top predictions", "not shown: app.ipynb did not reach its "
                     "gallery cell", False, ""))  # fmt: skip
    else:
        figure = f"{app['photos']} held-out test photos, each with the top {app['top_k']} of " \
                 f"{len(app['models'])} model(s): {', '.join(app['models']) or 'none exported'}"  # fmt: skip
        rows.append(("An app that shows the photo and its top predictions", figure,
                     app["photos"] > 0 and bool(app["models"]), "#results-app"))  # fmt: skip
    return rows


def summary_html(runs: dict[str, tuple[nbformat.NotebookNode, str | None, float]], quick: bool) -> str:
    """The report's first section: the rubric table, then the run (dataset, device, time of each model and notebook)."""
    found = [record for notebook, _, _ in runs.values() for record in records(notebook)]
    rows = "".join(
        f"<tr><td style='text-align:left'>{html.escape(item)}</td><td style='text-align:left'>{html.escape(figure)}"
        f"</td><td><b style='color:{'#1a7f37' if passed else '#b00020'}'>{verdict(passed)}</b></td>"
        f"<td>{f'<a href={link!r}>see</a>' if link else ''}</td></tr>"
        for item, figure, passed, link in rubric(found)
    )
    trained = [record for record in found if record["kind"] in TARGETS]
    run_rows = "".join(
        f"<li>{html.escape(record['name'])}: trained {record['epochs']} epoch(s) in {record['train_seconds']:,.0f} s "
        f"on {html.escape(record['device'])}, dataset {html.escape(record['dataset'])}</li>" for record in trained
    ) + "".join(
        f"<li>{html.escape(name)}: ran in {seconds:,.0f} s" + (f" and <b>stopped</b>: {html.escape(error)}" if error
        else "") + "</li>" for name, (_, error, seconds) in runs.items()
    )  # fmt: skip
    note = ("<p><b>Quick mode</b> (LANDMARK_QUICK=1): a smoke run on a few images for 2 epochs. It checks that every "
            "cell works; its accuracies mean nothing, so the targets fail. Grade a full run.</p>") if quick else ""  # fmt: skip
    return (
        "<h1 id='summary'>Landmark classifier: report</h1>" + note +
        "<table><tr><th>course rubric item</th><th>measured</th><th>result</th><th>where</th></tr>" + rows +
        "</table><h3>The run</h3><ul>" + run_rows + "</ul>"
    )  # fmt: skip


def run_table(runs: dict[str, tuple[nbformat.NotebookNode, str | None, float]]) -> str:
    """What the terminal shows at the end: each notebook's time, and each exported model's test accuracy."""
    rows = []
    for name, (notebook, error, seconds) in runs.items():
        trained = [record for record in records(notebook) if record["kind"] in TARGETS]
        accuracy = "; ".join(f"{record['name']}: {percent(record['exported_accuracy'])} (target "
                             f"{percent(record['target'])}: {verdict(record['passed'])})" for record in trained)  # fmt: skip
        rows.append({"notebook": name, "time": f"{seconds / 60:.1f} min",
                     "exported model's test accuracy": accuracy or ("stopped" if error else "-")})  # fmt: skip
    return format_table(rows)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


HEADING = re.compile(r"^(#{1,2}) (.+)$", re.MULTILINE)  # the headings the contents list: # and ##


def anchored(heading: re.Match, prefix: str, contents: list[str]) -> str:
    """The heading with an anchor in it; its entry in the table of contents is appended to `contents`."""
    level, title = heading.groups()
    anchor = f"{slug(prefix)}-{slug(title)}"
    contents.append(f"{'&emsp;' * (len(level) - 1)}<a href='#{anchor}'>{html.escape(title)}</a><br>")
    return f"{level} <a id='{anchor}'></a>{title}"


def combined(runs: dict[str, tuple[nbformat.NotebookNode, str | None, float]], summary: str) -> nbformat.NotebookNode:
    """One notebook: the summary, a table of contents (the notebooks' # and ## headings), then every notebook's cells,
    each heading given the anchor its contents entry links to."""
    cells, contents = [], []
    for name, (notebook, _, _) in runs.items():
        for cell in notebook.cells:
            cell = nbformat.from_dict(cell)
            if cell.cell_type == "markdown":
                cell.source = HEADING.sub(lambda match: anchored(match, Path(name).stem, contents), cell.source)
            cells.append(cell)
    head = nbformat.v4.new_markdown_cell(summary + "<h2>Contents</h2>" + "".join(contents))
    report = nbformat.v4.new_notebook(cells=[head, *cells])
    first = next(iter(runs.values()))[0]
    report.metadata = first.metadata
    return report


QUIET = logging.getLogger("src.report.html")
# nbconvert warns "Alternative text is missing on N image(s)" for every matplotlib figure (it adds a generic alt text
# itself): a warning no reader of the report can act on.
QUIET.setLevel(logging.ERROR)


def write_html(notebook: nbformat.NotebookNode, path: Path) -> None:
    """The notebook as one self-contained HTML page (plots embedded), written atomically."""
    page, _ = HTMLExporter(template_name="lab", log=QUIET).from_notebook_node(notebook)
    write_atomically(path, page.encode())


def run_all(notebooks: list[Path], output_dir: Path) -> dict:
    """Run the notebooks in order, each one's page written when it ends, until one fails; then the report. Returns
    run_notebook's (notebook, error, seconds) by name."""
    runs = {}
    for path in notebooks:
        runs[path.name] = run_notebook(path)
        write_html(runs[path.name][0], output_dir / path.with_suffix(".html").name)
        if runs[path.name][1]:
            break  # the next notebooks need this one's models
    quick = os.environ.get("LANDMARK_QUICK") == "1"
    write_html(combined(runs, summary_html(runs, quick)), output_dir / REPORT)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description="Run the notebooks in order and write the report a reviewer grades.")
    parser.add_argument("notebooks", nargs="*", type=Path, default=[PROJECT / name for name in NOTEBOOKS])
    parser.add_argument("--output-dir", type=Path, default=PROJECT / "reports")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        if not path.is_file():
            parser.error(f"{path}: no such notebook")
    epochs = os.environ.get("LANDMARK_EPOCHS", "")
    if epochs and not (epochs.isdigit() and int(epochs) >= 1):  # checked now, not in the first notebook's settings
        parser.error(f"EPOCHS (LANDMARK_EPOCHS) must be a whole number of at least 1, got {epochs!r}")
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        check_writable(args.output_dir)
    except (OSError, WriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        runs = run_all(args.notebooks, args.output_dir)
    except KeyboardInterrupt:  # Ctrl-C between notebooks (during one, it stops that notebook's kernel: run_notebook)
        print("\ninterrupted: the files written so far are intact (written atomically); run again", file=sys.stderr)
        return 130
    print(run_table(runs))
    print(f"Report: {args.output_dir / REPORT}")
    errors = [error for _, error, _ in runs.values() if error]
    for error in errors:
        print(f"error: {error} (its page shows the cell)", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
