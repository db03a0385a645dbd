"""The course notebooks: committed without outputs, and each one runs top to bottom without errors or warnings.

The three notebooks run in course order, headless, in quick mode (LANDMARK_QUICK=1: a few images, 2 epochs, one
fine-tuning epoch) on a small synthetic dataset, sharing one temporary checkpoints folder, so the app notebook finds
the models the other two export. Under a minute per notebook on a 2-core laptop.
"""

import ast
import os
import re
from pathlib import Path

import nbformat
import pytest

from src.report import combined, records, rubric, run_notebook, summary_html, write_html
from src.synthetic import make_synthetic_dataset

PROJECT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["cnn_from_scratch.ipynb", "transfer_learning.ipynb", "app.ipynb"]  # course order: the app uses both exports
CELL_TIMEOUT = 600  # seconds per cell
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# A tqdm progress bar drawn as text (where it cannot draw a widget) always shows its elapsed time: "... [00:03<00:05, ...]"
PROGRESS_BAR = re.compile(r"\[\d+:\d+(:\d+)?[<,\]]")
CLEAR = ".venv/bin/jupyter nbconvert --clear-output --inplace"


def test_notebooks_are_committed_without_outputs():
    """Outputs make diffs unreadable and commit one run's results (and images) into the history: clear them first."""
    notebooks = sorted(PROJECT.glob("*.ipynb"))
    assert notebooks, f"no notebooks in {PROJECT}"
    dirty = []
    for path in notebooks:
        code_cells = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
        if any(cell.outputs or cell.execution_count is not None for cell in code_cells):
            dirty.append(path.name)
    assert not dirty, f"notebooks with outputs or execution counts: clear them with `{CLEAR} {' '.join(dirty)}`"


@pytest.fixture(scope="session")
def executed(tmp_path_factory) -> dict[str, tuple[nbformat.NotebookNode | None, str | None, float]]:
    """Every notebook of NOTEBOOKS executed in order: name -> (executed notebook or None, error or None, seconds)."""
    work = tmp_path_factory.mktemp("notebooks")
    data = make_synthetic_dataset(work / "data", n_classes=4, n_train=16, n_test=4)
    # The kernel is a new process with this environment; cwd is the project, as in Jupyter.
    env = {
        **os.environ,
        "LANDMARK_QUICK": "1",
        "LANDMARK_DATA": str(data),
        "LANDMARK_CHECKPOINTS": str(work / "checkpoints"),
    }
    env.pop("LANDMARK_DATASET", None)
    results = {}
    for name in NOTEBOOKS:
        if not (PROJECT / name).is_file():
            results[name] = None, f"{name} is missing from {PROJECT}", 0.0
            continue
        results[name] = run_notebook(PROJECT / name, env=env, timeout=CELL_TIMEOUT)
    return results


def outputs(notebook: nbformat.NotebookNode):
    """(cell number, output) for every output of every code cell."""
    for number, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            yield number, output


def run_of(executed, name: str) -> nbformat.NotebookNode:
    notebook, error, seconds = executed[name]
    if error is not None:
        pytest.fail(f"{name} did not run to the end ({seconds:.0f} s):\n{error}", pytrace=False)
    return notebook


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom_in_quick_mode(executed, name):
    notebook = run_of(executed, name)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells and all(cell.execution_count is not None for cell in code_cells)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_prints_no_warnings(executed, name):
    """Nothing on stderr but progress bars: a warning in a course notebook teaches students to ignore warnings."""
    notebook = run_of(executed, name)
    stderr = [
        f"cell {number}: {output.text.strip()}"
        for number, output in outputs(notebook)
        if output.output_type == "stream" and output.name == "stderr"
        and not all(PROGRESS_BAR.search(line) for line in re.split(r"[\r\n]+", output.text) if line.strip())
    ]  # fmt: skip
    assert not stderr, f"{name} wrote to stderr:\n" + "\n".join(stderr)


@pytest.mark.parametrize("name", ["cnn_from_scratch.ipynb", "transfer_learning.ipynb"])
def test_a_saved_training_notebook_holds_no_widget_and_each_progress_bar_as_its_last_line(executed, name):
    """Reopened, a widget output whose state was not saved reads "Error displaying widget: model not found" (JupyterLab
    saves no widget state by default; nbclient's copy keeps it in its metadata, which hides the problem here)."""
    notebook = run_of(executed, name)
    assert [number for number, output in outputs(notebook) if WIDGET_VIEW in output.get("data", {})] == []
    bars = [output.text for _, output in outputs(notebook) if output.output_type == "stream" and PROGRESS_BAR.search(output.text)]
    assert bars, "the progress bars are text"
    assert not any(re.search(r"\r(?!\n)", text) for text in bars), "only each bar's last state is saved"


