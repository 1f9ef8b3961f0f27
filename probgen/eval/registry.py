"""The two tables evaluation is driven by: the estimators, and the metrics they write.

An **estimator** (:class:`Estimator`) is a name, the models it applies to (``requires``: a
reason when it does not apply), its options with their defaults and help (:class:`Option`),
and the function that computes its metrics from a :class:`probgen.eval.evaluate.ScoringContext`.
A **metric** (:class:`MetricInfo`) is a key in ``eval.json``, a column title, a unit, which
way is better, a one-line definition for a glossary, why its cell is blank when a row has no
entry for it, and, for likelihoods, where it stands in the preference between estimates of
one model on one representation (exact > AIS > IWAE > ELBO > AIS of the decoder > Parzen).

Everything else reads these tables: ``probgen eval`` and ``probgen compare`` generate their
estimator flags from :data:`ESTIMATORS` (:func:`add_arguments`), :func:`probgen.eval.evaluate`
runs every estimator that applies, ``compare`` takes its columns (:func:`columns`), its
paired preference (:func:`likelihood_preference`) and each row's best likelihood per
representation from :data:`METRICS`, and the report its blank reasons (:func:`blank_reason`)
and glossary (:func:`glossary`). A new estimator is its function (in its own module), one
:func:`register_estimator` call with its :func:`register_metric` calls, and its test.

Option values reach the estimators through ``evaluate(..., **options)`` and
``compare(..., **options)`` under the option's name (``k=200``, ``ais=True``); unknown names
are an error with the nearest valid one suggested.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from probgen.errors import ConfigError, suggest

if TYPE_CHECKING:  # the tables import no torch: the command line builds its flags from them
    from probgen.eval.metrics import Metric

__all__ = ["Option", "MetricInfo", "Estimator", "ESTIMATORS", "METRICS", "COMMANDS",
           "register_metric", "register_estimator", "unregister_estimator", "all_options",
           "resolve_options", "add_arguments", "options_from_args", "columns", "blank_reason",
           "likelihood_preference", "glossary"]

COMMANDS = ("eval", "compare")
_SAME = object()


@dataclass(frozen=True)
class Option:
    """One option of an estimator: a flag of ``probgen eval`` and ``probgen compare``.

    ``type`` is ``int``, ``float`` or ``bool`` (a switch); ``compare_default`` is compare's
    default where it differs from ``default`` (eval's); ``minimum`` the smallest value allowed
    for numbers.
    """

    name: str
    type: type
    default: Any
    help: str
    compare_default: Any = _SAME
    minimum: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def default_for(self, command: str = "eval") -> Any:
        if command == "compare" and self.compare_default is not _SAME:
            return self.compare_default
        return self.default

    def check(self, value: Any) -> Any:
        """``value`` converted to the option's type; a ConfigError naming the flag otherwise."""
        if value is None:
            return None
        if self.type is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{self.flag} ({self.name}) is a switch: True or False; got {value!r}.")
            return value
        try:
            v = self.type(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.flag} ({self.name}) must be {self.type.__name__}; got {value!r}.") from None
        if self.type is int and isinstance(value, float) and value != v:
            raise ConfigError(f"{self.flag} ({self.name}) must be a whole number; got {value!r}.")
        if self.type is float and not math.isfinite(v):
            raise ConfigError(f"{self.flag} ({self.name}) must be a finite number; got {value!r}.")
        if self.minimum is not None and v < self.minimum:
            raise ConfigError(f"{self.flag} ({self.name}) must be at least {self.minimum:g}; got {value!r}.")
        return v


@dataclass(frozen=True)
class MetricInfo:
    """One metric: a key of ``eval.json`` and, with ``column``, a column of compare's table.

    ``likelihood_rank`` (likelihoods only) orders the estimates of one model on one
    representation, lowest first: the one ``compare`` reports as the row's likelihood and
    pairs. ``last_resort`` marks an estimate used only when nothing else is there (Parzen).
    ``group`` places the column: likelihoods first, then sample metrics, then costs (in the
    order of registration within a group).
    """

    key: str
    title: str
    unit: str
    better: str | None
    definition: str
    blank: str = "not computed for this model"
    column: bool = True
    likelihood_rank: int | None = None
    last_resort: bool = False
    group: str = "samples"


_GROUPS = ("likelihood", "samples", "cost")


@dataclass(frozen=True)
class Estimator:
    """One estimator: what it computes, for which models, with which options.

    ``compute(ctx)`` returns ``{metric key: Metric}`` (keys among ``metrics``) and stores
    per-example values in ``ctx.store`` under the metric's key. ``requires(ctx)`` returns
    ``None`` when the estimator applies to ``ctx.model`` on ``ctx.data``, else the reason; with
    ``report_absence`` the estimator's first metric is then written as a blank with that
    reason (else the row simply has no entry, and the metric's ``blank`` explains the cell).
    ``switch`` names the bool option that turns it on (``None``: it runs wherever it applies).
    ``kind`` is ``"likelihood"`` or ``"samples"``.
    """

    name: str
    help: str
    metrics: tuple[str, ...]
    compute: Callable[[Any], dict[str, Metric]]
    requires: Callable[[Any], str | None] = field(default=lambda ctx: None)
    options: tuple[Option, ...] = ()
    switch: str | None = None
    kind: str = "likelihood"
    report_absence: bool = False

    def enabled(self, options: dict) -> bool:
        return self.switch is None or bool(options.get(self.switch))


ESTIMATORS: dict[str, Estimator] = {}
METRICS: dict[str, MetricInfo] = {}


def register_metric(info: MetricInfo) -> MetricInfo:
    """Add a metric to the table (a key may be registered once)."""
    if info.key in METRICS and METRICS[info.key] != info:
        raise ConfigError(f"metric {info.key!r} is already registered.")
    if info.group not in _GROUPS:
        raise ConfigError(f"metric {info.key!r}: group must be one of {', '.join(_GROUPS)}; got {info.group!r}.")
    if info.better not in ("higher", "lower", None):
        raise ConfigError(f"metric {info.key!r}: better must be 'higher', 'lower' or None; got {info.better!r}.")
    METRICS[info.key] = info
    return info


def register_estimator(est: Estimator) -> Estimator:
    """Add an estimator; its metrics must be in the table and its option names new."""
    if est.name in ESTIMATORS:
        raise ConfigError(f"estimator {est.name!r} is already registered.")
    missing = [k for k in est.metrics if k not in METRICS]
    if missing:
        raise ConfigError(f"estimator {est.name!r} writes metrics that are not registered: "
                          f"{', '.join(missing)}; register_metric them first.")
    taken = all_options()
    for o in est.options:
        if o.name in taken:
            raise ConfigError(f"estimator {est.name!r}: option {o.name!r} is already taken.")
    if est.switch is not None and not any(o.name == est.switch and o.type is bool for o in est.options):
        raise ConfigError(f"estimator {est.name!r}: its switch {est.switch!r} must be one of its bool options.")
    if est.kind not in ("likelihood", "samples"):
        raise ConfigError(f"estimator {est.name!r}: kind must be 'likelihood' or 'samples'; got {est.kind!r}.")
    ESTIMATORS[est.name] = est
    return est


def unregister_estimator(name: str, *, metrics: bool = True) -> None:
    """Remove an estimator (and, with ``metrics``, the metrics only it writes)."""
    est = ESTIMATORS.pop(name)
    if metrics:
        used = {k for e in ESTIMATORS.values() for k in e.metrics}
        for k in est.metrics:
            if k not in used:
                METRICS.pop(k, None)


def all_options() -> dict[str, Option]:
    """Every estimator's options by name."""
    return {o.name: o for e in ESTIMATORS.values() for o in e.options}


def resolve_options(given: dict | None = None, command: str = "eval") -> dict:
    """Every option's value: ``given`` checked, the rest ``command``'s defaults."""
    opts = all_options()
    given = dict(given or {})
    unknown = [k for k in given if k not in opts]
    if unknown:
        raise ConfigError(f"unknown evaluation option(s) {', '.join(map(repr, unknown))}."
                          f"{suggest(unknown[0], opts)} Known: {', '.join(opts)}.")
    return {name: (o.check(given[name]) if name in given else o.default_for(command))
            for name, o in opts.items()}


def add_arguments(parser: argparse.ArgumentParser, command: str = "eval") -> None:
    """The estimators' flags on ``parser``, with ``command``'s defaults in their help."""
    group = parser.add_argument_group("estimators")
    for est in ESTIMATORS.values():
        for o in est.options:
            default = o.default_for(command)
            if o.type is bool:
                action = argparse.BooleanOptionalAction if default else "store_true"
                group.add_argument(o.flag, dest=o.name, action=action, default=default,
                                   help=f"{o.help} (default {'on' if default else 'off'})")
            else:
                shown = "unset" if default is None else f"{default:g}" if isinstance(default, float) \
                    else str(default)
                group.add_argument(o.flag, dest=o.name, type=o.type, default=default,
                                   metavar=o.name.upper().split("_")[-1] if o.type is int else "X",
                                   help=f"{o.help} (default {shown})")


def options_from_args(args: argparse.Namespace) -> dict:
    """The estimator options in parsed ``args`` (by their names)."""
    return {name: getattr(args, name) for name in all_options() if hasattr(args, name)}


def columns() -> list[tuple[str, str, str | None]]:
    """Compare's table columns, in order: ``(metric key, title, better)``."""
    cols = [m for m in METRICS.values() if m.column]
    return [(m.key, m.title, m.better) for m in sorted(cols, key=lambda m: _GROUPS.index(m.group))]


def blank_reason(key: str) -> str:
    """Why a row has no entry for metric ``key``."""
    info = METRICS.get(key)
    return info.blank if info is not None else "not computed for this model"


def likelihood_preference() -> list[str]:
    """Likelihood metric keys, the most trusted estimate first."""
    ranked = [m for m in METRICS.values() if m.likelihood_rank is not None]
    return [m.key for m in sorted(ranked, key=lambda m: m.likelihood_rank)]


def glossary(keys=None) -> list[tuple[str, str, str]]:
    """``(title, unit, definition)`` of ``keys`` (default: every column)."""
    keys = [c[0] for c in columns()] if keys is None else list(keys)
    return [(METRICS[k].title, METRICS[k].unit, METRICS[k].definition) for k in keys if k in METRICS]


# ============================================================================ the metrics
_NOT_A_MODEL = "reference row: real validation examples, not a model"
_MANIFOLD_BLANK = ("computed on images with class labels (in the feature network's space) and on "
                   "your own vectors (in standard units); toy sets have the mode metrics instead")
for _m in (
    MetricInfo("log_likelihood", "exact log-lik", "nats", "higher",
               "log p(x) of each test example from the model's own density, mean nats per example",
               "the model has no exact density (no log_prob)", likelihood_rank=0, group="likelihood"),
    MetricInfo("elbo", "ELBO", "nats", "higher",
               "evidence lower bound E_q[log p(x, z) - log q(z | x)] <= log p(x)",
               "the model has no latent-variable bound (no elbo)", likelihood_rank=3,
               group="likelihood"),
    MetricInfo("iwae", "IWAE-k", "nats", "higher",
               "importance-weighted bound with k samples (k in the metric's extra); "
               "ELBO <= IWAE-k <= log p(x)",
               "the model has no importance-weighted bound (no iwae_bound)", likelihood_rank=2,
               group="likelihood"),
    MetricInfo("ais", "AIS", "nats", "higher",
               "annealed importance sampling with HMC on the model's own likelihood: a stochastic "
               "lower bound on log p(x)", "AIS not requested (--ais)", likelihood_rank=1,
               group="likelihood"),
    MetricInfo("parzen", "Parzen", "nats", "higher",
               "Parzen-window estimate from the model's samples: biased, shown for older "
               "literature only", "Parzen window not requested (--parzen)", likelihood_rank=5,
               last_resort=True, group="likelihood"),
    MetricInfo("true_log_likelihood", "true log-lik", "nats", "higher",
               "log-density of the test examples under the data-generating distribution",
               "the data have no known density", group="likelihood"),
    MetricInfo("modes_covered", "modes", "modes", "higher",
               "mixture modes that receive at least a fifth of their expected count of samples "
               "within 3 sigma", "the data are not a mixture with known modes"),
    MetricInfo("high_quality_fraction", "HQ frac", "fraction", "higher",
               "fraction of samples within 3 sigma of their nearest mode",
               "the data are not a mixture with known modes"),
    MetricInfo("reverse_kl", "reverse KL", "nats", "lower",
               "KL(histogram of samples over the modes and one off-mode bin (beyond 3 sigma of "
               "every mode) || true mode and off-mode weights): a model that misses modes or "
               "puts samples between them pays for it", "the data are not a mixture with known modes"),
    MetricInfo("reverse_kl_nearest", "reverse KL (nearest)", "nats", "lower",
               "PacGAN's reverse KL: every sample counted at its nearest mode however far it is "
               "(for comparison with published numbers only)",
               "the data are not a mixture with known modes"),
    MetricInfo("energy_distance", "energy", "", "lower",
               "energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| between samples and test points "
               "(unbiased; 0 for the same distribution; permutation reference in extra)",
               "not vector data"),
    MetricInfo("mmd", "MMD^2", "", "lower",
               "squared maximum mean discrepancy between samples and test points, Gaussian kernel "
               "with the median pooled distance as bandwidth (unbiased; permutation reference in "
               "extra)", "not vector data"),
    MetricInfo("sample_log_density", "sample log-dens", "nats", "higher",
               "mean true log-density of the samples where it is positive, with the share of "
               "samples outside the data's support beside it (the test points' own mean in "
               "extra: the value a perfect sampler reaches)", "the data have no known density"),
    MetricInfo("frechet_distance", "Frechet", "", "lower",
               "Frechet distance between Gaussians fitted to features of samples and of test images",
               "not an image data set with class labels"),
    MetricInfo("kernel_distance", "kernel", "", "lower",
               "kernel (MMD) distance between features of samples and of test images",
               "not an image data set with class labels"),
    MetricInfo("precision", "precision", "fraction", "higher",
               "fraction of samples inside the k-NN balls of test examples (sample quality): in "
               "the feature network's space for images, in the training data's standard units "
               "for your own vectors", _MANIFOLD_BLANK),
    MetricInfo("recall", "recall", "fraction", "higher",
               "fraction of test examples inside the k-NN balls of samples (coverage of the "
               "data), in the same space", _MANIFOLD_BLANK),
    MetricInfo("density", "density", "", "higher",
               "mean number of test examples' k-NN balls a sample falls in, over k, in the same "
               "space", _MANIFOLD_BLANK),
    MetricInfo("coverage", "coverage", "fraction", "higher",
               "fraction of test examples whose k-NN ball holds a sample, in the same space",
               _MANIFOLD_BLANK),
    MetricInfo("class_histogram", "classes", "normalized entropy", "higher",
               "normalized entropy of the classes a classifier assigns to the samples (1: uniform)",
               "not an image data set with class labels"),
    MetricInfo("train_time", "train s", "s", "lower", "seconds of training", _NOT_A_MODEL,
               group="cost"),
):
    register_metric(_m)


# ============================================================================ the estimators
def _exact_log_prob(model, x):
    """The model's exact log-likelihood function on data like ``x``, or None: its
    ``log_prob``, or, for a program whose every latent of an example is summed out (a
    :class:`~probgen.inference.program_bounds.ProgramModel` with ``exact_density(x)``), the
    log p(x) its traces give."""
    if callable(getattr(model, "log_prob", None)):
        return model.log_prob
    exact = getattr(model, "exact_density", None)
    if callable(exact) and exact(x):
        return model.exact_log_prob
    return None


def _exact_requires(ctx) -> str | None:
    if _exact_log_prob(ctx.model, ctx.x[:2]) is not None:
        return None
    bounds = [name for name, has in (("ELBO", callable(getattr(ctx.model, "elbo", None))),
                                     ("IWAE", callable(getattr(ctx.model, "iwae_bound", None))),
                                     ("AIS", ctx.options.get("ais"))) if has]
    return ("the model has no exact density (no log_prob)"
            + (f"; see its bounds ({', '.join(bounds)})" if bounds else ""))


def _exact(ctx) -> dict[str, Metric]:
    from probgen.eval.metrics import summarize

    lp, _, var = ctx.score(_exact_log_prob(ctx.model, ctx.x[:2]), ctx.batch_size, "log-likelihood")
    ctx.store["log_likelihood"] = lp
    return {"log_likelihood": _given(ctx, ctx.label(summarize(lp, "nats", extra_var=var), "exact"))}


def _true_density(ctx) -> dict[str, Metric]:
    from probgen.eval.metrics import summarize

    m = summarize(ctx.data.density.log_prob(ctx.x), "nats")
    return {"true_log_likelihood": m.describe(ctx.data.representation, "exact", ctx.data.dim)}


def _given(ctx, m: Metric) -> Metric:
    """Say on ``m`` which global latents a program's bound holds fixed at the guide's mean
    (``global_latents="condition"``): it is then log p(x | those values), as a fitted
    parameter's likelihood is."""
    names = getattr(ctx.model, "conditioned_names", ())
    if names:
        m.extra = {**(m.extra or {}), "given": f"the guide's mean of {', '.join(names)}"}
    return m


def _elbo(ctx) -> dict[str, Metric]:
    from probgen.eval.metrics import summarize

    elbo, terms, var = ctx.score(ctx.model.elbo, ctx.batch_size, "ELBO")
    ctx.store["elbo"] = elbo
    out = {"elbo": _given(ctx, ctx.label(summarize(elbo, "nats", extra_var=var), "elbo"))}
    for name, v in terms.items():
        out[f"elbo_{name}"] = summarize(v, "nats")
    return out


def _iwae(ctx) -> dict[str, Metric]:
    from probgen.eval.metrics import summarize

    k = ctx.options["k"]
    # probgen's models chunk iwae_bound within a memory bound themselves
    # (probgen.inference.bounds.chunk_plan); these batches of about 50,000 samples keep a
    # model that scores all k samples at once within bounds too
    iw, terms, var = ctx.score(lambda xb: ctx.model.iwae_bound(xb, k),
                               max(1, min(ctx.batch_size, 50_000 // k)), f"IWAE-{k}")
    ctx.store["iwae"] = iw
    m = ctx.label(summarize(iw, "nats", extra_var=var), f"iwae-{k}")
    m.extra = {**(m.extra or {}), "k": k}
    if "khat" in terms:
        from probgen.eval.diagnostics import khat_summary

        m.extra.update(khat_summary(terms["khat"]))
    return {"iwae": _given(ctx, m)}


def _ais(ctx) -> dict[str, Metric]:
    from probgen.eval import diagnostics

    xs, xv = ctx.one_draw()
    steps = ctx.options["ais_steps"]
    if callable(getattr(ctx.model, "ais", None)):  # a program: AIS over its traces
        res = ctx.model.ais(xs, n_steps=steps, n_chains=32, batch_size=50)
        m = diagnostics.ais_result_metric(res, per_example=ctx.store)
    else:
        m = diagnostics.ais_metric(ctx.model, xs, x_val=xv, n_steps=steps, per_example=ctx.store,
                                   progress=ctx.progress)
    return {"ais": _given(ctx, ctx.label(ctx.shift(m, "ais"), "ais"))}


def _parzen(ctx) -> dict[str, Metric]:
    from probgen.eval import diagnostics

    xs, xv = ctx.one_draw()
    m = diagnostics.parzen_metric(ctx.model, xs, xv[:1000], per_example=ctx.store)
    return {"parzen": ctx.label(ctx.shift(m, "parzen"), "parzen")}


def _has(*names):
    def requires(ctx):
        return None if all(callable(getattr(ctx.model, n, None)) for n in names) else \
            f"the model has no {' or '.join(names)}"
    return requires


def _modes_requires(ctx) -> str | None:
    if not callable(getattr(ctx.model, "sample", None)):
        return "the model has no sample(n)"
    d = ctx.data.density
    return None if d is not None and getattr(d, "means", None) is not None else \
        "the data are not a mixture with known modes"


def _modes(ctx) -> dict[str, Metric]:
    from probgen.eval import modes

    return modes.mode_metrics(ctx.model, ctx.data, n_samples=ctx.n_samples or 2500)


def _vectors_requires(ctx) -> str | None:
    if not callable(getattr(ctx.model, "sample", None)):
        return "the model has no sample(n)"
    return None if ctx.data.kind != "image" else "image data (see the feature-network metrics)"


def _vectors(ctx) -> dict[str, Metric]:
    from probgen.eval import samples

    return samples.vector_sample_metrics(ctx.model, ctx.data, ctx.split, n_samples=ctx.n_samples)


_IMAGE_METRICS = ("frechet_distance", "kernel_distance", "precision", "recall", "density",
                  "coverage", "class_histogram")


def _images_requires(ctx) -> str | None:
    if not callable(getattr(ctx.model, "sample", None)):
        return "the model has no sample(n)"
    return None if ctx.data.kind == "image" else "not image data"


def _images(ctx) -> dict[str, Metric]:
    from probgen.eval.metrics import unavailable

    data, split = ctx.data, ctx.split
    if data.labels(split) is not None and data.train_labels is not None:
        from probgen.eval import samples

        return samples.image_sample_metrics(ctx.model, data, split, n_samples=ctx.n_samples)
    reason = (f"needs class labels: the feature network is a classifier trained on them, and "
              f"data set {data.name!r} has none for its train and {split} splits")
    return {name: unavailable(reason) for name in _IMAGE_METRICS}


for _e in (
    Estimator("exact", "the model's exact log-likelihood (log_prob)", ("log_likelihood",), _exact,
              requires=_exact_requires, report_absence=True),
    Estimator("true_density", "the data-generating density of toy data", ("true_log_likelihood",),
              _true_density, requires=lambda ctx: None if ctx.data.density is not None
              else "the data have no known density"),
    Estimator("elbo", "the evidence lower bound (elbo)", ("elbo",), _elbo,
              requires=lambda ctx: None if callable(getattr(ctx.model, "elbo", None)) else
              "the model has no latent-variable bound (no elbo)", report_absence=True),
    Estimator("iwae", "the importance-weighted bound IWAE-k (iwae_bound)", ("iwae",), _iwae,
              requires=_has("iwae_bound"),
              options=(Option("k", int, 100, "importance samples for the IWAE bound", minimum=1),)),
    Estimator("ais", "annealed importance sampling on the model's own likelihood", ("ais",), _ais,
              switch="ais", options=(
                  Option("ais", bool, False, "add annealed importance sampling"),
                  Option("ais_steps", int, 500, "AIS transitions", compare_default=200, minimum=1))),
    Estimator("parzen", "the Parzen-window estimate from samples", ("parzen",), _parzen,
              switch="parzen", requires=lambda ctx: None,
              options=(Option("parzen", bool, False, "add the Parzen-window estimate"),)),
    Estimator("modes", "mode coverage of samples on toy mixtures", ("modes_covered",
              "high_quality_fraction", "reverse_kl", "reverse_kl_nearest"), _modes,
              requires=_modes_requires, kind="samples"),
    Estimator("vector_samples", "two-sample distances of samples on vector data (energy, MMD), "
              "their true log-density and, on your own vectors, precision, recall, density and "
              "coverage in standard units", ("energy_distance", "mmd", "sample_log_density",
                                             "precision", "recall", "density", "coverage"),
              _vectors, requires=_vectors_requires, kind="samples"),
    Estimator("image_samples", "feature-network distances of samples on labelled images",
              _IMAGE_METRICS, _images, requires=_images_requires, kind="samples"),
):
    register_estimator(_e)


# ---------------------------------------------------------------------------- AIS of a decoder
def _decoder_view(ctx):
    """``(data to score on, None)`` or ``(None, reason)``: the data themselves when dequantized
    or continuous; images of known levels dequantized (from raw pixels in memory, from a
    binarised run by reloading the 8-bit images)."""
    from dataclasses import replace

    from probgen.data.dequantize import dequantize
    from probgen.errors import DataError

    d = ctx.data
    if d.bin_width is not None or d.representation == "continuous":
        return d, None
    if d.kind != "image":
        return None, f"scores dequantized or continuous data; these are {d.representation}"
    try:
        if d.binarize == "none" and d.levels is not None:
            lo, hi = d.value_range
            unit = {s: (d.split(s) - lo) / (hi - lo) for s in ("train", "val", "test")}
            return dequantize(replace(d, value_range=(0.0, 1.0), **unit), "on"), None
        view = ctx.reload({"binarize": "none", "value_range": [0.0, 1.0], "dequantize": "on"})
    except DataError as e:
        return None, f"needs the images dequantized: {e}"
    if view is None:
        return None, ("needs the 8-bit images of these binarised data (score a run folder, or "
                      "give the data with --binarize none)")
    return view, None


def _decoder_requires(ctx) -> str | None:
    m = ctx.model
    if callable(getattr(m, "log_prob", None)):
        return "the model has an exact density"
    if not (callable(getattr(m, "decode", None)) and hasattr(m, "latent_dim")
            and callable(getattr(m, "prior_log_prob", None))):
        return "needs a decoder: decode(z), latent_dim and prior_log_prob"
    return _decoder_view(ctx)[1]


def _decoder_ais(ctx) -> dict:

    import torch

    from probgen.eval.diagnostics import decoder_ais_metric

    view, o = _decoder_view(ctx)[0], ctx.options
    x = view.split(ctx.split)[:min(o["decoder_ais_images"], ctx.x.shape[0])]
    xv = view.split("val")
    if view.bin_width is not None:  # one seeded noise draw, as every dequantized estimate
        g = torch.Generator(device=x.device).manual_seed(ctx.noise_seed)
        x = view.add_noise(x, g)
        xv = view.add_noise(xv, torch.Generator(device=x.device).manual_seed(ctx.noise_seed + 1))
    image = ctx.data.kind == "image"
    m = decoder_ais_metric(ctx.model, x, x_val=xv,
                           out_range=tuple(ctx.data.value_range) if image else None,
                           data_range=tuple(view.value_range) if image else None,
                           n_steps=o["decoder_ais_steps"], n_chains=o["decoder_ais_chains"],
                           n_bdmc=o["bdmc_images"], n_leapfrog=o["decoder_ais_leapfrog"],
                           seed=ctx.noise_seed, per_example=ctx.store,
                           progress=ctx.progress)
    if view.bin_width is not None and m.value is not None:
        offset = view.bound_offset  # the dequantization bound on log P(k)
        m.value += offset
        ctx.store["decoder_ais"] = ctx.store["decoder_ais"] + offset
    return {"decoder_ais": ctx.label(m, "ais", data=view)}


register_metric(MetricInfo(
    "decoder_ais", "AIS (decoder)", "nats", "higher",
    "AIS of the decoder with a Gaussian observation model, sigma chosen on validation examples "
    "(Wu et al. 2017): a likelihood for models without a density (the GAN), BDMC gap in extra",
    "applies to models with a decoder and no exact density, on dequantized or continuous data "
    "(--decoder-ais)", likelihood_rank=4, group="likelihood"))
register_estimator(Estimator(
    "decoder_ais", "AIS of a decoder with a Gaussian observation model, and its BDMC gap",
    ("decoder_ais",), _decoder_ais, requires=_decoder_requires, switch="decoder_ais", options=(
        Option("decoder_ais", bool, False, "score models with a decoder and no density (the GAN, "
               "the VAE as the check) by AIS with a Gaussian observation model on dequantized or "
               "continuous data", compare_default=True),
        # compare's defaults keep the MNIST DCGAN generator's AIS to about 60k generator
        # passes (forward and backward), a minute on two CPU cores; eval's are tighter
        Option("decoder_ais_images", int, 100, "test examples the decoder's AIS scores",
               compare_default=16, minimum=1),
        Option("decoder_ais_steps", int, 200, "AIS transitions of the decoder's AIS",
               compare_default=50, minimum=1),
        Option("decoder_ais_chains", int, 8, "AIS chains per example of the decoder's AIS",
               compare_default=4, minimum=1),
        Option("decoder_ais_leapfrog", int, 10, "leapfrog steps per HMC transition of the "
               "decoder's AIS", compare_default=5, minimum=1),
        Option("bdmc_images", int, 16, "examples simulated from the decoder for its BDMC gap "
               "(0: none)", compare_default=4, minimum=0))))
