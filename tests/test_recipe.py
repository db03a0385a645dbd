"""Specification of src/recipe.py: the one place for training settings, read by the command line and the notebooks."""

import dataclasses

import pytest

from src import recipe
from src.recipe import SCRATCH, TRANSFER, recipe_for, warmup_epochs
from src.train_cli import parse_args
from src.transfer import build_model


def test_each_model_kind_has_its_recipe():
    assert recipe_for("scratch") is SCRATCH
    assert all(recipe_for(name) is TRANSFER for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"))
    assert SCRATCH.epochs > TRANSFER.epochs, "a pretrained backbone needs fewer epochs"


@pytest.mark.parametrize("model, expected", [("scratch", SCRATCH), ("efficientnet_lite0", TRANSFER)])
def test_the_command_line_takes_every_setting_it_is_not_given_from_the_recipe(model, expected, tmp_path):
    args = parse_args(["--model", model, "--save-path", str(tmp_path / "m.pt")])
    assert {field.name: getattr(args, field.name) for field in dataclasses.fields(expected)} == vars(expected)


def test_a_setting_given_on_the_command_line_wins(tmp_path):
    args = parse_args(["--lr", "0.01", "--epochs", "3", "--save-path", str(tmp_path / "m.pt")])
    assert (args.lr, args.epochs, args.weight_decay) == (0.01, 3, SCRATCH.weight_decay)


def test_a_changed_recipe_changes_the_command_lines_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(recipe, "SCRATCH", dataclasses.replace(SCRATCH, lr=0.123, label_smoothing=0.0))
    args = parse_args(["--save-path", str(tmp_path / "m.pt")])
    assert (args.lr, args.label_smoothing) == (0.123, 0.0)


def test_models_get_the_recipes_dropout_unless_told_otherwise():
    assert build_model("scratch", 3, 64).head[2].p == SCRATCH.dropout
    assert build_model("efficientnet_lite0", 3, 64).head[0].p == TRANSFER.dropout
    assert build_model("scratch", 3, 64, dropout=0.1).head[2].p == 0.1


@pytest.mark.parametrize("n_epochs, expected", [(1, 0), (2, 1), (15, 1), (40, 2), (80, 4)])
def test_the_warm_up_is_about_5_percent_of_the_run(n_epochs, expected):
    assert warmup_epochs(n_epochs) == expected