def test_the_app_notebook_shows_the_app_with_both_exported_models(executed):
    notebook = run_of(executed, "app.ipynb")
    views = [output.data[WIDGET_VIEW]["model_id"] for _, output in outputs(notebook) if WIDGET_VIEW in output.get("data", {})]
    assert views, "app.ipynb displayed no widget"
    state = notebook.metadata["widgets"][WIDGET_STATE]["state"]
    assert all(model_id in state for model_id in views)
    dropdowns = [model["state"] for model in state.values() if model["model_name"] == "DropdownModel"]
    # The first two notebooks exported both models into the shared checkpoints folder, so the app offers both.
    assert [tuple(dropdown["_options_labels"]) for dropdown in dropdowns] == [
        ("Transfer learning (EfficientNet-Lite0)", "From scratch (MyModel)")
    ]


def test_quick_mode_runs_the_fine_tuning_stage(executed):
    """Quick mode fine-tunes for one epoch, so the stage that decides between two models runs in the tests too."""
    notebook = run_of(executed, "transfer_learning.ipynb")
    printed = "".join(output.text for _, output in outputs(notebook) if output.output_type == "stream")
    assert "Fine-tuning skipped" not in printed
    assert re.search(r"Keeping the (fine-tuned|frozen-backbone) model.*validation loss: frozen backbone", printed)



def test_the_report_starts_with_the_rubric_summary_and_shows_no_traceback_or_warning(executed, tmp_path):
    """What `make report QUICK=1` writes: the summary grades every rubric item. Quick mode's accuracies mean nothing,
    but its mechanisms (scheduler, checkpoint, export, app) are real, so those items must pass."""
    runs = {name: executed[name] for name in NOTEBOOKS}
    for name in NOTEBOOKS:
        run_of(executed, name)  # each ran to the end
    write_html(combined(runs, summary_html(runs, quick=True)), tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    start = page.index("course rubric item")
    summary = page[start:page.index("<h2>Contents</h2>", start)]
    assert summary.count(">PASS<") + summary.count(">FAIL<") == 6, "a verdict for each rubric item"
    found = [record for notebook, _, _ in runs.values() for record in records(notebook)]
    assert [kind for kind in ("scratch", "transfer", "app") if kind not in {record["kind"] for record in found}] == []
    failed = [item for item, _, passed, _ in rubric(found) if not passed and "test accuracy" not in item]
    assert not failed, f"in quick mode too: {failed}"
    for anchor in ("results-scratch", "results-transfer", "results-app"):
        assert re.search(f"href=[\"']#{anchor}[\"']", summary) and re.search(f"id=[\"']{anchor}[\"']", page), anchor
    assert "Traceback" not in page and not re.search(r"\w+Warning\b", page), "no traceback or warning text"


# ----------------------------------------------------------------------------------------------------------------------
# EPOCHS=N: every training a notebook runs reads it

TRAININGS = {"optimize": 4, "train_head_on_features": 4, "compare_models": 2, "compare_schedulers": 2, "fine_tune": 4}
EPOCH_SETTINGS = ("N_EPOCHS", "COMPARE_EPOCHS", "FINE_TUNE_EPOCHS")  # position above: of the n_epochs argument


def training_calls(notebook: nbformat.NotebookNode):
    """(function name, its n_epochs argument as source) for every training call in the notebook's code cells."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in TRAININGS:
                keyword = [k.value for k in node.keywords if k.arg == "n_epochs"]
                argument = keyword[0] if keyword else node.args[TRAININGS[node.func.id]]
                yield node.func.id, ast.unparse(argument)


@pytest.mark.parametrize("name", ["cnn_from_scratch.ipynb", "transfer_learning.ipynb"])
def test_every_training_in_a_notebook_runs_at_most_EPOCHS_epochs(name, monkeypatch):
    """`make run EPOCHS=N` (LANDMARK_EPOCHS=N) caps every training: the main model, the experiments, fine-tuning."""
    notebook = nbformat.read(PROJECT / name, as_version=4)
    calls = list(training_calls(notebook))
    assert calls and all(argument in EPOCH_SETTINGS for _, argument in calls), calls
    settings = next(cell.source for cell in notebook.cells if cell.cell_type == "code")
    for quick in ("", "1"):
        monkeypatch.setenv("LANDMARK_QUICK", quick)
        monkeypatch.setenv("LANDMARK_EPOCHS", "1")
        values = {}
        exec(settings, values)  # the settings cell reads the environment, as in Jupyter
        assert {values[setting] for setting in EPOCH_SETTINGS if setting in values} == {1}
        assert {argument for _, argument in calls} <= set(values), "each training's epochs are set in the settings cell"
