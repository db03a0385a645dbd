"""Specification of src/checks.py: one line for a bad setting, the same from argparse and from Python."""

import argparse
import math

import pytest

from src.checks import FRACTION, NUM_WORKERS, POSITIVE_FLOAT, POSITIVE_INT, OptionError, check_float, check_int


def parse(option_type, text: str):
    parser = argparse.ArgumentParser(prog="prog")
    parser.add_argument("--x", type=option_type)
    return parser.parse_args(["--x", text]).x


@pytest.mark.parametrize(
    "option_type, text, message",
    [
        (POSITIVE_INT, "0", "argument --x: must be at least 1, got 0"),
        (POSITIVE_INT, "-1", "argument --x: must be at least 1, got -1"),
        (POSITIVE_INT, "2.5", "argument --x: must be a whole number, got '2.5'"),
        (NUM_WORKERS, "-2", "argument --x: must be at least -1, got -2"),
        (POSITIVE_FLOAT, "0", "argument --x: must be greater than 0, got 0.0"),
        (POSITIVE_FLOAT, "nan", "argument --x: must be a finite number, got nan"),
        (POSITIVE_FLOAT, "abc", "argument --x: must be a number, got 'abc'"),
        (FRACTION, "1", "argument --x: must be in [0, 1), got 1.0"),
        (FRACTION, "-0.1", "argument --x: must be in [0, 1), got -0.1"),
    ],
)
def test_argparse_prints_one_line_naming_the_option_and_the_rule(capsys, option_type, text, message):
    with pytest.raises(SystemExit) as exit_info:
        parse(option_type, text)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"prog: error: {message}"


def test_good_values_pass_through_converted():
    assert parse(POSITIVE_INT, "3") == 3 and parse(NUM_WORKERS, "-1") == -1
    assert parse(FRACTION, "0") == 0.0 and parse(POSITIVE_FLOAT, "1e-3") == 1e-3


def test_python_callers_get_a_value_error_naming_the_parameter():
    with pytest.raises(ValueError, match=r"^batch_size must be at least 1, got 0$"):
        check_int(0, 1, "batch_size")
    with pytest.raises(OptionError, match=r"^epochs must be a whole number, got True$"):
        check_int(True, 1, "epochs")
    with pytest.raises(ValueError, match=r"^lr must be at most 1, got 2$"):
        check_float(2, high=1, name="lr")
    with pytest.raises(ValueError, match=r"^lr must be a finite number, got inf$"):
        check_float(math.inf, 0, name="lr")
    assert check_float(0.5, 0, 1, "dropout", high_open=True) == 0.5
