"""The few ArviZ calls model choice makes, read the same way on ArviZ 0.x and 1.x.

Only ``from_dict``, ``loo``, ``compare`` and ``summary`` are used. ArviZ 0.x names the
fields and columns ``elpd_loo``/``p_loo`` and takes ``from_dict(posterior=...)``; 1.x names
them ``elpd``/``p`` and takes ``from_dict({"posterior": ...})``. Every difference goes
through the readers below, so that the rest of :mod:`probgen.model_choice` sees one record.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

__all__ = [
    "arviz",
    "inference_data",
    "read_compare",
    "read_diagnostics",
    "read_elpd",
    "summary",
    "warning_notes",
]


def arviz():
    """The ArviZ module (imported when first needed: it is slow to import)."""
    import arviz as az

    return az


def _from_dict_takes_groups(az) -> bool:
    """ArviZ 1.x: ``from_dict({"posterior": {...}, ...})``; 0.x: ``from_dict(posterior=...)``."""
    try:
        params = list(inspect.signature(az.from_dict).parameters)
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] != "posterior"


def inference_data(posterior: dict[str, np.ndarray], log_likelihood: dict[str, np.ndarray],
                   observed_data: dict[str, np.ndarray], *, az=None):
    """ArviZ data with three groups, on either ArviZ API.

    Parameters
    ----------
    posterior : dict of str to array (C, S, ...)
    log_likelihood : dict of str to array (C, S, N)
        Per-observation log-likelihood of every draw.
    observed_data : dict of str to array (N, ...)
    az : module, optional
        The ArviZ module (default: ``import arviz``).
    """
    az = az or arviz()
    groups = {"posterior": posterior, "log_likelihood": log_likelihood,
              "observed_data": observed_data}
    if _from_dict_takes_groups(az):
        return az.from_dict(groups)
    return az.from_dict(**groups)


def _field(obj, names: tuple[str, ...]):
    """The first of ``names`` that ``obj`` has, as an item (0.x Series) or attribute (1.x)."""
    for name in names:
        try:
            return obj[name]
        except (KeyError, TypeError, IndexError, AttributeError):
            pass
        if not isinstance(obj, dict) and hasattr(obj, name):
            return getattr(obj, name)
    have = list(getattr(obj, "index", [])) or [a for a in dir(obj) if not a.startswith("_")]
    raise KeyError(f"none of {list(names)} found in the ArviZ result; it has {have}")


def read_elpd(result) -> dict[str, Any]:
    """``elpd``, ``se``, ``p``, ``pareto_k`` (array or None), ``good_k`` from ``arviz.loo``.

    ArviZ 0.x returns a pandas Series with ``elpd_loo``, ``se``, ``p_loo``, ``pareto_k``;
    1.x a record with attributes ``elpd``, ``se``, ``p``, ``pareto_k``. ``good_k`` is the
    sample-size dependent threshold ``min(1 - 1/log10(S), 0.7)`` of Vehtari et al. (2024),
    0.7 where the result does not carry it.
    """
    try:
        k = _field(result, ("pareto_k",))
        k = None if k is None else np.asarray(getattr(k, "values", k), dtype=float).ravel()
    except KeyError:
        k = None
    try:
        good_k = float(_field(result, ("good_k",)))
    except (KeyError, TypeError):
        good_k = 0.7
    return {
        "elpd": float(_field(result, ("elpd_loo", "elpd"))),
        "se": float(_field(result, ("se", "elpd_loo_se"))),
        "p": float(_field(result, ("p_loo", "p"))),
        "pareto_k": k,
        "good_k": good_k,
    }


def _column(table, names: tuple[str, ...]):
    for name in names:
        if name in table.columns:
            return table[name]
    raise KeyError(f"none of the columns {list(names)} in the compare table; it has "
                   f"{list(table.columns)}")


_COMPARE_COLUMNS = {
    "rank": ("rank",),
    "elpd": ("elpd_loo", "elpd"),
    "p": ("p_loo", "p"),
    "elpd_diff": ("elpd_diff", "d_loo"),
    "weight": ("weight",),
    "se": ("se", "SE"),
    "dse": ("dse", "dSE"),
}


def read_compare(table) -> dict[str, dict[str, float]]:
    """``arviz.compare``'s table as ``{model name: {rank, elpd, p, elpd_diff, weight, se, dse}}``.

    Reads both spellings of the columns (0.x ``elpd_loo``/``p_loo``, 1.x ``elpd``/``p``).
    ``elpd_diff`` is made non-negative (best minus this model) whatever the sign convention.
    """
    cols = {key: _column(table, names) for key, names in _COMPARE_COLUMNS.items()}
    out: dict[str, dict[str, float]] = {}
    for name in table.index:
        row = {key: float(col[name]) for key, col in cols.items()}
        row["rank"] = int(row["rank"])
        row["elpd_diff"] = abs(row["elpd_diff"])
        out[str(name)] = row
    return out


def summary(idata, var_names: list[str], *, az=None):
    """``arviz.summary`` of the diagnostics (R-hat, ESS), unrounded where the API allows it."""
    az = az or arviz()
    attempts = ({"kind": "diagnostics", "round_to": "none"}, {"kind": "diagnostics"}, {})
    last: Exception | None = None
    for kwargs in attempts:
        try:
            return az.summary(idata, var_names=var_names, **kwargs)
        except (TypeError, ValueError) as err:
            last = err
    raise RuntimeError(f"arviz.summary failed with every argument set tried: {last}") from last


def read_diagnostics(table) -> dict[str, float]:
    """Largest R-hat and smallest bulk ESS over the rows of an ``arviz.summary`` table."""
    r_hat = np.asarray(_column(table, ("r_hat", "rhat", "R_hat")), dtype=float)
    ess = np.asarray(_column(table, ("ess_bulk", "ess_mean", "ess")), dtype=float)

    def agg(fn, v):
        v = v[np.isfinite(v)]
        return float(fn(v)) if v.size else float("nan")

    return {"r_hat_max": agg(np.max, r_hat), "ess_bulk_min": agg(np.min, ess)}


def warning_notes(prefix: str, caught) -> list[str]:
    """What ArviZ warned about the estimates (Pareto k, chains), each message once.

    Deprecation notices from inside ArviZ and pandas are about their code, not about the
    estimates, and a user cannot act on them: they are left out.
    """
    skip = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
    seen: list[str] = []
    for w in caught:
        if issubclass(w.category, skip):
            continue
        msg = f"{prefix}: {str(w.message).splitlines()[0]}"
        if msg not in seen:
            seen.append(msg)
    return seen
