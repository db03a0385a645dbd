"""Specification of src/train.py: epochs, the checkpointing loop, failure handling and resume."""

import math
import subprocess

import matplotlib
import matplotlib.pyplot
import pytest
import torch
import torch.nn as nn

from src import train
from src.checkpoints import ResumeError
from src.data import get_data_loaders
from src.files import WriteError
from src.gpu_data import device_loaders
from src.model import MyModel
from src.optimization import get_loss, get_optimizer, get_scheduler
from src.train import best_epoch, one_epoch_test, optimize, resume_path, train_one_epoch, valid_one_epoch
from tests.conftest import small_model

matplotlib.use("Agg")
CPU = torch.device("cpu")


def weight_marker(model: nn.Module) -> float:
    """The classifier bias' first value: the fake epochs below set it to the epoch number."""
    return model.head[-1].bias[0].item()


def scripted_run_epoch(valid_losses: list[float]):
    """A stand-in for train.run_epoch: training 'changes the weights' (marks them with the epoch number),
    validation returns the next scripted loss."""
    calls = {"train": 0, "valid": 0}

    def fake(loader, model, loss_fn, optimizer=None, device=None, desc=""):
        if optimizer is not None:
            calls["train"] += 1
            with torch.no_grad():
                model.head[-1].bias[0] = calls["train"]
            return 1.0, 0.5
        calls["valid"] += 1
        return valid_losses[calls["valid"] - 1], 0.5

    return fake


# ----------------------------------------------------------------------------------------------------------------------
# One epoch


def test_train_and_valid_epochs_return_finite_losses(loaders):
    model = small_model()
    optimizer = get_optimizer(model, "Adam", 1e-3)
    assert math.isfinite(train_one_epoch(loaders["train"], model, optimizer, get_loss()))
    assert math.isfinite(valid_one_epoch(loaders["valid"], model, get_loss()))


def test_one_epoch_test_returns_loss_and_accuracy_and_prints_the_course_line(loaders, capsys):
    test_loss, accuracy = one_epoch_test(loaders["test"], small_model(), get_loss())
    n = len(loaders["test"].dataset)
    assert math.isfinite(test_loss) and 0 <= accuracy <= 1
    assert f"Test Accuracy: {100 * accuracy:.0f}% ({round(accuracy * n)}/{n})" in capsys.readouterr().out


def test_validation_does_not_change_the_weights(loaders):
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    valid_one_epoch(loaders["valid"], model, get_loss())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "BN running stats must not move"


def test_the_loss_decreases_on_a_small_learnable_problem(loaders):
    torch.manual_seed(0)
    model = MyModel(num_classes=3, dropout=0.0, stem_stride=1, widths=(16, 32), blocks_per_stage=(1, 1))
    optimizer = get_optimizer(model, "Adam", 3e-3)
    losses = [train_one_epoch(loaders["train"], model, optimizer, get_loss()) for _ in range(15)]
    assert losses[-1] < 0.6 * losses[0], losses
    _, accuracy = train.run_epoch(loaders["valid"], model, get_loss(), device=CPU)
    assert accuracy > 0.6, "well above the 1/3 of guessing"


# ----------------------------------------------------------------------------------------------------------------------
# optimize: best checkpoint, history, failures


def test_the_checkpoint_is_saved_at_each_new_minimum_and_never_overwritten_by_a_worse_epoch(loaders, tmp_path, monkeypatch):
    # epoch:           1     2 (not 1% better)  3 (best)  4 (worse)
    monkeypatch.setattr(train, "run_epoch", scripted_run_epoch([1.0, 0.995, 0.8, 0.9]))
    model, save_path = small_model(), tmp_path / "best.pt"
    history = optimize(loaders, model, get_optimizer(model), get_loss(), 4, save_path, device=CPU)
    saved = small_model()
    saved.load_state_dict(torch.load(save_path))
    assert weight_marker(saved) == 3
    assert history["valid_loss"] == [1.0, 0.995, 0.8, 0.9]
    assert best_epoch(history["valid_loss"]) == 3, "the epoch whose weights the checkpoint holds"


