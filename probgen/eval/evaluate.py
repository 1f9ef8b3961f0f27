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

Which estimators run, on which models, with which options, is the table of
:mod:`probgen.eval.registry`: :func:`evaluate` runs every registered estimator that applies
and is turned on, each given a :class:`ScoringContext` (the model, the data, the examples, the
options, the dequantization machinery). It never asks which class a model is. A Pyro program, a ``(model, guide)`` pair or an
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

from typing import TYPE_CHECKING

from probgen.errors import ConfigError
from probgen.eval.metrics import Metric, unavailable

if TYPE_CHECKING:  # torch is imported where it is used: the command line imports this package
    import torch

__all__ = ["evaluate", "likelihood_metrics", "as_scorable", "ScoringContext", "scored_data"]


def _per_example(values) -> tuple[torch.Tensor, dict]:
    """Accept a tensor or a record with ``.total`` (and other per-example terms)."""
    import torch

    if isinstance(values, torch.Tensor):
        return values, {}
    if isinstance(values, dict):
        d = dict(values)
        return d.pop("total"), d
    total = values.total
    others = {k: v for k, v in vars(values).items() if k != "total" and isinstance(v, torch.Tensor)}
    return total, others


def _batched(fn, x: torch.Tensor, batch_size: int, *, desc: str = "", progress: bool = False):
    import torch

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
        self.offset = data.bound_offset  # D log w = -D log 256 on 8-bit data

    def noisy(self):
        """The same ``draws`` noisy copies of ``x`` on every call."""
        import torch

        gen = torch.Generator(device=self.x.device).manual_seed(self.seed)
        for _ in range(self.draws):
            yield self.data.add_noise(self.x, gen)

    def score(self, fn, batch_size: int, *, desc: str = "", progress: bool = False):
        """(bound per example, other terms averaged over draws, MC variance per example or None)."""
        import torch

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


class ScoringContext:
    """What an estimator of :mod:`probgen.eval.registry` gets: the model, the data, the
    examples, the options, and the dequantization machinery.

    Attributes: ``model``, ``data``, ``split``, ``x`` (the examples scored, (N, *shape)),
    ``options`` (every estimator option, resolved), ``store`` (per-example values, by metric
    key), ``batch_size``, ``n_samples``, ``progress``, ``noise_seed``.
    """

    def __init__(self, model, data, split, x, options, store, *, batch_size=500, n_samples=None,
                 progress=False, dequant_draws=4, noise_seed=0, reload=None):
        self.model, self.data, self.split, self.x = model, data, split, x
        self.options, self.store = options, store
        self.batch_size, self.n_samples, self.progress = batch_size, n_samples, progress
        self.noise_seed = int(noise_seed)
        self.deq = _Dequantized(data, x, dequant_draws, noise_seed) if data.bin_width is not None else None
        self._reload = reload
        self._views: dict = {}

    def score(self, fn, batch_size: int, desc: str):
        """``fn`` (x -> per-example values or a record) on every example: ``(values (N,),
        other terms, Monte Carlo variance per example or None)``; on dequantized data the
        dequantization bound over the seeded noise draws (module docstring)."""
        if self.deq is None:
            tot, terms = _batched(fn, self.x, batch_size, desc=desc, progress=self.progress)
            mc_se = terms.pop("mc_stderr", None)  # each example's own Monte Carlo error
            return tot, terms, None if mc_se is None else mc_se**2
        return self.deq.score(fn, batch_size, desc=desc, progress=self.progress)

    def label(self, m: Metric, estimator: str, data=None) -> Metric:
        """``m`` labelled with the representation of ``data`` (default: the context's), its
        estimator, bits/dim, and the identity of the test points it scored
        (``extra["scored"]``: see :func:`scored_data`)."""
        data = self.data if data is None else data
        if data.bin_width is None:
            m.describe(data.representation, estimator, data.dim)
        else:
            m.describe(data.representation, "dequantization bound", data.dim,
                       inner_estimator=estimator)
        if m.value is not None:
            n = (m.extra or {}).get("n")
            m.extra = {**(m.extra or {}), "scored": scored_data(data, self.split, n)}
        return m

    def one_draw(self):
        """``(x, validation examples)`` with one seeded noise draw each on dequantized data
        (the first of the draws :meth:`score` uses), else as they are."""
        import torch

        if self.deq is None:
            return self.x, self.data.split("val")
        xv = self.data.draw("val", torch.Generator(device=self.x.device).manual_seed(self.noise_seed + 1))
        return next(self.deq.noisy()), xv

    def shift(self, m: Metric, key: str) -> Metric:
        """Add the dequantization offset ``D log w`` to a metric scored on one noisy draw
        (and to its per-example values in ``store[key]``)."""
        if self.deq is None:
            return m
        if m.value is not None:
            m.value += self.deq.offset
        if key in self.store:
            self.store[key] = self.store[key] + self.deq.offset
        return m

    def reload(self, data_options: dict):
        """The same data loaded with other data options (``{"binarize", "value_range",
        "dequantize"}``), by the loader the caller gave (``None`` when none was given)."""
        if self._reload is None:
            return None
        key = repr(sorted(data_options.items()))
        if key not in self._views:
            self._views[key] = self._reload(dict(data_options))
        return self._views[key]


