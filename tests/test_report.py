"""Specification of src/report.py: running notebooks with progress, and the report's rubric summary.

The report of the three real notebooks is checked in tests/test_notebooks.py, which runs them once for all its tests.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from src.report import combined, main, records, rubric, run_notebook, run_table, summary_html
from src.results import RESULTS_MIME

PROJECT = Path(__file__).resolve().parents[1]


def notebook_file(path, *sources: str, markdown: str = "# A notebook\n\n## Part one"):
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell(markdown), *(nbformat.v4.new_code_cell(source) for source in sources)]
    )
    nbformat.write(notebook, path)
    return path


def model_record(kind: str, test_accuracy: float, **changes) -> dict:
    return {"kind": kind, "name": kind, "dataset": "landmarks", "device": "cpu", "train_seconds": 60.0, "epochs": 10,
            "checkpoint_epoch": 7, "best_valid_loss": 1.234, "test_accuracy": test_accuracy, "n_test": 1250,
            "exported_accuracy": test_accuracy, "passed": test_accuracy >= {"scratch": 0.5, "transfer": 0.6}[kind],
            "export_agrees": True, "scheduler": "cosine", "lr": [0.0, 1e-3], "exported": f"{kind}_exported.pt",
            "target": {"scratch": 0.5, "transfer": 0.6}[kind],
            **changes}  # fmt: skip


APP = {"kind": "app", "photos": 4, "models": ["Transfer learning (EfficientNet-Lite0)", "From scratch (MyModel)"],
       "top_k": 5}  # fmt: skip


def verdicts(found):
    return {item: passed for item, _, passed, _ in rubric(found)}


def test_every_rubric_item_passes_on_a_run_that_meets_the_course_targets():
    rows = rubric([model_record("scratch", 0.52), model_record("transfer", 0.71), APP])
    assert len(rows) == 6 and all(passed for _, _, passed, _ in rows)
    figures = {item: figure for item, figure, _, _ in rows}
    assert figures["CNN from scratch: test accuracy at least 50.0%"] == "52.0% (1250 test images)"
    assert "epoch 7 of 10, validation loss 1.234" in figures["A checkpoint at the validation minimum"]


def test_an_accuracy_below_its_target_fails_only_its_own_item():
    result = verdicts([model_record("scratch", 0.49), model_record("transfer", 0.71), APP])
    assert [item for item, passed in result.items() if not passed] == ["CNN from scratch: test accuracy at least 50.0%"]


@pytest.mark.parametrize("change, item", [
    ({"checkpoint_epoch": None}, "A checkpoint at the validation minimum"),
    ({"export_agrees": False}, "Both models exported"),
    ({"scheduler": ""}, "A learning-rate scheduler"),
])  # fmt: skip
def test_each_mechanism_item_fails_when_one_model_lacks_it(change, item):
    result = verdicts([model_record("scratch", 0.52), model_record("transfer", 0.71, **change), APP])
    assert [name for name, passed in result.items() if not passed] == [item]


def test_a_notebook_that_never_reported_fails_its_items_and_says_why():
    rows = rubric([model_record("scratch", 0.52)])
    failed = {item: figure for item, figure, passed, _ in rows if not passed}
    assert "Transfer learning: test accuracy at least 60.0%" in failed and "An app that shows the photo and its top " \
        "predictions" in failed  # fmt: skip
    assert failed["Both models exported"] == "from scratch: scratch_exported.pt scores 52.0% (the model 52.0%); transfer: " \
        "not measured"  # fmt: skip


def test_an_app_without_photos_or_models_fails():
    assert not verdicts([{**APP, "photos": 0}])["An app that shows the photo and its top predictions"]
    assert not verdicts([{**APP, "models": []}])["An app that shows the photo and its top predictions"]


def test_a_notebook_runs_with_a_progress_bar_and_its_records_are_read_back(tmp_path, capsys):
    record = {"kind": "app", "photos": 1}
    source = (f"from IPython.display import display\n"
              f"display({{'text/plain': 'x', {RESULTS_MIME!r}: {record!r}}}, raw=True)")  # fmt: skip
    notebook, error, seconds = run_notebook(notebook_file(tmp_path / "n.ipynb", "print(1)", source))
    assert error is None and seconds > 0
    assert records(notebook) == [record]
    err = capsys.readouterr().err
    assert "n: 100%" in err and "3/3" in err, "cells done of total"
    assert "TCP" not in err, "the kernel talks over local sockets: no unencrypted-TCP warning"


def test_a_failing_cell_is_named_in_one_line(tmp_path):
    _, error, _ = run_notebook(notebook_file(tmp_path / "n.ipynb", "x = 1", "raise ValueError('bad value')"))
    assert error == "n.ipynb stopped in cell 3 (raise ValueError('bad value')): ValueError: bad value"


def test_the_combined_page_starts_with_the_summary_and_links_every_heading(tmp_path):
    runs = {"a.ipynb": run_notebook(notebook_file(tmp_path / "a.ipynb", "1"))}
    report = combined(runs, summary_html(runs, quick=True))
    head = report.cells[0].source
    assert head.index("Quick mode") < head.index("course rubric item") < head.index("Contents")
    assert "<a href='#a-a-notebook'>A notebook</a>" in head and "href='#a-part-one'" in head
    assert report.cells[1].source == "# <a id='a-a-notebook'></a>A notebook\n\n## <a id='a-part-one'></a>Part one"


def test_the_cli_writes_one_page_per_notebook_and_the_report_and_no_warnings(tmp_path, capsys, caplog):
    figure = "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"  # an image without alt text
    paths = [notebook_file(tmp_path / name, figure) for name in ("first.ipynb", "second.ipynb")]
    assert main([*map(str, paths), "--output-dir", str(tmp_path / "out")]) == 0
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["first.html", "report.html", "second.html"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert len(re.findall(r'<img alt="[^"]+" class="[^"]*" src="data:image/png;base64,', page)) == 2, "plots embedded"
    out, err = capsys.readouterr()
    assert f"Report: {tmp_path / 'out' / 'report.html'}" in out
    rows = [line.split() for line in out.splitlines()[-3:-1]]
    assert [row[0] for row in rows] == ["first.ipynb", "second.ipynb"], "each notebook's time, then the report's path"
    assert all(re.fullmatch(r"\d+\.\d", row[1]) and row[2] == "min" for row in rows), rows
    assert "arning" not in err + caplog.text, "nothing a reader cannot act on, e.g. nbconvert's missing alt text"


def test_the_cli_stops_at_the_first_failing_notebook_with_one_line_and_keeps_its_page(tmp_path, capsys):
    paths = [notebook_file(tmp_path / "bad.ipynb", "1 / 0"), notebook_file(tmp_path / "next.ipynb", "1")]
    assert main([*map(str, paths), "--output-dir", str(tmp_path / "out")]) == 1
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["bad.html", "report.html"]
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "error: bad.ipynb stopped in cell 2 (1 / 0): ZeroDivisionError: division by zero (its page " \
        "shows the cell)"  # fmt: skip
    assert "Traceback" not in "\n".join(err)


def test_a_kernel_that_dies_in_a_cell_is_one_line(tmp_path):
    killed = notebook_file(tmp_path / "n.ipynb", "x = 1", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    _, error, _ = run_notebook(killed)
    assert error == ("n.ipynb stopped in cell 3 (import os, signal): its kernel stopped (Ctrl-C, out of memory, or "
                     "killed); the files it saved before are intact")  # fmt: skip


def test_ctrl_c_during_a_notebook_stops_the_run_with_one_line_and_no_traceback(tmp_path):
    """What a terminal's Ctrl-C does: SIGINT to the whole process group, `make` and the report in it."""
    started = tmp_path / "started"
    slow = notebook_file(tmp_path / "slow.ipynb", f"import time\nopen({str(started)!r}, 'w').close()\n"
                                                  "for _ in range(600):\n    time.sleep(0.1)")  # fmt: skip
    command = [sys.executable, "-m", "src.report", str(slow), "--output-dir", str(tmp_path / "out")]
    report = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PROJECT,
                              start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # until the cell runs
    os.killpg(report.pid, signal.SIGINT)
    out, err = report.communicate(timeout=60)
    assert report.returncode == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: slow.ipynb stopped in cell 2 (import time): its kernel stopped")
    assert (tmp_path / "out" / "slow.html").is_file() and "Report:" in out