def test_best_epoch_is_the_last_saved_minimum_not_always_the_lowest_loss():
    assert best_epoch([1.0, 0.8, 0.795]) == 2, "0.795 is lower, but not 1% below 0.8: epoch 2's weights are kept"
    assert best_epoch([1.0, 0.8, 0.7]) == 3
    assert best_epoch([float("nan")]) is None


def test_history_has_one_entry_per_epoch_for_every_metric(loaders, tmp_path, device):
    model = small_model()
    history = optimize(loaders, model, get_optimizer(model, "Adam", 1e-3), get_loss(), 2, tmp_path / "m.pt", device=device)
    assert set(history) == {"train_loss", "valid_loss", "train_accuracy", "valid_accuracy", "lr"}
    assert all(len(values) == 2 and all(math.isfinite(v) for v in values) for values in history.values())
    assert (tmp_path / "m.pt").is_file() and resume_path(tmp_path / "m.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.resume.pt"], "no temporary files left behind"
    small_model().load_state_dict(torch.load(tmp_path / "m.pt", map_location="cpu"))  # weights from a GPU load on a CPU


def test_on_a_gpu_optimize_trains_in_bf16_with_channels_last_weights_and_in_fp32_on_a_cpu(loaders, tmp_path, device):
    model = small_model()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    dtypes = set()
    first_conv.register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
    optimize(loaders, model, get_optimizer(model, "Adam", 1e-3), get_loss(), 1, tmp_path / "m.pt", device=device)
    gpu = device.type == "cuda"
    assert dtypes == {torch.bfloat16 if gpu else torch.float32}
    assert first_conv.weight.dtype == torch.float32, "autocast keeps the weights (and the optimizer) in fp32"
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last) is gpu


def test_the_scheduler_is_stepped_every_epoch(loaders, tmp_path):
    model = small_model()
    optimizer = get_optimizer(model, "SGD", 0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    history = optimize(loaders, model, optimizer, get_loss(), 3, tmp_path / "m.pt", scheduler=scheduler, device=CPU)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025])


class FailingLoss(nn.Module):
    """Cross-entropy for the first `ok_calls` batches, then `failure` (NaN, or raising KeyboardInterrupt)."""

    def __init__(self, ok_calls: int, failure: str):
        super().__init__()
        self.calls, self.ok_calls, self.failure = 0, ok_calls, failure

    def forward(self, logits, labels):
        self.calls += 1
        if self.calls > self.ok_calls:
            if self.failure == "interrupt":
                raise KeyboardInterrupt
            return logits.sum() * float("nan")
        return nn.functional.cross_entropy(logits, labels)


def batches_per_epoch(loaders) -> int:
    return len(loaders["train"]) + len(loaders["valid"])


def test_a_nan_loss_stops_training_with_a_message_and_keeps_the_best_checkpoint(loaders, tmp_path, capsys, device):
    model, save_path = small_model(), tmp_path / "best.pt"
    loss = FailingLoss(ok_calls=batches_per_epoch(loaders) + 1, failure="nan")  # fails early in epoch 2
    history = optimize(loaders, model, get_optimizer(model, "Adam", 1e-3), loss, 5, save_path, device=device)
    assert len(history["train_loss"]) == 1
    assert "loss became nan" in capsys.readouterr().err
    best = small_model()
    best.load_state_dict(torch.load(save_path, map_location="cpu"))  # still the complete epoch-1 checkpoint
    assert all(torch.isfinite(p).all() for p in best.parameters())


