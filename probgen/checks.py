"""Checks of arguments given in Python: one message for each kind of mistake.

Every function takes the argument's name and its value, returns the value (converted where
that is safe) and raises :class:`~probgen.errors.ConfigError` naming the argument, what it
must be and what it got. Used by the algorithms (``probgen.inference``), the models and the
evaluation layer alike; this module imports nothing of probgen but its errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from probgen.errors import ConfigError, suggest

__all__ = ["int_at_least", "one_of", "positive_float", "positive_int", "probability"]


def int_at_least(name: str, value, minimum: int) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return value


def positive_int(name: str, value) -> int:
    """``value`` if it is an int >= 1 (not a bool)."""
    return int_at_least(name, value, 1)


def positive_float(name: str, value) -> float:
    """``float(value)`` if it is a positive finite number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not (v > 0 and math.isfinite(v)):
        raise ConfigError(f"{name} must be a positive finite number; got {value!r}.")
    return v


def probability(name: str, value, *, low_open: bool = True, high_open: bool = True) -> float:
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


def one_of(name: str, value, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; the error suggests the nearest one."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}."
                          + suggest(str(value), choices))
    return value
