"""Specification of src/calibration.py: temperature scaling, the "unknown" score and threshold, and how well calibrated
a model is (expected calibration error, reliability diagram)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from src.calibration import (
    KNOWN_SHARE,
    SCORE_KINDS,
    TEMPERATURE_RANGE,
    calibrate,
    calibrated,
    collect_logits,
    describe_calibration,
    expected_calibration_error,
    fit_temperature,
    plot_reliability,
    reliability,
    threshold_for,
    validation_loader,
)
from src.files import quiet_torchscript


def logits_at_temperature(temperature: float, n: int = 20_000, classes: int = 5, seed: int = 0):
    """(logits [n, classes], labels [n]) where each label is drawn from softmax(logits / temperature): the logits are
    exactly calibrated at that temperature."""
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, classes, generator=generator)
    labels = torch.multinomial(F.softmax(logits / temperature, dim=1), 1, generator=generator).squeeze(1)
    return logits, labels


class Fixed(torch.nn.Module):
    """A 'model' that returns the logits stored for each input index (inputs are [B, 1] indices)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(logits, requires_grad=False)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.table[index[:, 0].long()]


def loader_of(logits: torch.Tensor, labels: torch.Tensor) -> tuple[Fixed, DataLoader]:
    """A Fixed model and a loader of (index, label) batches that make it give these logits with these labels."""
    return Fixed(logits), DataLoader(TensorDataset(torch.arange(len(labels))[:, None], labels), batch_size=64)


# ----------------------------------------------------------------------------------------------------------------------
# The scores


def test_probabilities_are_the_softmax_of_the_logits_divided_by_the_temperature():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    for kind in SCORE_KINDS:
        probabilities, _ = calibrated(logits, 2.0, kind)
        assert torch.allclose(probabilities, F.softmax(logits / 2.0, dim=1))


def test_the_max_probability_score_is_the_largest_calibrated_probability():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    probabilities, scores = calibrated(logits, 1.5, "max_probability")
    assert torch.equal(scores, probabilities.max(dim=1).values)


def test_the_energy_score_is_temperature_times_logsumexp_of_the_scaled_logits():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    _, scores = calibrated(logits, 1.5, "energy")
    expected = [1.5 * math.log(sum(math.exp(v / 1.5) for v in row)) for row in logits.tolist()]
    assert scores.tolist() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", SCORE_KINDS)
def test_nan_logits_give_a_score_below_every_threshold(kind):
    _, scores = calibrated(torch.tensor([[float("nan"), 1.0, 0.0]]), 1.0, kind)
    assert not bool(scores[0] >= -math.inf)


@pytest.mark.parametrize("kind", SCORE_KINDS)
def test_the_scripted_function_gives_the_same_scores(kind):
    with quiet_torchscript():
        scripted = torch.jit.script(calibrated)
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    for got, expected in zip(scripted(logits, 0.7, kind), calibrated(logits, 0.7, kind)):
        assert torch.equal(got, expected)


# ----------------------------------------------------------------------------------------------------------------------
# Fitting the temperature and the threshold


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_the_fitted_temperature_recovers_the_one_the_labels_were_drawn_at(true_temperature):
    logits, labels = logits_at_temperature(true_temperature)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.05)


def test_the_fitted_temperature_minimises_the_negative_log_likelihood():
    logits, labels = logits_at_temperature(1.7, n=2000)
    temperature = fit_temperature(logits, labels)
    nll = [F.cross_entropy(logits / (temperature * factor), labels).item() for factor in (0.99, 1.0, 1.01)]
    assert nll[1] < nll[0] and nll[1] < nll[2]


def test_a_validation_set_the_model_gets_all_right_stops_at_the_lowest_temperature():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]]).repeat(10, 1)
    labels = torch.tensor([0, 1]).repeat(10)
    assert fit_temperature(logits, labels) == pytest.approx(TEMPERATURE_RANGE[0], rel=1e-4)


