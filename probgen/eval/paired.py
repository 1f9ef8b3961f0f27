"""Two models scored on the same test points: the paired difference and its standard error.

When models A and B are scored on the same N points, the per-point values ``a_n`` and
``b_n`` are correlated (a point that is hard for one model is usually hard for the other).
The standard error of the mean difference is then that of the per-point differences,

    SE_paired = sd(a - b) / sqrt(N),   var(a - b) = var(a) + var(b) - 2 cov(a, b),

which is smaller than the unpaired ``sqrt(var(a)/N + var(b)/N)`` whenever the covariance is
positive. This is the estimator of the paired t-test (Student, 1908), and the one ArviZ's
``compare`` uses for ``dse`` (Vehtari, Gelman and Gabry, 2017, section 5.2).

References
----------
Student (1908). The probable error of a mean. Biometrika 6(1).
Vehtari, A., Gelman, A. and Gabry, J. (2017). Practical Bayesian model evaluation using
leave-one-out cross-validation and WAIC. Statistics and Computing 27(5).
"""

from __future__ import annotations

import inspect
import math
import warnings
from pathlib import Path

import torch

from probgen.errors import DataError
from probgen.eval.metrics import Metric

__all__ = ["paired_difference", "plot_per_example"]


def _vector(v, name: str) -> torch.Tensor:
    v = torch.as_tensor(v).detach()
    if v.dim() != 1:
        raise DataError(f"{name} must be per-example values of shape (N,); got shape "
                        f"{tuple(v.shape)}. Pass one value per test point.")
    return v.double().cpu()


def paired_difference(a: torch.Tensor, b: torch.Tensor, unit: str = "nats") -> Metric:
    """Mean of ``a - b`` over the same points, with its paired standard error.

    Parameters
    ----------
    a, b : Tensor (N,)
        Per-example values of two models on the same N points, in the same order
        (e.g. log-likelihoods in nats).
    unit : str

    Returns
    -------
    Metric
        ``value`` = mean(a - b), ``stderr`` = sd(a - b) / sqrt(N) (sample sd, N - 1);
        ``extra`` holds ``n``, ``mean_a``, ``mean_b``, ``unpaired_stderr``
        (``sqrt(var(a)/N + var(b)/N)``) and ``correlation`` of a and b. With non-finite
        values, ``value`` is NaN and ``reason`` says how many.
    """
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.shape != b.shape:
        raise DataError(f"a and b must score the same points: got {a.shape[0]} and "
                        f"{b.shape[0]} values. Evaluate both models on the same test set.")
    n = a.shape[0]
    if n < 2:
        raise DataError(f"a standard error needs at least 2 paired values; got {n}.")
    bad = int((~torch.isfinite(a) | ~torch.isfinite(b)).sum())
    if bad:
        return Metric(value=float("nan"), stderr=None, unit=unit,
                      reason=f"{bad} of {n} pairs hold a non-finite value")
    d = a - b
    va, vb = a.var(unbiased=True), b.var(unbiased=True)
    cov = ((a - a.mean()) * (b - b.mean())).sum() / (n - 1)
    denom = math.sqrt(float(va) * float(vb))
    return Metric(
        value=float(d.mean()),
        stderr=float(d.std(unbiased=True) / math.sqrt(n)),
        unit=unit,
        extra={
            "n": n,
            "mean_a": float(a.mean()),
            "mean_b": float(b.mean()),
            "unpaired_stderr": float(torch.sqrt(va / n + vb / n)),
            "correlation": float(cov) / denom if denom > 0 else float("nan"),
        },
    )


def _panels(values: dict[str, torch.Tensor], differences: bool) -> dict[str, torch.Tensor]:
    if not values:
        raise DataError("values is empty; give {model name: per-example values (N,)}.")
    panels = {name: _vector(v, f"values[{name!r}]") for name, v in values.items()}
    sizes = {name: v.shape[0] for name, v in panels.items()}
    if len(set(sizes.values())) > 1:
        raise DataError(f"every model must be scored on the same points; got sizes {sizes}.")
    if differences and len(panels) > 1:
        names = list(panels)
        first = panels[names[0]]
        for other in names[1:]:
            panels[f"{names[0]} - {other}"] = first - panels[other]
    return panels


def plot_per_example(values: dict[str, torch.Tensor], path, *, differences: bool = True,
                     az=None) -> Path:
    """The distribution of per-example values of each model, drawn with ArviZ's ``plot_dist``.

    Parameters
    ----------
    values : dict of str to Tensor (N,)
        Per-example values of each model on the same points.
    path : str or Path
        Where to write the PNG (parent folders are created).
    differences : bool
        Also draw the per-example differences of the first model minus each other one.
    az : module, optional
        The ArviZ module (default: ``import arviz``).

    Returns
    -------
    Path
    """
    from probgen.plots import pyplot, save_figure

    az = az or __import__("arviz")
    panels = _panels(values, differences)
    plt = pyplot()
    params = list(inspect.signature(az.plot_dist).parameters)
    if params and params[0] == "values":  # ArviZ 0.x: arrays in, one axis per call
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
        for ax, (name, v) in zip(axes[0], panels.items()):
            with warnings.catch_warnings():
                # ArviZ 0.x calls a matplotlib helper that matplotlib >= 3.11 deprecates.
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="arviz")
                az.plot_dist(v.numpy(), ax=ax, rug=False)
            ax.set_title(name)
            ax.set_xlabel("per-example value")
        fig.tight_layout()
        return save_figure(fig, path)
    # ArviZ 1.x: a DataTree in, one panel per variable; the N values play the draws.
    posterior = {name: v.numpy()[None, :] for name, v in panels.items()}  # (1 chain, N)
    dt = az.from_dict({"posterior": posterior})
    collection = az.plot_dist(dt, backend="matplotlib")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if callable(getattr(collection, "savefig", None)):
        collection.savefig(path)
    else:
        plt.gcf().savefig(path, dpi=110, bbox_inches="tight")
    plt.close("all")
    return path
