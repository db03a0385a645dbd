"""A training notebook's results, measured and graded against the course rubric (read by src/report.py).

Each training notebook ends with

    show_results(training_results(...))

which shows the figures as a table (best validation accuracy, test accuracy of the best weights and of the exported
file, top-1/3/5, the rubric's target with PASS or FAIL, the five classes with the lowest recall) and puts the same
figures, as JSON, in the cell's output under RESULTS_MIME. `python -m src.report` reads them back from the executed
notebooks to write the report's summary, so the summary can only show what the notebooks measured.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import torch

RESULTS_MIME = "application/vnd.landmark.results+json"  # a notebook output's mime type for a results record
TARGETS = {"scratch": 0.50, "transfer": 0.60}  # the course rubric's minimum test accuracy for each kind of model
TOP_K = (1, 3, 5)  # the app shows the top 5 landmarks; top-3 and top-5 say how often the right one is among them
EXPORT_TOLERANCE = 0.02  # the exported file may differ from the model by resampling: at most 2 points (or 1 image)


def top_k_accuracies(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = TOP_K) -> dict[int, float]:
    """For each k, the fraction in [0, 1] of the images (logits [N, C], labels [N], e.g. from
    src.calibration.collect_logits) whose true class is among the k highest scores (k larger than the number of classes
    counts every image)."""
    ranked = logits.argsort(dim=1, descending=True)
    return {k: (ranked[:, :k] == labels[:, None]).any(dim=1).float().mean().item() for k in ks}


def per_class_table(confusion: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """Precision, recall and F1 (in [0, 1]) and the number of test images of each class, from a confusion matrix
    (row = true class, column = predicted), lowest recall first (scikit-learn computes them)."""
    from sklearn.metrics import precision_recall_fscore_support  # only the notebooks' results cells need it

    n = len(class_names)
    truth = np.repeat(np.repeat(np.arange(n), n), confusion.reshape(-1))  # one entry per test image
    predicted = np.repeat(np.tile(np.arange(n), n), confusion.reshape(-1))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=np.arange(n), zero_division=0
    )
    rows = [
        {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "test images": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    ]
    return sorted(rows, key=lambda row: (row["recall"], row["f1"]))


def passes_export(model_accuracy: float, exported_accuracy: float, n_test: int) -> bool:
    """Whether the exported file reproduces the model's test accuracy within resampling error."""
    return abs(model_accuracy - exported_accuracy) <= max(EXPORT_TOLERANCE, 1 / max(n_test, 1)) + 1e-9


def training_results(
    kind: str, name: str, history: dict[str, list[float]], checkpoint_epoch: int | None, test_accuracy: float,
    exported_accuracy: float, top_k: dict[int, float], confusion: np.ndarray, class_names: Sequence[str], *,
    dataset: str, device: str, train_seconds: float, scheduler: str, checkpoint: str, exported: str,
) -> dict:  # fmt: skip
    """The record of one trained model. kind: "scratch" or "transfer" (its rubric target); history: optimize()'s;
    checkpoint_epoch: the 1-based epoch whose weights were tested (src.train.best_epoch); accuracies in [0, 1]."""
    n_test = int(confusion.sum())
    best = checkpoint_epoch - 1 if checkpoint_epoch else int(np.argmax(history["valid_accuracy"]))
    return {
        "kind": kind, "name": name, "dataset": dataset, "device": device, "train_seconds": round(train_seconds, 1),
        "epochs": len(history["valid_loss"]), "checkpoint_epoch": checkpoint_epoch,
        "best_valid_accuracy": history["valid_accuracy"][best], "best_valid_loss": history["valid_loss"][best],
        "train_loss_at_checkpoint": history["train_loss"][best],
        "test_accuracy": test_accuracy, "exported_accuracy": exported_accuracy, "n_test": n_test,
        "top_k": {str(k): value for k, value in top_k.items()},
        "target": TARGETS[kind], "passed": test_accuracy >= TARGETS[kind],
        "export_agrees": passes_export(test_accuracy, exported_accuracy, n_test),
        "scheduler": scheduler, "lr": [min(history["lr"]), max(history["lr"])],
        "checkpoint": checkpoint, "exported": exported,
        "per_class": per_class_table(confusion, class_names),
    }  # fmt: skip


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def results_html(record: dict, worst: int = 5) -> str:
    """The record as two HTML tables: the figures, then the `worst` classes by recall. Its heading is the anchor
    the report's summary links to (id "results-<kind>")."""
    percent = lambda value: f"{100 * value:.1f}%"  # noqa: E731
    epoch = record["checkpoint_epoch"]
    rows = [
        ("best validation accuracy", f"{percent(record['best_valid_accuracy'])} (epoch {epoch} of {record['epochs']}, "
                                     f"the checkpoint's)" if epoch else "no checkpoint was saved"),
        ("test accuracy, best weights", percent(record["test_accuracy"])),
        ("test accuracy, exported file", f"{percent(record['exported_accuracy'])} ({record['exported']})"),
        ("top-1 / top-3 / top-5", " / ".join(percent(value) for value in record["top_k"].values())),
        ("course target", f"at least {percent(record['target'])}: <b>{verdict(record['passed'])}</b>"),
        ("training time", f"{record['train_seconds']:,.0f} s on {record['device']} ({record['dataset']})"),
    ]  # fmt: skip
    figures = "".join(f"<tr><th style='text-align:left'>{name}</th><td style='text-align:left'>{value}</td></tr>"
                      for name, value in rows)  # fmt: skip
    header = "".join(f"<th>{column}</th>" for column in ("class", "precision", "recall", "F1", "test images"))
    classes = "".join(
        f"<tr><td style='text-align:left'>{html.escape(row['class'])}</td><td>{percent(row['precision'])}</td>"
        f"<td>{percent(row['recall'])}</td><td>{percent(row['f1'])}</td><td>{row['test images']}</td></tr>"
        for row in record["per_class"][:worst]
    )
    return (
        f"<h3 id='results-{record['kind']}'>Results: {html.escape(record['name'])}</h3><table>{figures}</table>"
        f"<p>The {worst} classes with the lowest recall (of {len(record['per_class'])}):</p>"
        f"<table><tr>{header}</tr>{classes}</table>"
    )


def show_results(record: dict, worst: int = 5) -> None:
    """Display the record in a notebook: the tables for the reader, the JSON for src/report.py."""
    from IPython.display import display

    text = "\n".join(f"{key}: {value}" for key, value in record.items() if key != "per_class")
    display({"text/html": results_html(record, worst), "text/plain": text, RESULTS_MIME: record}, raw=True)