def test_the_threshold_accepts_exactly_95_percent_of_100_scores():
    scores = torch.arange(1, 101).float()[torch.randperm(100, generator=torch.Generator().manual_seed(0))]
    threshold = threshold_for(scores)
    assert threshold == 6.0 and int((scores >= threshold).sum()) == 95


@pytest.mark.parametrize("n", [1, 7, 19, 20, 21, 333])
def test_the_threshold_is_the_highest_that_accepts_at_least_the_share(n):
    scores = torch.randn(n, generator=torch.Generator().manual_seed(n))
    threshold = threshold_for(scores)
    assert (scores >= threshold).float().mean() >= KNOWN_SHARE
    higher = scores[scores > threshold]
    if len(higher):  # the next score up would accept too few
        assert (scores >= higher.min()).float().mean() < KNOWN_SHARE


@pytest.mark.parametrize("kind", SCORE_KINDS)
def test_calibrate_fits_the_temperature_and_a_threshold_accepting_95_percent_of_the_loader(kind):
    logits, labels = logits_at_temperature(2.0, n=2000)
    model, loader = loader_of(logits, labels)
    calibration = calibrate(model, loader, kind)
    assert calibration.temperature == pytest.approx(fit_temperature(logits, labels))
    assert calibration.score_kind == kind and calibration.images == 2000
    _, scores = calibrated(logits, calibration.temperature, kind)
    assert (scores >= calibration.threshold).float().mean() >= KNOWN_SHARE


def test_collect_logits_leaves_every_submodule_in_the_mode_it_was_in():
    model, loader = loader_of(*logits_at_temperature(1.0, n=10))
    wrapped = torch.nn.Sequential(model, torch.nn.Dropout(0.5)).train()
    model.eval()  # a submodule in eval mode inside a model in training mode (e.g. a frozen BatchNorm)
    logits, labels = collect_logits(wrapped, loader)
    assert [m.training for m in wrapped.modules()] == [True, False, True]
    assert logits.shape == (10, 5) and labels.dtype == torch.int64
    assert torch.equal(logits, model.table), "in eval mode: dropout left the logits alone"


@pytest.mark.parametrize(
    "logits, labels, words",
    [(torch.randn(6, 3), torch.zeros(6, dtype=torch.long), "images of only 1 class (6 images)"),
     (torch.tensor([[float("nan"), 0.0, 1.0], [0.0, 1.0, 2.0]]), torch.tensor([0, 1]),
      "NaN or infinite logits for 1 of 2 calibration images"),
     (torch.randn(2, 3), torch.tensor([0, 3]), "labels outside 0..2"),
     (torch.randn(0, 3), torch.zeros(0, dtype=torch.long), "gives no images")],
    ids=["one class", "NaN", "labels beyond the classes", "empty"],
)  # fmt: skip
def test_what_cannot_be_calibrated_is_one_line(logits, labels, words):
    model, loader = loader_of(logits, labels)
    with pytest.raises(ValueError) as info:
        calibrate(model, loader)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_an_unknown_score_kind_is_refused_in_one_line():
    model, loader = loader_of(*logits_at_temperature(1.0, n=10))
    with pytest.raises(ValueError, match="score_kind must be one of max_probability, energy, got 'entropy'"):
        calibrate(model, loader, "entropy")


# ----------------------------------------------------------------------------------------------------------------------
# Expected calibration error and the reliability diagram


def test_ece_of_a_hand_computed_example():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right): bins (0.8667, 0.9333] and (0.5333, 0.6]
    probabilities = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 1, 0])
    expected = 2 / 4 * abs(0.5 - 0.9) + 2 / 4 * abs(1.0 - 0.6)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(expected)


def test_ece_is_zero_when_every_bins_accuracy_equals_its_confidence():
    probabilities = torch.tensor([[0.75, 0.25]] * 4 + [[0.5, 0.5]] * 2)  # ties: argmax is the first class
    labels = torch.tensor([0, 0, 0, 1, 0, 1])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.0, abs=1e-12)


