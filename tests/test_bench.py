"""The bench/ scripts run end to end and print their figures. Tiny sizes here: these runs check that the scripts work,
their numbers mean nothing (README's Results hold the real measurements, with their commands)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import SAMPLES
from tests.test_fashion_mnist import requires_fashion_mnist

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize(
    "script, options, figures",
    [
        ("epoch_speed.py", ["--images", "50", "--classes", "5", "--batch-size", "16", "--image-size", "32", "--profile", "2"],
         ["course-style loop:", "fast path:", "ratio:", "where the fast path's time goes", "2 steps of 16:"]),
        ("cached_features.py", ["--images", "50", "--classes", "5", "--batch-size", "16"],
         ["one feature pass over", "10 head epochs on cached features:", "one epoch of the usual loop"]),
        ("scratch_epoch_time.py", ["--images", "50", "--classes", "5", "--sizes", "32", "48"], ["  32  ", "  48  "]),
        ("loader_speed.py", ["--images", "50", "--classes", "5", "--workers", "1"],
         ["(a) course style", "(b) course style", "(c) src.data training loader"]),
        ("predict_latency.py", ["--runs", "2", "--models", "scratch"], ["from scratch (MyModel)", "onnx/ts", "ONNX Runtime"]),
        ("predict_latency.py", ["--runs", "2", "--json", "--models", "transfer"],
         ['"transfer (EfficientNet-Lite0)": {', '"torchscript": {', '"onnx": {', '"p50": ']),
        ("explain_speed.py", ["--runs", "2"], ["from scratch (MyModel)", "transfer (EfficientNet-Lite0)",
                                               "explain/plain", "explain's probabilities vs forward's"]),
        ("app_latency.py", ["--runs", "2", "--warm-up", "1", "--models", "scratch"],
         ["from scratch (MyModel)", "TorchScript", "ONNX Runtime", "upload -> card p50", "map on",
          "where the model looked, the app's part"]),
        pytest.param("schedulers.py", ["--limit", "20", "--epochs", "2"],
                     ["MyModel, plateau", "MyModel, cosine", "PlainCNN, plateau", "PlainCNN, cosine", "2 epochs"],
                     marks=requires_fashion_mnist),
        pytest.param("unknown.py", ["--train-per-class", "20", "--valid-per-class", "10", "--test-per-class", "10",
                                    "--epochs", "1", "--copies", "5", "--photo-passes", "1", "--head-epochs", "2"],
                     ["fitted temperature T =", "ECE (15 bins)", "max probability", "energy", "unknown accepted",
                      "non-landmark photos that pass the threshold" if SAMPLES.is_dir() else "2. Photos: skipped"],
                     marks=requires_fashion_mnist),
    ],
)  # fmt: skip
def test_each_benchmark_runs_and_prints_its_figures(script, options, figures):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path, on any machine
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *options], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for figure in figures:
        assert figure in result.stdout, result.stdout
    assert "img/s" in result.stdout or " ms" in result.stdout or '"p50": ' in result.stdout  # JSON: in ms


def test_kill_resume_leaves_a_loadable_checkpoint_and_resumes():
    """bench/kill_resume.py end to end: 2 runs killed with SIGKILL, each must keep a loadable best checkpoint and
    finish with --resume. (A run that ends before its kill is reported apart: the totals count the killed runs.)"""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(BENCH / "kill_resume.py"), "--runs", "2", "--epochs", "3", "--image-size", "32"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    loadable = re.search(r"loadable best checkpoint after the kill: (\d+)/(\d+)", result.stdout)
    resumed = re.search(r"resume finished: (\d+)/(\d+)", result.stdout)
    assert loadable and resumed, result.stdout
    killed = int(loadable[2])
    same = re.search(r"resumed history equal to the uninterrupted run's: (\d+)/(\d+)", result.stdout)
    assert killed >= 1 and loadable[1] == resumed[1] == same[1] == same[2] == str(killed), result.stdout
    assert "FAILED" not in result.stdout, result.stdout


def test_web_latency_runs_in_the_browser_and_prints_its_figures(exported_scratch):
    """bench/web_latency.py on the small exported model's ONNX file (the real models take half a minute to export)."""
    from tests.test_web import browser_missing

    if browser_missing():
        pytest.skip(browser_missing())
    onnx = exported_scratch.with_suffix(".onnx")
    result = subprocess.run([sys.executable, str(BENCH / "web_latency.py"), "--runs", "2", "--warm-up", "1", "--onnx",
                             str(onnx)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for figure in ("machine:", "Chromium", onnx.name, "p50", "(ms; parts: medians)"):
        assert figure in result.stdout, result.stdout


def test_the_gpu_check_fits_its_phases_into_its_budget_and_ends_with_a_summary(tmp_path):
    """bench/gpu_check.sh's own mechanics, without a GPU: a phase that would get under 30 s of BUDGET is skipped, an
    unknown phase is named, and the summary (also OUT/summary.txt) comes last. A copy of the script runs: it works
    from the folder above its own, where nothing else is."""
    (tmp_path / "bench").mkdir()
    script = tmp_path / "bench" / "gpu_check.sh"
    script.write_text((BENCH / "gpu_check.sh").read_text())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "BUDGET": "40"}
    result = subprocess.run(["bash", str(script), str(tmp_path / "out"), "scratch", "typo"], capture_output=True,
                            text=True, timeout=120, env=env)  # fmt: skip
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert re.search(r"^scratch: skipped, -?\d+ s left of BUDGET$", summary, re.MULTILINE), summary
    assert "unknown phase typo (tests speed scratch transfer quick notebooks suite)" in summary
    assert summary.startswith("machine: ") and f"torch {__import__('torch').__version__}" in summary
    assert result.stdout.endswith("===== summary\n" + summary)


def test_epoch_speed_says_in_one_line_when_the_batch_is_larger_than_the_training_split():
    """The course loop drops its partial last batch: with no full batch its epoch would divide by zero."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, str(BENCH / "epoch_speed.py"), "--images", "50", "--classes", "5"],
                            capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "epoch_speed.py: error: --batch-size 64 is more than the 40 training photos: lower it")
    assert "Traceback" not in result.stderr
