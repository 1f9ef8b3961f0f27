"""The one evaluation entry point: ask what a model can do, compute every metric it allows.

The evaluation layer sees models only through the protocol of DESIGN.md:

* ``log_prob(x)``            exact log-density per example, nats
* ``elbo(x)``                evidence lower bound per example (may return a record with
                             ``reconstruction`` and ``kl`` terms)
* ``iwae_bound(x, k)``       importance-weighted bound per example
* ``sample(n)``              draws
* ``ais(x, **options)``      an AIS estimate of its own (an
                             :class:`probgen.inference.ais.AISResult`); without it AIS runs on
                             ``latent_dim``, ``prior_log_prob`` and ``log_likelihood`` or
                             ``decode``

It never asks which class a model is. A Pyro program, a ``(model, guide)`` pair or an
object with ``model`` and ``guide`` and none of ``log_prob``, ``elbo`` or ``iwae_bound``, is
given the protocol by :func:`probgen.inference.program_bounds.as_program`: its ELBO, IWAE-k
and AIS are computed from its traces. Something with none of these raises a
:class:`probgen.errors.ConfigError` that says what is needed.
"""

from __future__ import annotations

import torch

from probgen.errors import ConfigError
from probgen.eval.metrics import Metric, summarize, unavailable

__all__ = ["evaluate", "likelihood_metrics", "as_scorable"]


def _per_example(values) -> tuple[torch.Tensor, dict]:
    """Accept a tensor or a record with ``.total`` (and other per-example terms)."""
    if isinstance(values, torch.Tensor):
        return values, {}
    if isinstance(values, dict):
        d = dict(values)
        return d.pop("total"), d
    total = values.total
    others = {k: v for k, v in vars(values).items() if k != "total" and isinstance(v, torch.Tensor)}
    return total, others


def _batched(fn, x: torch.Tensor, batch_size: int, *, desc: str = "", progress: bool = False):
    from probgen.progress import bar as progress_bar

    outs, terms = [], {}
    with progress_bar(x.shape[0], desc=desc, unit="example", progress=progress) as bar:
        for start in range(0, x.shape[0], batch_size):
            tot, rest = _per_example(fn(x[start:start + batch_size]))
            outs.append(tot.detach())
            for k, v in rest.items():
                terms.setdefault(k, []).append(v.detach())
            bar.update(tot.shape[0])
    return torch.cat(outs), {k: torch.cat(v) for k, v in terms.items()}