def test_reliability_bins_are_closed_on_the_right_and_the_first_holds_zero():
    confidences = torch.tensor([[0.0], [0.25], [0.26], [0.5], [1.0]])  # one column: the confidence is the value
    table = reliability(confidences, torch.zeros(5, dtype=torch.long), bins=4)  # (0, 0.25], (0.25, 0.5], ...
    assert table["count"].tolist() == [2, 2, 0, 1]
    assert table["confidence"].tolist() == pytest.approx([0.125, 0.38, 0.0, 1.0])


def test_temperature_scaling_lowers_the_ece_of_an_overconfident_model():
    logits, labels = logits_at_temperature(2.5)  # calibrated at T = 2.5: at T = 1 the model is overconfident
    before = expected_calibration_error(F.softmax(logits, dim=1), labels)
    after = expected_calibration_error(F.softmax(logits / fit_temperature(logits, labels), dim=1), labels)
    assert after < 0.02 < 0.1 < before


def test_the_reliability_diagram_shows_both_temperatures_with_their_ece():
    logits, labels = logits_at_temperature(2.0, n=3000)
    fig = plot_reliability(logits, labels, 2.0)
    before, after = fig.axes
    for ax, t in ((before, 1.0), (after, 2.0)):
        probabilities = F.softmax(logits / t, dim=1)
        ece = expected_calibration_error(probabilities, labels)
        assert f"T = {t:.2f}" in ax.get_title() and f"ECE {100 * ece:.1f}%" in ax.get_title()
        table = reliability(probabilities, labels)
        heights = [bar.get_height() for bar in ax.patches]
        assert heights == pytest.approx(table["accuracy"][table["count"] > 0].tolist())
        assert ax.get_xlabel() and ax.get_ylabel() == "accuracy"


# ----------------------------------------------------------------------------------------------------------------------
# Reading it back, and the command line's validation split


class Attributes(torch.nn.Module):
    def __init__(self, **attributes):
        super().__init__()
        for name, value in attributes.items():
            setattr(self, name, value)


def test_describe_says_what_a_file_does_with_unknown_photos():
    calibrated_file = Attributes(temperature=1.25, score_kind="energy", threshold=3.5, class_names=["A", "B"])
    assert describe_calibration(calibrated_file) == (
        "calibrated: temperature 1.250; a photo whose energy score is below 3.5 is none of the 2 classes"
    )
    for older in (Attributes(class_names=["A"]), Attributes(temperature=1.0, score_kind="energy", threshold=-math.inf)):
        assert describe_calibration(older).startswith("not calibrated: temperature 1, no 'unknown' threshold")


def test_the_validation_loader_of_a_run_record_is_the_split_it_trained_with(landmark_data):
    from src.data import get_data_loaders

    record = {"dataset": "landmarks", "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "args": {"seed": "42"},
              "class_names": ["Synthetic Landmark A", "Synthetic Landmark B", "Synthetic Landmark C"]}  # fmt: skip
    loader = validation_loader(record)
    expected = get_data_loaders(batch_size=8, num_workers=0, image_size=32, normalization=([0.5] * 3, [0.25] * 3))
    assert loader.dataset.indices == expected["valid"].dataset.indices
    images, _ = next(iter(loader))
    assert images.shape[1:] == (3, 32, 32)


def test_without_its_data_a_run_record_has_no_validation_loader_and_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LANDMARK_DATA", str(tmp_path / "nothing"))
    record = {"dataset": "landmarks", "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "class_names": ["A"]}
    assert validation_loader(record) is None
    err = capsys.readouterr().err
    assert err.startswith("note: not calibrated: cannot read the validation split (") and err.count("\n") == 1


def test_a_run_record_whose_classes_are_not_the_datas_has_no_validation_loader(landmark_data, capsys):
    record = {"dataset": "landmarks", "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "class_names": ["A"]}
    assert validation_loader(record) is None
    assert capsys.readouterr().err == "note: not calibrated: the validation data has other classes than the run\n"
