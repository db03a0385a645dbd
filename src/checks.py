"""Checks for settings, shared by the command lines (as argparse types) and the library functions they call.

A bad value gets one line saying what is wrong, before any work starts:

    python -m src.train --epochs 0    ->  error: argument --epochs: must be at least 1, got 0
    optimize(..., n_epochs=0)         ->  ValueError: n_epochs must be at least 1, got 0
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, NoReturn


class OptionError(ValueError, argparse.ArgumentTypeError):
    """A setting out of range. A ValueError for Python callers; argparse prints it as `argument --x: <message>`."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr, `error: argument --top-k: must be at least 1, got 0`, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (--help lists the options)\n")


def _fail(name: str | None, requirement: str, value: object) -> OptionError:
    return OptionError(f"{name + ' ' if name else ''}must be {requirement}, got {value!r}")


def check_int(value: int, minimum: int, name: str | None = None, maximum: int | None = None) -> int:
    """value if it is a whole number in [minimum, maximum], else OptionError ('batch_size must be at least 1, got 0')."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, "a whole number", value)
    if value < minimum or (maximum is not None and value > maximum):
        raise _fail(name, f"at least {minimum}" if maximum is None else f"in [{minimum}, {maximum}]", value)
    return value


def check_float(
    value: float, low: float = -math.inf, high: float = math.inf, name: str | None = None, *,
    low_open: bool = False, high_open: bool = False,
) -> float:  # fmt: skip
    """value if it is a finite number in [low, high] (an end marked *_open excluded), else OptionError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(name, "a finite number", value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        if high == math.inf:
            requirement = f"{'greater than' if low_open else 'at least'} {low:g}"
        elif low == -math.inf:
            requirement = f"{'less than' if high_open else 'at most'} {high:g}"
        else:
            requirement = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise _fail(name, requirement, value)
    return float(value)


def int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number >= minimum (and <= maximum, if given)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise OptionError(f"must be a whole number, got {text!r}") from None
        return check_int(value, minimum, maximum=maximum)

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


def float_in(low: float = -math.inf, high: float = math.inf, *, low_open=False, high_open=False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (ends marked *_open excluded)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise OptionError(f"must be a number, got {text!r}") from None
        return check_float(value, low, high, low_open=low_open, high_open=high_open)

    parse.__name__ = "float_in_range"
    return parse


def check_fraction(value: float, name: str | None = None) -> float:
    """value in [0, 1): a dropout probability or a label-smoothing amount."""
    return check_float(value, 0.0, 1.0, name, high_open=True)


def check_num_workers(value: int, name: str | None = "num_workers") -> int:
    """-1 (every core), 0 (load in the main process) or a number of worker processes."""
    return check_int(value, -1, name)


# argparse types for the options every command line shares
POSITIVE_INT = int_at_least(1)
NUM_WORKERS = int_at_least(-1)
POSITIVE_FLOAT = float_in(0.0, low_open=True)
NON_NEGATIVE_FLOAT = float_in(0.0)
FRACTION = float_in(0.0, 1.0, high_open=True)


def error_line(err: BaseException) -> str:
    """One line for any exception. A TorchScript error is a traceback of scripted code: its last line is the cause."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    line = (lines[-1] if "TorchScript" in lines[0] else lines[0]) if lines else ""
    return line if ":" in line else f"{type(err).__name__}: {line}".rstrip(": ")