def test_the_cli_refuses_a_missing_notebook_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing.ipynb")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("missing.ipynb: no such notebook (--help lists the options)")


def test_the_run_table_gives_each_notebooks_time_and_its_exported_models_accuracy_against_its_target():
    cell = nbformat.v4.new_code_cell("show_results(record)")
    cell.outputs = [nbformat.v4.new_output("display_data", data={RESULTS_MIME: model_record("scratch", 0.52)})]
    runs = {"cnn_from_scratch.ipynb": (nbformat.v4.new_notebook(cells=[cell]), None, 90.0),
            "transfer_learning.ipynb": (nbformat.v4.new_notebook(), "transfer_learning.ipynb stopped in cell 3", 6.0)}
    lines = run_table(runs).splitlines()
    assert lines[1].split() == ["cnn_from_scratch.ipynb", "1.5", "min", "scratch:", "52.0%", "(target", "50.0%:", "PASS)"]
    assert lines[2].split() == ["transfer_learning.ipynb", "0.1", "min", "stopped"]


@pytest.mark.parametrize("epochs", ["0", "ten", "-1", "1.5"])
def test_the_cli_refuses_a_bad_number_of_epochs_in_one_line_before_running_anything(epochs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LANDMARK_EPOCHS", epochs)
    with pytest.raises(SystemExit) as exit_info:
        main([str(notebook_file(tmp_path / "n.ipynb", "1")), "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and not (tmp_path / "out").exists()
    assert f"EPOCHS (LANDMARK_EPOCHS) must be a whole number of at least 1, got {epochs!r}" in capsys.readouterr().err