@torch.no_grad()
def likelihood_metrics(model, data, split: str = "test", *, k: int | None = None,
                       limit: int | None = None, batch_size: int = 500,
                       per_example: dict | None = None, ais: bool = False, ais_steps: int = 500,
                       parzen: bool = False, progress: bool = False) -> dict[str, Metric]:
    """Exact log-likelihood, ELBO and IWAE-k, each where the model has it; with ``ais`` the
    annealed-importance-sampling estimate (``ais_steps`` transitions; see
    :func:`probgen.eval.diagnostics.ais_metric`), with ``parzen`` the Parzen-window estimate
    (with its warning; :func:`probgen.eval.diagnostics.parzen_metric`).

    When ``per_example`` is a dict, the per-example values (tensors (N,)) are stored in it
    under ``log_likelihood``, ``elbo``, ``iwae``, ``ais`` and ``parzen``, for paired
    comparisons between models.

    ``progress`` shows a bar over the examples of each estimate (and the annealing steps of
    AIS) with the rate and time left, on a terminal only (:mod:`probgen.progress`).
    """
    model = as_scorable(model)
    store = per_example if per_example is not None else {}
    x = data.split(split)
    if limit is not None:
        x = x[:limit]
    out: dict[str, Metric] = {}
    if callable(getattr(model, "log_prob", None)):
        lp, _ = _batched(model.log_prob, x, batch_size, desc="log-likelihood", progress=progress)
        out["log_likelihood"] = summarize(lp, "nats")
        store["log_likelihood"] = lp
    else:
        bounds = [name for name, has in (("ELBO", callable(getattr(model, "elbo", None))),
                                         ("IWAE", callable(getattr(model, "iwae_bound", None))),
                                         ("AIS", ais)) if has]
        out["log_likelihood"] = unavailable(
            "the model has no exact density (no log_prob)"
            + (f"; see its bounds ({', '.join(bounds)})" if bounds else ""), "nats")
    if data.density is not None:
        out["true_log_likelihood"] = summarize(data.density.log_prob(x), "nats")
    if callable(getattr(model, "elbo", None)):
        elbo, terms = _batched(model.elbo, x, batch_size, desc="ELBO", progress=progress)
        mc_se = terms.pop("mc_stderr", None)  # each example's own Monte Carlo error
        out["elbo"] = summarize(elbo, "nats", extra_var=None if mc_se is None else mc_se**2)
        store["elbo"] = elbo
        for name, v in terms.items():
            out[f"elbo_{name}"] = summarize(v, "nats")
    else:
        out["elbo"] = unavailable("the model has no latent-variable bound (no elbo)", "nats")
    if callable(getattr(model, "iwae_bound", None)):
        kk = k or 100
        # probgen's models chunk iwae_bound within a memory bound themselves
        # (probgen.inference.bounds.chunk_plan); these batches of about 50,000 samples keep a
        # model that scores all k samples at once within bounds too
        iw, iw_terms = _batched(lambda xb: model.iwae_bound(xb, kk), x,
                                max(1, min(batch_size, 50_000 // kk)), desc=f"IWAE-{kk}",
                                progress=progress)
        out[f"iwae_{kk}"] = summarize(iw, "nats")
        store["iwae"] = iw
        if "khat" in iw_terms:
            from probgen.eval.diagnostics import khat_summary

            out[f"iwae_{kk}"].extra = {**(out[f"iwae_{kk}"].extra or {}),
                                       **khat_summary(iw_terms["khat"])}
    if ais or parzen:
        from probgen.eval import diagnostics

        if ais and callable(getattr(model, "ais", None)):
            res = model.ais(x, n_steps=ais_steps, n_chains=32, batch_size=50)
            out["ais"] = diagnostics.ais_result_metric(res, per_example=store)
        elif ais:
            out["ais"] = diagnostics.ais_metric(model, x, x_val=data.split("val"), n_steps=ais_steps,
                                                per_example=store, progress=progress)
        if parzen:
            out["parzen"] = diagnostics.parzen_metric(model, x, data.split("val")[:1000],
                                                      per_example=store)
    return out


def evaluate(model, data, split: str = "test", *, k: int | None = None,
             n_samples: int | None = None, limit: int | None = None, ais: bool = False,
             ais_steps: int = 500, parzen: bool = False, model_name: str | None = None,
             per_example: dict | None = None, progress: bool = False) -> dict:
    """Every metric ``model`` allows on ``data[split]``, in the one results schema.

    ``model`` is a model with (some of) the protocol's methods, or a Pyro program: a
    ``(model, guide)`` pair or an object with ``model`` and ``guide`` (and optionally
    ``sample``), scored from its traces (:mod:`probgen.inference.program_bounds`; its name in
    the results is the model function's or the object's class). With ``per_example`` (a dict)
    the per-example values are stored in it for paired comparisons (see
    :func:`likelihood_metrics`).

    ``progress`` shows bars over the likelihood estimates (on a terminal only; the values do
    not depend on it).

    Returns ``{"model", "dataset", "split", "n", "metrics": {NAME: {"value", "stderr", "unit"}}}``.

    Raises
    ------
    probgen.errors.ConfigError
        For something with nothing to score, saying what is needed; for a program the
        trace-based bounds cannot score (no data plate, no observed site, a latent the guide
        misses, ...), naming the site and the fix.
    """
    from probgen.inference.program_bounds import is_program

    scorable = as_scorable(model)
    if model_name is None and is_program(model):
        model_name = scorable.name
    model = scorable
    x = data.split(split)
    n = x.shape[0] if limit is None else min(limit, x.shape[0])
    metrics: dict[str, Metric] = {}
    metrics.update(likelihood_metrics(model, data, split, k=k, limit=limit, per_example=per_example,
                                      ais=ais, ais_steps=ais_steps, parzen=parzen,
                                      progress=progress))
    metrics.update(_sample_metrics(model, data, split, n_samples=n_samples))
    return {
        "model": model_name or type(model).__name__,
        "dataset": data.name,
        "split": split,
        "n": int(n),
        "metrics": {name: m.to_dict() for name, m in metrics.items()},
    }


_SCORING = ("log_prob", "elbo", "iwae_bound", "ais", "log_likelihood", "decode", "sample")


def as_scorable(model):
    """``model`` itself when the evaluation layer can score it; a Pyro program (see the module
    docstring) wrapped by :func:`probgen.inference.program_bounds.as_program`; else a
    :class:`probgen.errors.ConfigError` that says what is needed."""
    from probgen.inference.program_bounds import as_program, is_program

    if is_program(model):
        return as_program(model)
    if not any(callable(getattr(model, a, None)) for a in _SCORING):
        raise ConfigError(
            f"cannot evaluate {type(model).__name__}: it has none of log_prob(x), elbo(x), "
            f"iwae_bound(x, k), log_likelihood(x, z) or decode(z) (for AIS), or sample(n). Give "
            f"a Pyro program as a (model, guide) pair or an object with model(x) and guide(x) "
            f"methods, or a model with at least one of those methods.")
    return model


def _sample_metrics(model, data, split, *, n_samples=None) -> dict[str, Metric]:
    """Sample-based metrics for any model with ``sample(n)``: mode coverage on toy mixtures,
    feature-network distances (and the class histogram) on labelled images."""
    if not callable(getattr(model, "sample", None)):
        if callable(getattr(model, "model", None)) and callable(getattr(model, "guide", None)):
            return {"samples": unavailable(
                "the program has no sample(n): model(x) needs the data for its shapes, so "
                "probgen cannot draw from it by itself; give the object a sample(n) method to "
                "get the sample metrics")}
        return {}
    out: dict[str, Metric] = {}
    if data.density is not None and getattr(data.density, "means", None) is not None:
        from probgen.eval import modes

        out.update(modes.mode_metrics(model, data, n_samples=n_samples or 2500))
    if data.kind == "image" and data.labels(split) is not None and data.train_labels is not None:
        from probgen.eval import samples

        out.update(samples.image_sample_metrics(model, data, split, n_samples=n_samples))
    elif data.kind == "image":
        reason = (f"needs class labels: the feature network is a classifier trained on them, and "
                  f"data set {data.name!r} has none for its train and {split} splits")
        for name in ("frechet_distance", "kernel_distance", "precision", "recall", "density",
                     "coverage", "class_histogram"):
            out[name] = unavailable(reason)
    return out