def test_ctrl_c_stops_cleanly_and_resume_finishes_the_run_with_a_full_history(loaders, tmp_path, capsys, device):
    save_path = tmp_path / "best.pt"
    model = small_model()
    interrupted = FailingLoss(ok_calls=batches_per_epoch(loaders) + 1, failure="interrupt")
    first = optimize(loaders, model, get_optimizer(model, "Adam", 1e-3), interrupted, 4, save_path, device=device)
    assert len(first["train_loss"]) == 1 and save_path.is_file()
    assert "resume=True" in capsys.readouterr().err

    model = small_model()  # a fresh process: new model and optimizer, state comes from the resume file
    resumed = optimize(loaders, model, get_optimizer(model, "Adam", 1e-3), get_loss(), 4, save_path, resume=True, device=device)
    assert all(len(values) == 4 for values in resumed.values())
    assert resumed["train_loss"][0] == first["train_loss"][0], "epoch 1 comes from the interrupted run"
    assert "Resuming after epoch 1" in capsys.readouterr().out


def test_a_nan_in_the_first_epoch_says_that_no_weights_were_saved(loaders, tmp_path, capsys):
    model, save_path = small_model(), tmp_path / "best.pt"
    history = optimize(loaders, model, get_optimizer(model), FailingLoss(0, "nan"), 3, save_path, device=CPU)
    assert history["train_loss"] == []
    err = capsys.readouterr().err
    assert "No weights were saved" in err and "best weights so far" not in err
    assert not save_path.exists()


def test_a_failed_write_stops_training_with_one_line_and_keeps_the_last_good_checkpoint(loaders, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "run_epoch", scripted_run_epoch([1.0, 0.8, 0.6]))
    real_save, calls = train.save_torch, []

    def disk_fills_in_epoch_2(obj, path):
        calls.append(path)
        if len(calls) > 2:  # epoch 1 wrote the best weights and the resume state; epoch 2's best fails
            raise WriteError(f"Cannot write {path}: the disk is full: free some space there, or save somewhere else.")
        return real_save(obj, path)

    monkeypatch.setattr(train, "save_torch", disk_fills_in_epoch_2)
    model, save_path = small_model(), tmp_path / "best.pt"
    history = optimize(loaders, model, get_optimizer(model), get_loss(), 3, save_path, device=CPU)
    assert len(history["train_loss"]) == 2, "stopped in epoch 2"
    err = capsys.readouterr().err.strip()
    assert "the disk is full" in err and f"The best weights so far are in {save_path}" in err and "\n" not in err
    saved = small_model()
    saved.load_state_dict(torch.load(save_path))
    assert weight_marker(saved) == 1


def test_running_out_of_gpu_memory_stops_with_one_line_and_keeps_the_best_checkpoint(loaders, tmp_path, monkeypatch, capsys):
    scripted = scripted_run_epoch([1.0, 0.8])

    def out_of_memory_in_epoch_2(loader, model, loss_fn, optimizer=None, device=None, desc=""):
        if desc == "Epoch 2 train":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")
        return scripted(loader, model, loss_fn, optimizer, device, desc)

    monkeypatch.setattr(train, "run_epoch", out_of_memory_in_epoch_2)
    model, save_path = small_model(), tmp_path / "best.pt"
    history = optimize(loaders, model, get_optimizer(model), get_loss(), 3, save_path, device=CPU)
    assert len(history["train_loss"]) == 1
    assert capsys.readouterr().err == (
        "Stopped in epoch 2: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB). Lower the batch size or "
        f"the image size. The best weights so far are in {save_path}.\n"
    )


def test_a_second_run_keeps_the_first_runs_files_under_a_dated_name(loaders, tmp_path, capsys):
    save_path = tmp_path / "best.pt"
    model = small_model()
    optimize(loaders, model, get_optimizer(model), get_loss(), 1, save_path, device=CPU)
    first_weights = save_path.read_bytes()
    model = small_model()
    optimize(loaders, model, get_optimizer(model), get_loss(), 1, save_path, device=CPU)  # no resume: a new run
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("best_"))
    assert len(kept) == 2 and kept[0].endswith(".pt") and kept[1].endswith(".resume.pt"), kept
    assert (tmp_path / kept[0]).read_bytes() == first_weights
    assert f"Kept the earlier run's files as {tmp_path / kept[0].removesuffix('.pt')}.*" in capsys.readouterr().out
    assert save_path.is_file() and resume_path(save_path).is_file(), "the new run has its own files"


