"""Specification of src/experiments.py: comparing models, and learning-rate schedules, trained the same way; and
fine-tuning that is kept only when it lowers the validation loss."""

import math

import matplotlib
import pytest
import torch

from src import experiments, train
from src.data import get_data_loaders
from src.experiments import compare_models, compare_schedulers, comparison_table, fine_tune, summary_rows
from src.model import MLPBaseline, count_parameters
from src.optimization import get_loss
from src.visualize import format_table
from tests.conftest import small_model
from tests.test_train import scripted_run_epoch, weight_marker

matplotlib.use("Agg")
CPU = torch.device("cpu")


def script_validation(monkeypatch, valid_losses: list[float]) -> list:
    """Every epoch, in optimize() and in fine_tune(), follows the script; returns the list of validated loaders."""
    fake, seen = scripted_run_epoch(valid_losses), []

    def recording(loader, model, loss_fn, optimizer=None, device=None, desc=""):
        if optimizer is None:
            seen.append(loader)
        else:
            optimizer.step()  # no gradients, so nothing changes; the scheduler sees a step was taken, as in training
        return fake(loader, model, loss_fn, optimizer, device, desc)

    monkeypatch.setattr(train, "run_epoch", recording)
    monkeypatch.setattr(experiments, "run_epoch", recording)
    return seen


# ----------------------------------------------------------------------------------------------------------------------
# Comparing models


def test_compare_models_trains_each_candidate_and_keeps_no_files(loaders, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where the throwaway checkpoints go
    candidates = {"MLP": MLPBaseline(3, 32, hidden=(16,)), "CNN": small_model()}
    before = {name: [p.detach().clone() for p in model.parameters()] for name, model in candidates.items()}
    histories = compare_models(candidates, loaders, 2, lr=1e-3, device=CPU)
    assert list(histories) == ["MLP", "CNN"]
    for name, history in histories.items():
        assert len(history["valid_accuracy"]) == 2 and all(math.isfinite(v) for v in history["valid_loss"])
        changed = any(not torch.equal(a, b) for a, b in zip(before[name], candidates[name].parameters()))
        assert changed, f"{name} was not trained"
    assert list(tmp_path.iterdir()) == [], "the experiment's checkpoints are deleted"


def test_compare_models_refuses_zero_epochs(loaders):
    with pytest.raises(ValueError, match="n_epochs"):
        compare_models({"CNN": small_model()}, loaders, 0, lr=1e-3)


def test_comparison_table_lists_parameters_and_best_validation_accuracy():
    candidates = {"MLP": MLPBaseline(3, 8, hidden=(4,)), "CNN": small_model()}
    histories = {"MLP": {"valid_accuracy": [0.25, 0.5, 0.375]}, "CNN": {"valid_accuracy": [0.75, 0.625]}}
    header, mlp, cnn = comparison_table(candidates, histories).splitlines()
    assert header.split() == ["model", "parameters", "best", "valid", "accuracy"]
    assert mlp.split() == ["MLP", f"{count_parameters(candidates['MLP']):,}", "50.0%"]
    assert cnn.split() == ["CNN", f"{count_parameters(candidates['CNN']):,}", "75.0%"]


def test_compare_models_starts_every_candidate_from_the_same_random_state(loaders):
    # two identical models: the same batches in the same order and the same dropout give the same history
    histories = compare_models({"first": small_model(), "second": small_model()}, loaders, 2, lr=1e-3, device=CPU)
    assert histories["first"] == histories["second"]


# ----------------------------------------------------------------------------------------------------------------------
# Comparing learning-rate schedules


def test_compare_schedulers_trains_a_copy_with_each_schedule_and_records_its_rates(loaders):
    model = small_model()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    histories = compare_schedulers(model, loaders, 3, lr=1e-2, device=CPU)
    assert list(histories) == ["plateau", "cosine"], "the course's schedule, then the recipe's"
    # plateau: the full rate until the validation loss stalls for 5 epochs; cosine: 1 warm-up epoch at half the rate,
    # then the full rate, then down the cosine (half-way after 1 of its 2 epochs)
    assert histories["plateau"]["lr"] == pytest.approx([1e-2, 1e-2, 1e-2])
    assert histories["cosine"]["lr"] == pytest.approx([5e-3, 1e-2, 5e-3])
    for history in histories.values():
        assert len(history["valid_loss"]) == 3 and all(math.isfinite(v) for v in history["valid_loss"])
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items()), "model is not changed"


def test_compare_schedulers_runs_differ_only_in_the_schedule(loaders):
    # one epoch: both schedules train at the full rate (no warm-up in a 1-epoch run), so from the same weights, with
    # the same batches in the same order and the same dropout, the two runs are identical
    histories = compare_schedulers(small_model(), loaders, 1, lr=1e-2, device=CPU)
    assert histories["plateau"] == histories["cosine"]
    assert histories["cosine"]["lr"] == [1e-2]


def test_compare_schedulers_keeps_its_checkpoints_in_the_given_folder_only(loaders, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "temporary"))
    (tmp_path / "temporary").mkdir()
    compare_schedulers(small_model(), loaders, 1, lr=1e-3, schedulers=["cosine"], device=CPU)
    assert list((tmp_path / "temporary").iterdir()) == [], "without a folder, the checkpoints are deleted"
    compare_schedulers(small_model(), loaders, 1, lr=1e-3, folder=tmp_path / "runs", device=CPU)
    assert {"plateau.pt", "cosine.pt"} <= {path.name for path in (tmp_path / "runs").iterdir()}


