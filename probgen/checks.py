"""Checks of counts and rates, shared by the command line, the recipes and the algorithms.

Two forms of one rule each:

- ``positive_int(text)``, ``positive_float(text)``, ``non_negative_float(text)``: argparse
  ``type=`` functions that read a flag's text and raise ``argparse.ArgumentTypeError``;
- ``check_positive_int(name, value)``, ``check_positive_float(name, value)``,
  ``check_int_at_least``, ``check_probability``, ``check_one_of``: for values a Python caller
  passes (the algorithms in ``probgen.inference``, the models, the evaluation layer), raising
  :class:`~probgen.errors.ConfigError` that names the argument, what it must be and what it
  got.

Both say what was expected and what was received. The module imports nothing heavy (no torch),
so that ``probgen --help`` stays fast, and nothing of probgen beyond its errors, so that any
layer -- ``inference/`` included -- may use it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from probgen.errors import ConfigError, suggest

__all__ = ["positive_int", "positive_float", "non_negative_float", "int_list",
           "check_positive_int", "check_positive_float", "check_int_at_least",
           "check_probability", "check_one_of"]


def positive_int(text: str) -> int:
    """argparse type of counts (``--epochs``, ``--batch-size``): an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return v


def positive_float(text: str) -> float:
    """argparse type of rates (``--lr``): a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number; got {text!r}")
    return v


def non_negative_float(text: str) -> float:
    """argparse type of tolerances and penalties (``--tol``, ``--alpha``): a finite number >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0; got {text!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0; got {text!r}")
    return v


def int_list(text: str) -> list[int]:
    """argparse type of layer widths (``--hidden 512,256``): comma-separated integers >= 1."""
    try:
        out = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, e.g. 400 or 512,256; got {text!r}") from None
    if not out or any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"layer widths must be positive integers; got {text!r}")
    return out


def check_positive_int(name: str, value) -> int:
    """``value`` if it is an int >= 1 (not a bool); else a :class:`ConfigError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}.")
    return value


def check_positive_float(name: str, value) -> float:
    """``float(value)`` if it is a finite number > 0 (not a bool); else a :class:`ConfigError`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not (v > 0 and math.isfinite(v)):
        raise ConfigError(f"{name} must be a positive finite number; got {value!r}.")
    return v


def check_int_at_least(name: str, value, minimum: int) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return value


def check_probability(name: str, value, *, low_open: bool = True, high_open: bool = True) -> float:
    """``float(value)`` if it lies in the interval from 0 to 1 (open ends by default)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    above = v > 0 if low_open else v >= 0
    below = v < 1 if high_open else v <= 1
    if not (above and below):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ConfigError(f"{name} must lie in {interval}; got {value!r}.")
    return v


def check_one_of(name: str, value, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; the error suggests the nearest one."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}."
                          + suggest(str(value), choices))
    return value