def cosine_run(loaders, save_path, n_epochs, resume=False, lr=1e-2):
    model = small_model()
    optimizer = get_optimizer(model, "AdamW", lr)
    scheduler = get_scheduler(optimizer, "cosine", n_epochs=n_epochs, warmup_epochs=1)
    return optimize(loaders, model, optimizer, get_loss(), n_epochs, save_path, scheduler=scheduler, resume=resume, device=CPU)


def test_resuming_with_more_epochs_extends_the_schedule_instead_of_training_at_lr_0(loaders, tmp_path, capsys):
    save_path = tmp_path / "best.pt"
    finished = cosine_run(loaders, save_path, 3)
    extended = cosine_run(loaders, save_path, 6, resume=True)
    assert extended["lr"][:3] == finished["lr"]
    reference = cosine_run(loaders, tmp_path / "reference.pt", 6)  # the schedule of a run planned for 6 epochs
    assert extended["lr"][3:] == pytest.approx(reference["lr"][3:])
    assert min(extended["lr"][3:]) > 0
    assert "the learning-rate schedule now spans 6 epochs" in capsys.readouterr().out


def test_resuming_a_finished_run_with_the_same_epochs_does_nothing_and_says_so(loaders, tmp_path, capsys):
    save_path = tmp_path / "best.pt"
    finished = cosine_run(loaders, save_path, 2)
    assert cosine_run(loaders, save_path, 2, resume=True) == finished
    assert "already finished 2 epochs: nothing to do" in capsys.readouterr().out


def test_resuming_with_another_learning_rate_is_refused_in_one_line(loaders, tmp_path):
    save_path = tmp_path / "best.pt"
    cosine_run(loaders, save_path, 2)
    with pytest.raises(ResumeError, match=r"learning rate \[0.001\] here, \[0.01\] in the saved run") as err:
        cosine_run(loaders, save_path, 3, resume=True, lr=1e-3)
    assert "\n" not in str(err.value)


def test_resuming_with_another_number_of_classes_is_refused_in_one_line(loaders, tmp_path):
    save_path = tmp_path / "best.pt"
    model = small_model()
    optimize(loaders, model, get_optimizer(model), get_loss(), 1, save_path, device=CPU)
    other = MyModel(num_classes=5, dropout=0.1, stem_stride=1, widths=(8, 16), blocks_per_stage=(1, 1))
    with pytest.raises(ResumeError, match=r"layer head.3.bias is \[5\] here, \[3\] in the saved run \(another model or number of classes\?\)"):
        optimize(loaders, other, get_optimizer(other), get_loss(), 2, save_path, resume=True, device=CPU)


def test_a_damaged_resume_file_is_refused_in_one_line(loaders, tmp_path):
    save_path = tmp_path / "best.pt"
    resume_path(save_path).write_bytes(b"not a checkpoint")
    model = small_model()
    with pytest.raises(ResumeError, match="the file is damaged"):
        optimize(loaders, model, get_optimizer(model), get_loss(), 2, save_path, resume=True, device=CPU)


def test_a_resumed_run_whose_best_weights_were_deleted_saves_them_again(loaders, tmp_path, capsys):
    save_path = tmp_path / "best.pt"
    cosine_run(loaders, save_path, 2)
    save_path.unlink()
    cosine_run(loaders, save_path, 3, resume=True)
    assert save_path.is_file() and "is missing" in capsys.readouterr().out


def test_optimize_refuses_fewer_than_one_epoch(loaders, tmp_path):
    model = small_model()
    for n_epochs in (0, -1):
        with pytest.raises(ValueError, match=f"n_epochs must be at least 1, got {n_epochs}"):
            optimize(loaders, model, get_optimizer(model), get_loss(), n_epochs, tmp_path / "m.pt", device=CPU)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fast_path", [False, True])
