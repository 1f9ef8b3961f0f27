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

Every likelihood is labelled with the data's representation and its estimator (see
:mod:`probgen.eval.metrics`). On dequantized data (``data.bin_width`` set) each estimate
of ``log p`` is averaged over ``dequant_draws`` seeded draws of the uniform noise per
example, and ``D log(bin width)`` is added: the dequantization bound on ``log P`` of the
discrete values (:mod:`probgen.data.dequantize`). The same draws serve every estimator and
every model (they depend on ``noise_seed`` only), so paired differences share them.
"""

from __future__ import annotations

import math

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


class _Dequantized:
    """Scores a per-example estimator on ``draws`` noisy copies of ``x`` and forms the bound."""

    def __init__(self, data, x: torch.Tensor, draws: int, noise_seed: int):
        if int(draws) < 1:
            from probgen.errors import ConfigError

            raise ConfigError(f"dequant_draws must be a positive number of noise draws; got {draws}.")
        self.data, self.x, self.draws, self.seed = data, x, int(draws), int(noise_seed)
        self.offset = data.dim * math.log(data.bin_width)  # D log w = -D log 256 on 8-bit data

    def noisy(self):
        """The same ``draws`` noisy copies of ``x`` on every call."""
        gen = torch.Generator(device=self.x.device).manual_seed(self.seed)
        for _ in range(self.draws):
            yield self.data.add_noise(self.x, gen)

    def score(self, fn, batch_size: int, *, desc: str = "", progress: bool = False):
        """(bound per example, other terms averaged over draws, MC variance per example or None)."""
        totals, terms = [], {}
        for xs in self.noisy():
            tot, rest = _batched(fn, xs, batch_size, desc=desc, progress=progress)
            totals.append(tot.double())
            for key, v in rest.items():
                terms.setdefault(key, []).append(v.double())
        v = torch.stack(totals)                                   # (draws, N)
        mean = v.mean(0) + self.offset
        terms = {key: torch.stack(t).mean(0) + (self.offset if key == "reconstruction" else 0.0)
                 for key, t in terms.items() if key != "mc_stderr"}
        mc_var = v.var(0, unbiased=True) / self.draws if self.draws > 1 else None
        return mean, terms, mc_var


@torch.no_grad()
def likelihood_metrics(model, data, split: str = "test", *, k: int | None = None,
                       limit: int | None = None, batch_size: int = 500,
                       per_example: dict | None = None, ais: bool = False, ais_steps: int = 500,
                       parzen: bool = False, progress: bool = False, dequant_draws: int = 4,
                       noise_seed: int = 0) -> dict[str, Metric]:
    """Exact log-likelihood, ELBO and IWAE-k, each where the model has it; with ``ais`` the
    annealed-importance-sampling estimate (``ais_steps`` transitions; see
    :func:`probgen.eval.diagnostics.ais_metric`), with ``parzen`` the Parzen-window estimate
    (with its warning; :func:`probgen.eval.diagnostics.parzen_metric`).

    When ``per_example`` is a dict, the per-example values (tensors (N,)) are stored in it
    under ``log_likelihood``, ``elbo``, ``iwae``, ``ais`` and ``parzen``, for paired
    comparisons between models.

    ``progress`` shows a bar over the examples of each estimate (and the annealing steps of
    AIS) with the rate and time left, on a terminal only (:mod:`probgen.progress`).

    On dequantized data every estimate becomes the dequantization bound (module docstring),
    from ``dequant_draws`` noise draws per example seeded by ``noise_seed``; the per-example
    values stored are the bounds, and each metric's ``extra`` holds the mean Monte Carlo
    standard error per example over the draws.
    """
    model = as_scorable(model)
    store = per_example if per_example is not None else {}
    x = data.split(split)
    if limit is not None:
        x = x[:limit]
    rep = data.representation
    deq = _Dequantized(data, x, dequant_draws, noise_seed) if data.bin_width is not None else None

    def score(fn, bs, desc):
        if deq is None:
            tot, terms = _batched(fn, x, bs, desc=desc, progress=progress)
            mc_se = terms.pop("mc_stderr", None)  # each example's own Monte Carlo error
            return tot, terms, None if mc_se is None else mc_se**2
        return deq.score(fn, bs, desc=desc, progress=progress)

    def label(m: Metric, estimator: str) -> Metric:
        if deq is None:
            return m.describe(rep, estimator, data.dim)
        return m.describe(rep, "dequantization bound", data.dim, inner_estimator=estimator)

    out: dict[str, Metric] = {}
    if callable(getattr(model, "log_prob", None)):
        lp, _, var = score(model.log_prob, batch_size, "log-likelihood")
        out["log_likelihood"] = label(summarize(lp, "nats", extra_var=var), "exact")
        store["log_likelihood"] = lp
    else:
        bounds = [name for name, has in (("ELBO", callable(getattr(model, "elbo", None))),
                                         ("IWAE", callable(getattr(model, "iwae_bound", None))),
                                         ("AIS", ais)) if has]
        out["log_likelihood"] = unavailable(
            "the model has no exact density (no log_prob)"
            + (f"; see its bounds ({', '.join(bounds)})" if bounds else ""), "nats")
    if data.density is not None:
        out["true_log_likelihood"] = summarize(data.density.log_prob(x), "nats").describe(
            rep, "exact", data.dim)
    if callable(getattr(model, "elbo", None)):
        elbo, terms, var = score(model.elbo, batch_size, "ELBO")
        out["elbo"] = label(summarize(elbo, "nats", extra_var=var), "elbo")
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
        iw, iw_terms, var = score(lambda xb: model.iwae_bound(xb, kk),
                                  max(1, min(batch_size, 50_000 // kk)), f"IWAE-{kk}")
        out[f"iwae_{kk}"] = label(summarize(iw, "nats", extra_var=var), f"iwae-{kk}")
        store["iwae"] = iw
        if "khat" in iw_terms:
            from probgen.eval.diagnostics import khat_summary

            out[f"iwae_{kk}"].extra = {**(out[f"iwae_{kk}"].extra or {}),
                                       **khat_summary(iw_terms["khat"])}
    if ais or parzen:
        from probgen.eval import diagnostics

        # on dequantized data one noise draw per example (the first of the draws above)
        xs = x if deq is None else next(deq.noisy())
        xv = data.split("val") if deq is None else data.draw("val", torch.Generator(
            device=x.device).manual_seed(noise_seed + 1))
        if ais and callable(getattr(model, "ais", None)):  # a program: AIS over its traces
            res = model.ais(xs, n_steps=ais_steps, n_chains=32, batch_size=50)
            out["ais"] = _shift(diagnostics.ais_result_metric(res, per_example=store), deq, store,
                                "ais")
            label(out["ais"], "ais")
        elif ais:
            out["ais"] = _shift(diagnostics.ais_metric(
                model, xs, x_val=xv, n_steps=ais_steps, per_example=store, progress=progress),
                deq, store, "ais")
            label(out["ais"], "ais")
        if parzen:
            out["parzen"] = _shift(diagnostics.parzen_metric(model, xs, xv[:1000], per_example=store),
                                   deq, store, "parzen")
            label(out["parzen"], "parzen")
    return out


def _shift(m: Metric, deq, store: dict, key: str) -> Metric:
    """Add the dequantization offset ``D log w`` to a metric scored on one noisy draw."""
    if deq is None:
        return m
    if m.value is not None:
        m.value += deq.offset
    if key in store:
        store[key] = store[key] + deq.offset
    return m


def evaluate(model, data, split: str = "test", *, k: int | None = None,
             n_samples: int | None = None, limit: int | None = None, ais: bool = False,
             ais_steps: int = 500, parzen: bool = False, model_name: str | None = None,
             per_example: dict | None = None, progress: bool = False, dequant_draws: int = 4,
             noise_seed: int = 0) -> dict:
    """Every metric ``model`` allows on ``data[split]``, in the one results schema.

    ``model`` is a model with (some of) the protocol's methods, or a Pyro program: a
    ``(model, guide)`` pair or an object with ``model`` and ``guide`` (and optionally
    ``sample``), scored from its traces (:mod:`probgen.inference.program_bounds`; its name in
    the results is the model function's or the object's class). With ``per_example`` (a dict)
    the per-example values are stored in it for paired comparisons (see
    :func:`likelihood_metrics`).

    ``progress`` shows bars over the likelihood estimates (on a terminal only; the values do
    not depend on it).

    Returns ``{"model", "dataset", "split", "n", "representation", "metrics": {NAME:
    {"value", "stderr", "unit", "representation", "estimator", ...}}}`` (the fields of
    :mod:`probgen.eval.metrics`); ``dequant_draws`` and ``noise_seed`` as in
    :func:`likelihood_metrics`.
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
                                      progress=progress, dequant_draws=dequant_draws,
                                      noise_seed=noise_seed))
    metrics.update(_sample_metrics(model, data, split, n_samples=n_samples))
    return {
        "model": model_name or type(model).__name__,
        "dataset": data.name,
        "split": split,
        "n": int(n),
        "representation": data.representation,
        **({"bin_width": data.bin_width, "dequant_draws": int(dequant_draws)}
           if data.bin_width is not None else {}),
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
    feature-network distances (and the class histogram) on labelled images; on vector data
    (toy sets, a user's arrays) the energy distance, the MMD and the true log-density of the
    samples where the data set has one (:func:`probgen.eval.samples.vector_sample_metrics`)."""
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
    if data.kind != "image":
        from probgen.eval import samples

        out.update(samples.vector_sample_metrics(model, data, split, n_samples=n_samples))
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