@pytest.mark.parametrize("schedulers", [["plateau", "step"], []])
def test_compare_schedulers_refuses_unknown_schedules_before_training(loaders, schedulers):
    model = small_model()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="schedulers must be some of plateau, cosine"):
        compare_schedulers(model, loaders, 2, lr=1e-3, schedulers=schedulers, device=CPU)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_summary_rows_show_the_kept_epoch_and_the_best_and_last_accuracy_of_each_run_and_skipped_runs():
    frozen = {"valid_loss": [1.0, 0.5, 0.499], "valid_accuracy": [0.5, 0.75, 0.625]}  # epoch 3: not 1% better, not kept
    tuned = {"valid_loss": [0.45], "valid_accuracy": [0.8125]}
    rows = summary_rows({"frozen": frozen, "fine-tuned": tuned, "skipped": None})
    assert rows[0] == {"run": "frozen", "epochs": 3, "kept epoch": 2, "valid loss": "0.5000", "valid accuracy": "75.0%",
                       "best valid accuracy": "75.0%", "last valid accuracy": "62.5%"}  # fmt: skip
    lines = format_table(rows).splitlines()
    assert lines[2].split() == ["fine-tuned", "1", "1", "0.4500", "81.2%", "81.2%", "81.2%"]
    assert lines[3].split() == ["skipped", "0", "-", "-", "-", "-", "-"]


def test_fine_tune_keeps_the_frozen_model_when_the_tuned_one_validates_worse(loaders, tmp_path, monkeypatch):
    # epoch 1 of fine-tuning validates at 1.0; then the frozen model scores 0.5 and the tuned one 0.7
    script_validation(monkeypatch, [1.0, 0.5, 0.7])
    model, unfrozen, save_path = small_model(), small_model(), tmp_path / "tuned.pt"
    kept, history, message = fine_tune(model, unfrozen, loaders, get_loss(), 1, save_path, lr=1e-4, device=CPU)
    assert kept is model
    assert history["valid_loss"] == [1.0]
    assert message.startswith("Keeping the frozen-backbone model") and "0.5000" in message and "0.7000" in message
    assert save_path.is_file(), "the fine-tuned run is checkpointed like every other run"


def test_fine_tune_keeps_the_tuned_model_with_its_best_weights_when_it_validates_better(loaders, tmp_path, monkeypatch):
    # two epochs: the first is the best (1.0, then 1.2); then the frozen model scores 0.7, the tuned one 0.5
    script_validation(monkeypatch, [1.0, 1.2, 0.7, 0.5])
    model, save_path = small_model(), tmp_path / "tuned.pt"
    with torch.no_grad():
        model.stem[0][0].weight.mul_(2)  # "trained" weights, unlike a fresh model's
    unfrozen = small_model()
    kept, history, message = fine_tune(model, unfrozen, loaders, get_loss(), 2, save_path, lr=1e-4, device=CPU)
    assert kept is unfrozen and message.startswith("Keeping the fine-tuned model")
    assert weight_marker(kept) == 1, "the best epoch's weights (epoch 1), not the last epoch's"
    assert torch.equal(kept.stem[0][0].weight, model.stem[0][0].weight), "fine-tuning started from the trained model"
    assert len(history["train_loss"]) == 2


def test_fine_tune_compares_on_the_validation_split_never_the_test_split(loaders, tmp_path, monkeypatch):
    seen = script_validation(monkeypatch, [1.0, 0.7, 0.5])
    fine_tune(small_model(), small_model(), loaders, get_loss(), 1, tmp_path / "tuned.pt", lr=1e-4, device=CPU)
    assert seen == [loaders["valid"]] * 3
    other_valid = get_data_loaders(batch_size=4, num_workers=0, image_size=32)["valid"]
    seen = script_validation(monkeypatch, [1.0, 0.7, 0.5])
    fine_tune(small_model(), small_model(), loaders, get_loss(), 1, tmp_path / "again.pt", lr=1e-4,
              valid_loader=other_valid, device=CPU)  # fmt: skip
    assert seen[1:] == [other_valid, other_valid], "both final scores on the given valid_loader"


def test_fine_tune_with_zero_epochs_is_skipped(loaders, tmp_path):
    model = small_model()
    kept, history, message = fine_tune(model, small_model(), loaders, get_loss(), 0, tmp_path / "t.pt", lr=1e-4)
    assert kept is model and history is None and "skipped" in message
    assert list(tmp_path.iterdir()) == []


def test_fine_tune_keeps_the_frozen_model_when_no_weights_were_saved(loaders, tmp_path, monkeypatch, capsys):
    def diverging(loader, model, loss_fn, optimizer=None, device=None, desc=""):
        raise FloatingPointError("The loss became nan in batch 0: training stopped.")

    monkeypatch.setattr(train, "run_epoch", diverging)
    model = small_model()
    kept, history, message = fine_tune(model, small_model(), loaders, get_loss(), 2, tmp_path / "t.pt", lr=1e-4,
                                       device=CPU)  # fmt: skip
    assert kept is model and history["train_loss"] == [] and "saved no weights" in message
    assert "No weights were saved" in capsys.readouterr().err


def test_fine_tune_really_trains_a_copy_and_leaves_the_frozen_model_unchanged(loaders, tmp_path):
    model, unfrozen = small_model(), small_model()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    kept, history, _ = fine_tune(model, unfrozen, loaders, get_loss(), 1, tmp_path / "t.pt", lr=1e-3, device=CPU)
    assert kept in (model, unfrozen) and math.isfinite(history["valid_loss"][0])
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert any(not torch.equal(before[name], value) for name, value in unfrozen.state_dict().items())