_FINGERPRINTS: dict = {}


def scored_data(data, split: str, n: int | None = None) -> dict:
    """The identity of the examples a likelihood scored: ``{"split", "n", "sha256",
    "bin_width", "value_range"}``, ``sha256`` of the whole split's stored values (lower bin
    edges on dequantized data), so that two models scored the same test points exactly when
    their ``sha256`` and ``bin_width`` agree (the first ``min(n)`` examples then match)."""
    import hashlib

    import torch

    x = data.split(split)
    key = (id(x), x.data_ptr(), tuple(x.shape))
    if key not in _FINGERPRINTS:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        _FINGERPRINTS.clear()
        _FINGERPRINTS[key] = hashlib.sha256(arr.tobytes()).hexdigest()[:16]
    return {"split": split, "n": int(x.shape[0] if n is None else n), "sha256": _FINGERPRINTS[key],
            "bin_width": data.bin_width, "value_range": [float(v) for v in data.value_range]}


def likelihood_metrics(model, data, split: str = "test", *, limit: int | None = None,
                       batch_size: int = 500, per_example: dict | None = None,
                       progress: bool = False, dequant_draws: int = 4, noise_seed: int = 0,
                       reload=None, **options) -> dict[str, Metric]:
    """Every likelihood estimator of :mod:`probgen.eval.registry` that applies to ``model``
    and is turned on: exact log-likelihood, ELBO and IWAE-k where the model has them; with
    ``ais=True`` AIS (``ais_steps`` transitions; :func:`probgen.eval.diagnostics.ais_metric`),
    with ``parzen=True`` the Parzen-window estimate (with its warning), and so on:
    ``options`` are the estimators' options by name (``k=200``; unknown names are an error).

    When ``per_example`` is a dict, the per-example values (tensors (N,)) are stored in it
    under each metric's key (``log_likelihood``, ``elbo``, ``iwae``, ``ais``, ...), for paired
    comparisons between models.

    ``progress`` shows a bar over the examples of each estimate (and the annealing steps of
    AIS) with the rate and time left, on a terminal only (:mod:`probgen.progress`).

    On dequantized data every estimate becomes the dequantization bound (module docstring),
    from ``dequant_draws`` noise draws per example seeded by ``noise_seed``; the per-example
    values stored are the bounds, and each metric's ``extra`` holds the mean Monte Carlo
    standard error per example over the draws. ``reload`` (``data options -> Dataset``) lets
    an estimator score the same data in another representation (the AIS of a decoder scores
    binarised runs on the dequantized images).
    """
    import torch

    with torch.no_grad():
        return _run_estimators("likelihood", model, data, split, limit=limit,
                               batch_size=batch_size, per_example=per_example, progress=progress,
                               dequant_draws=dequant_draws, noise_seed=noise_seed, reload=reload,
                               options=options)


def _run_estimators(kind, model, data, split, *, limit=None, batch_size=500, per_example=None,
                    progress=False, dequant_draws=4, noise_seed=0, reload=None, options=None,
                    n_samples=None) -> dict[str, Metric]:
    from probgen.eval import registry

    model = as_scorable(model)
    opts = registry.resolve_options(options)
    x = data.split(split)
    if limit is not None:
        x = x[:limit]
    ctx = ScoringContext(model, data, split, x, opts, per_example if per_example is not None else {},
                         batch_size=batch_size, n_samples=n_samples, progress=progress,
                         dequant_draws=dequant_draws, noise_seed=noise_seed, reload=reload)
    out: dict[str, Metric] = {}
    for est in list(registry.ESTIMATORS.values()):
        if est.kind != kind or not est.enabled(opts):
            continue
        reason = est.requires(ctx)
        if reason is not None:
            if est.report_absence:
                out[est.metrics[0]] = unavailable(reason, registry.METRICS[est.metrics[0]].unit)
            continue
        out.update(est.compute(ctx))
    return out