def test_an_interrupted_and_resumed_run_repeats_the_uninterrupted_run_exactly(landmark_data, tmp_path, device, fast_path):
    """With the random generators' states in the resume file, epochs 2-3 draw the same shuffles, augmentations and
    dropout masks as they would have without the interruption (num_workers=0: new worker processes draw new seeds).
    fast_path: the batches come from src.gpu_data, whose generator lives on the device. On a GPU, cuDNN's fastest
    kernels may add in another order from run to run, so there the runs agree to rounding, not to the bit."""

    def run(save_path, loss, resume=False):
        torch.manual_seed(1)
        loaders = get_data_loaders(batch_size=8, num_workers=0, image_size=32)
        if fast_path:
            loaders = device_loaders(loaders, device, image_size=32, num_workers=0)
        model = small_model()
        return optimize(loaders, model, get_optimizer(model, "Adam", 1e-3), loss, 3, save_path, resume=resume,
                        device=device)  # fmt: skip

    uninterrupted = run(tmp_path / "a.pt", get_loss())
    n_batches = len(get_data_loaders(batch_size=8, num_workers=0, image_size=32)["train"]) + 1  # + 1 valid batch
    run(tmp_path / "b.pt", FailingLoss(ok_calls=n_batches + 1, failure="interrupt"))  # stops early in epoch 2
    resumed = run(tmp_path / "b.pt", get_loss(), resume=True)
    if device.type == "cpu":
        assert resumed == uninterrupted
    else:
        assert {key: pytest.approx(values, rel=1e-2) for key, values in uninterrupted.items()} == resumed


def test_a_killed_runs_half_written_files_are_removed_by_the_next_run(loaders, tmp_path):
    save_path = tmp_path / "best.pt"
    for name in (".best.pt.tmp", ".best.resume.pt.tmp"):
        (tmp_path / name).write_bytes(bytes(1000))  # what a kill -9 during a save leaves
    model = small_model()
    optimize(loaders, model, get_optimizer(model), get_loss(), 1, save_path, device=CPU)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "best.resume.pt"]


def test_resume_without_an_earlier_run_starts_from_the_beginning(loaders, tmp_path, capsys):
    model = small_model()
    history = optimize(loaders, model, get_optimizer(model), get_loss(), 1, tmp_path / "m.pt", resume=True, device=CPU)
    assert len(history["train_loss"]) == 1
    assert "starting from epoch 1" in capsys.readouterr().out


def test_interactive_tracking_outside_a_notebook_trains_without_drawing_errors(loaders, tmp_path):
    model = small_model()
    open_before = set(matplotlib.pyplot.get_fignums())
    history = optimize(loaders, model, get_optimizer(model), get_loss(), 2, tmp_path / "m.pt", True, device=CPU)
    assert all(len(values) == 2 and all(math.isfinite(v) for v in values) for values in history.values())
    assert set(matplotlib.pyplot.get_fignums()) == open_before, "the live plot's figure is closed at the end"


def test_a_second_process_training_into_the_same_files_is_refused(loaders, tmp_path):
    save_path = tmp_path / "best.pt"
    other = subprocess.Popen(["sleep", "30"])  # a live process that "holds" the lock
    try:
        (tmp_path / ".best.pt.lock").write_text(str(other.pid))
        model = small_model()
        with pytest.raises(ResumeError, match=f"Another training run \\(process {other.pid}\\) is writing"):
            optimize(loaders, model, get_optimizer(model), get_loss(), 1, save_path, device=CPU)
    finally:
        other.kill()
        other.wait()
    optimize(loaders, model, get_optimizer(model), get_loss(), 1, save_path, device=CPU)  # a dead owner: taken over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "best.resume.pt"], "the lock is released"


