"""Choosing a setting from a grid by its score on validation data.

Used for the width of AIS's Gaussian observation model (:func:`probgen.inference.ais.select_sigma`)
and the Parzen bandwidth (:func:`probgen.inference.parzen.select_bandwidth`): the best value
is the one with the highest finite score, and a best value at either end of a grid of more
than one value is flagged, since a better one may lie beyond it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

__all__ = ["best_on_grid"]


def best_on_grid(grid: Sequence[float], scores: Sequence[float], what: str, *,
                 stacklevel: int = 2) -> int:
    """Index of the highest finite score; warns when it is at an end of the grid.

    Parameters
    ----------
    grid : sequence of float
        The values tried, in increasing order.
    scores : sequence of float
        The validation score of each (higher is better; NaN and -inf never win).
    what : str
        What the grid holds, for the warning ("observation width sigma").
    stacklevel : int
        Passed to :func:`warnings.warn`, counted from the caller of this function.
    """
    best = max(range(len(grid)), key=lambda i: scores[i] if math.isfinite(scores[i]) else -math.inf)
    if len(grid) > 1 and best in (0, len(grid) - 1):
        warnings.warn(
            f"the best {what} {grid[best]:.4g} is at the {'lower' if best == 0 else 'upper'} end "
            f"of the grid [{grid[0]:.4g}, {grid[-1]:.4g}]; extend the grid in that direction.",
            UserWarning, stacklevel=stacklevel + 1)
    return best