def evaluate(model, data, split: str = "test", *, n_samples: int | None = None,
             limit: int | None = None, model_name: str | None = None,
             per_example: dict | None = None, progress: bool = False, dequant_draws: int = 4,
             noise_seed: int = 0, reload=None, **options) -> dict:
    """Every metric ``model`` allows on ``data[split]``, in the one results schema.

    ``model`` is a model with (some of) the protocol's methods, or a Pyro program: a
    ``(model, guide)`` pair or an object with ``model`` and ``guide`` (and optionally
    ``sample``), scored from its traces (:mod:`probgen.inference.program_bounds`; its name in
    the results is the model function's or the object's class). With ``per_example`` (a dict)
    the per-example values are stored in it for paired comparisons (see
    :func:`likelihood_metrics`). ``options`` are the estimators' options
    (:mod:`probgen.eval.registry`: ``k``, ``ais``, ``ais_steps``, ``parzen``, ...).

    ``progress`` shows bars over the likelihood estimates (on a terminal only; the values do
    not depend on it).

    Returns ``{"model", "dataset", "split", "n", "representation", "options", "metrics": {NAME:
    {"value", "stderr", "unit", "representation", "estimator", ...}}}`` (the fields of
    :mod:`probgen.eval.metrics`; ``options`` every estimator option as used);
    ``dequant_draws``, ``noise_seed`` and ``reload`` as in :func:`likelihood_metrics`.

    Raises
    ------
    probgen.errors.ConfigError
        For something with nothing to score, saying what is needed; for an unknown option;
        for a program the trace-based bounds cannot score (no data plate, no observed site, a
        latent the guide misses, ...), naming the site and the fix.
    """
    from probgen.allocator import return_large_blocks
    from probgen.checks import check_positive_int
    from probgen.eval import registry
    from probgen.inference.program_bounds import is_program

    for name, value in (("n_samples", n_samples), ("limit", limit)):
        if value is not None:
            check_positive_int(name, value)
    return_large_blocks()  # the chunked estimates would otherwise fragment the heap
    opts = registry.resolve_options(options)
    scorable = as_scorable(model)
    if model_name is None and (is_program(model) or isinstance(scorable, _TorchDistribution)):
        model_name = scorable.name
    model = scorable
    x = data.split(split)
    n = x.shape[0] if limit is None else min(limit, x.shape[0])
    metrics: dict[str, Metric] = {}
    metrics.update(likelihood_metrics(model, data, split, limit=limit, per_example=per_example,
                                      progress=progress, dequant_draws=dequant_draws,
                                      noise_seed=noise_seed, reload=reload, **opts))
    metrics.update(_sample_metrics(model, data, split, n_samples=n_samples, options=opts))
    return {
        "model": model_name or type(model).__name__,
        "dataset": data.name,
        "split": split,
        "n": int(n),
        "representation": data.representation,
        **({"bin_width": data.bin_width, "dequant_draws": int(dequant_draws)}
           if data.bin_width is not None else {}),
        "options": opts,
        "metrics": {name: m.to_dict() for name, m in metrics.items()},
    }


_SCORING = ("log_prob", "elbo", "iwae_bound", "ais", "log_likelihood", "decode", "sample")


class _TorchDistribution:
    """A ``torch.distributions`` (or Pyro) distribution over one example, with the protocol's
    ``sample(n)``: its ``log_prob`` is an exact likelihood, its ``sample((n,))`` the samples."""

    def __init__(self, dist):
        self.dist = dist
        self.name = type(dist).__name__

    def log_prob(self, x):
        return self.dist.log_prob(x)

    def sample(self, n: int):
        return self.dist.sample((n,))


def as_scorable(model):
    """``model`` itself when the evaluation layer can score it; a Pyro program (see the module
    docstring) wrapped by :func:`probgen.inference.program_bounds.as_program`; a torch (or
    Pyro) distribution over one example given ``sample(n)``; else a
    :class:`probgen.errors.ConfigError` that says what is needed."""
    import torch

    from probgen.inference.program_bounds import as_program, is_program

    if is_program(model):
        return as_program(model)
    if isinstance(model, torch.distributions.Distribution):
        return _TorchDistribution(model)
    if not any(callable(getattr(model, a, None)) for a in _SCORING):
        raise ConfigError(
            f"cannot evaluate {type(model).__name__}: it has none of log_prob(x), elbo(x), "
            f"iwae_bound(x, k), log_likelihood(x, z) or decode(z) (for AIS), or sample(n). Give "
            f"a Pyro program as a (model, guide) pair or an object with model(x) and guide(x) "
            f"methods, or a model with at least one of those methods.")
    return model


def _sample_metrics(model, data, split, *, n_samples=None, options=None) -> dict[str, Metric]:
    """The sample estimators of :mod:`probgen.eval.registry` (mode coverage on toy mixtures,
    feature-network distances on labelled images, ...) for any model with ``sample(n)``."""
    if not callable(getattr(model, "sample", None)):
        if callable(getattr(model, "model", None)) and callable(getattr(model, "guide", None)):
            return {"samples": unavailable(
                "the program has no sample(n): model(x) needs the data for its shapes, so "
                "probgen cannot draw from it by itself; give the object a sample(n) method to "
                "get the sample metrics")}
        return {}
    return _run_estimators("samples", model, data, split, n_samples=n_samples, options=options)
