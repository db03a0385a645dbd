"""Specification of src/results.py: a training notebook's results, measured and graded against the course rubric."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from src.calibration import collect_logits
from src.results import RESULTS_MIME, per_class_table, results_html, show_results, top_k_accuracies, training_results


class FixedScores(nn.Module):
    """A 'model' whose scores for image i are row i of `scores` (the image holds its own index)."""

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.scores = nn.Parameter(scores, requires_grad=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.scores[images.long().flatten()]


def test_top_k_counts_an_image_when_its_class_is_among_the_k_highest_scores():
    scores = torch.tensor([[0.9, 0.05, 0.03, 0.02],  # true 0: top-1
                           [0.5, 0.3, 0.1, 0.1],  # true 1: second
                           [0.4, 0.3, 0.2, 0.1],  # true 2: third
                           [0.4, 0.3, 0.2, 0.1]])  # true 3: last  # fmt: skip
    loader = DataLoader(TensorDataset(torch.arange(4.0), torch.tensor([0, 1, 2, 3])), batch_size=3)
    assert top_k_accuracies(*collect_logits(FixedScores(scores), loader), ks=(1, 2, 3, 5)) == {1: 0.25, 2: 0.5, 3: 0.75, 5: 1.0}


def test_per_class_precision_and_recall_come_from_the_confusion_matrix_worst_recall_first():
    confusion = np.array([[8, 2, 0],  # class a: 8 of 10 right
                          [0, 5, 5],  # class b: half right
                          [0, 0, 4]])  # class c: all right, but 5 b's were called c  # fmt: skip
    rows = per_class_table(confusion, ["a", "b", "c"])
    assert [row["class"] for row in rows] == ["b", "a", "c"]
    b, a, c = rows
    assert (b["recall"], b["precision"], b["test images"]) == (0.5, pytest.approx(5 / 7), 10)
    assert (c["recall"], c["precision"]) == (1.0, pytest.approx(4 / 9))
    assert a["f1"] == pytest.approx(2 * 1.0 * 0.8 / 1.8)


def test_a_class_never_predicted_has_precision_0_not_a_warning():
    rows = per_class_table(np.array([[3, 0], [2, 0]]), ["a", "b"])
    assert rows[0] == {"class": "b", "precision": 0.0, "recall": 0.0, "f1": 0.0, "test images": 2}


def record(test_accuracy=0.55, exported_accuracy=0.55, kind="scratch", valid_loss=(2.0, 1.5, 1.6)):
    history = {"train_loss": [2.5, 1.2, 1.0], "valid_loss": list(valid_loss), "train_accuracy": [0.2, 0.6, 0.7],
               "valid_accuracy": [0.3, 0.5, 0.52], "lr": [1e-3, 5e-4, 0.0]}  # fmt: skip
    confusion = np.array([[55, 45], [45, 55]])
    return training_results(
        kind, "MyModel", history, 2, test_accuracy, exported_accuracy, {1: test_accuracy, 3: 0.9, 5: 1.0},
        confusion, ["a", "b"], dataset="landmarks", device="cpu", train_seconds=12.34, scheduler="cosine",
        checkpoint="best.pt", exported="exported.pt",
    )  # fmt: skip


def test_the_record_grades_the_test_accuracy_against_the_course_target_of_its_kind():
    assert record(0.50)["passed"] and not record(0.4999)["passed"]
    assert not record(0.59, kind="transfer")["passed"] and record(0.60, kind="transfer")["passed"]


def test_the_record_holds_the_checkpoint_epochs_figures_not_the_last_epochs():
    figures = record()
    assert (figures["checkpoint_epoch"], figures["best_valid_accuracy"], figures["best_valid_loss"]) == (2, 0.5, 1.5)
    assert figures["train_loss_at_checkpoint"] == 1.2 and figures["epochs"] == 3
    assert figures["lr"] == [0.0, 1e-3] and figures["n_test"] == 200


@pytest.mark.parametrize("exported, agrees", [(0.55, True), (0.535, True), (0.52, False)])
def test_the_exported_file_must_reproduce_the_models_accuracy_within_resampling_error(exported, agrees):
    assert record(0.55, exported)["export_agrees"] is agrees


def test_the_html_shows_the_figures_the_verdict_and_the_worst_classes():
    page = results_html(record(0.45), worst=1)
    assert "id='results-scratch'" in page, "the anchor the report's summary links to"
    assert "45.0%" in page and "<b>FAIL</b>" in page and "epoch 2 of 3" in page
    assert page.count("<tr><td") == 1, "only the worst class"


def test_show_results_puts_the_record_in_the_output_for_the_report(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda data, raw: shown.append(data))
    show_results(record())
    assert shown[0][RESULTS_MIME] == record() and "<table>" in shown[0]["text/html"]
