"""The AIS and Parzen metrics, with how far to trust an importance-sampling estimate: the
Pareto k-hat of its weights (:mod:`probgen.inference.khat`, re-exported here).

:func:`decoder_ais_metric` scores a model with only a decoder (a GAN's generator) by AIS with a
Gaussian observation model and its BDMC gap. :func:`ais_metric` and :func:`parzen_metric` turn :mod:`probgen.inference.ais` and
:mod:`probgen.inference.parzen` estimates into metrics of the one results schema.
"""

from __future__ import annotations

import math
import warnings

import torch

from probgen.eval.metrics import Metric, summarize, unavailable
from probgen.inference.khat import KHAT_THRESHOLD, khat_summary, pareto_khat

__all__ = ["KHAT_THRESHOLD", "pareto_khat", "khat_summary", "ais_metric", "ais_result_metric",
           "parzen_metric", "decoder_ais_metric", "DECODER_AIS_CAVEAT"]

def ais_metric(model, x: torch.Tensor, *, x_val: torch.Tensor | None = None, n_steps: int = 500,
               n_chains: int = 32, batch_size: int = 50,
               sigmas: tuple[float, ...] | None = None, per_example: dict | None = None,
               progress: bool = False) -> Metric:
    """AIS estimate of log p(x) as a metric, with its k-hat diagnostic (Wu et al., 2017).

    A model with ``log_likelihood`` is scored as it is; one with only ``decode`` gets a
    Gaussian observation model whose width is chosen on ``x_val`` (up to 100 examples, a
    schedule of ``max(50, n_steps // 5)`` steps, 4 chains) from ``sigmas`` (default
    ``(0.01, 0.02, 0.05, 0.1, 0.2, 0.5)`` times the data's value range). With ``per_example``
    (a dict), the per-example estimates (N,) are stored in it under ``"ais"``. ``progress``
    shows bars over the annealing steps (:mod:`probgen.progress`: on a terminal only).
    """
    from probgen.inference.ais import ais, select_sigma

    missing = [a for a in ("latent_dim", "prior_log_prob") if not hasattr(model, a)]
    has_ll = callable(getattr(model, "log_likelihood", None))
    if not has_ll and not callable(getattr(model, "decode", None)):
        missing.append("log_likelihood or decode")
    if missing:
        return unavailable(
            f"AIS needs a latent-variable model (latent_dim, prior_log_prob, and log_likelihood "
            f"or decode); the model lacks {', '.join(missing)}", "nats")
    extra: dict = {}
    sigma = None
    if not has_ll:
        if x_val is None or x_val.shape[0] == 0:
            return unavailable("AIS with a Gaussian observation model needs validation data to "
                               "choose its width sigma", "nats")
        if sigmas is None:
            span = float(x_val.max() - x_val.min()) or 1.0
            sigmas = tuple(span * s for s in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            sel = select_sigma(model, x_val[:100], sigmas, n_steps=max(50, n_steps // 5),
                               n_chains=4, batch_size=batch_size, progress=progress)
        sigma = sel.sigma
        extra["sigma_grid"] = list(sel.sigmas)
        extra["sigma_val_scores"] = sel.scores
        if caught:
            extra["sigma_warning"] = str(caught[-1].message)
    res = ais(model, x, n_steps=n_steps, n_chains=n_chains, sigma=sigma, batch_size=batch_size,
              progress=progress)
    return ais_result_metric(res, per_example=per_example, extra=extra)


def ais_result_metric(res, *, per_example: dict | None = None, extra: dict | None = None) -> Metric:
    """An :class:`probgen.inference.ais.AISResult` as a metric, with its k-hat diagnostic; with
    ``per_example`` (a dict), the per-example estimates (N,) are stored in it under ``"ais"``."""
    if per_example is not None:
        per_example["ais"] = res.log_px
    metric = summarize(res.log_px, "nats", extra_var=res.stderr.pow(2))
    if metric.extra is None:
        metric.extra = {}
    metric.extra.update({
        "estimator": "forward AIS with HMC (a stochastic lower bound on log p(x))",
        "n_steps": res.n_steps,
        "n_chains": res.n_chains,
        "n_leapfrog": res.n_leapfrog,
        "schedule": res.schedule,
        "sigma": res.sigma,
        "mean_acceptance": float(res.acceptance.mean()),
        **khat_summary(pareto_khat(res.log_weights)),
        **(extra or {}),
    })
    return metric


def parzen_metric(model, x: torch.Tensor, x_val: torch.Tensor, *, n_samples: int = 10_000,
                  bandwidths=None, sample_batch: int = 1000, per_example: dict | None = None) -> Metric:
    """Parzen-window log-likelihood (Goodfellow et al., 2014) as a metric, always carrying
    :data:`probgen.inference.parzen.PARZEN_WARNING` in ``extra["warning"]``.

    Draws ``n_samples`` from ``model.sample``; the bandwidth is chosen on ``x_val``. With
    ``per_example`` (a dict), the per-example values (N,) are stored in it under ``"parzen"``.
    """
    from probgen.inference.parzen import PARZEN_WARNING, parzen

    if not callable(getattr(model, "sample", None)):
        m = unavailable("the Parzen-window estimate needs samples (no sample(n))", "nats")
        m.extra = {"warning": PARZEN_WARNING}
        return m
    if x_val is None or x_val.shape[0] == 0:
        m = unavailable("the Parzen-window estimate needs validation data to choose its bandwidth",
                        "nats")
        m.extra = {"warning": PARZEN_WARNING}
        return m
    with torch.no_grad():
        parts, left = [], n_samples
        while left > 0:
            s = model.sample(min(sample_batch, left))
            parts.append(s.detach().reshape(s.shape[0], *x.shape[1:]).to(x.device))
            left -= s.shape[0]
        samples = torch.cat(parts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        res = parzen(samples, x, x_val, bandwidths=bandwidths)
    if per_example is not None:
        per_example["parzen"] = res.log_px
    metric = summarize(res.log_px, "nats", extra_var=res.stderr.pow(2))
    if metric.extra is None:
        metric.extra = {}
    metric.extra.update({
        "bandwidth": res.bandwidth,
        "n_samples": res.n_samples,
        "bandwidth_grid": [float(b) for b in res.bandwidths],
        "warning": PARZEN_WARNING,
    })
    if caught:
        metric.extra["bandwidth_warning"] = str(caught[-1].message)
    return metric


class _Rescaled:
    """``model.decode`` mapped affinely into the units of the scored data: outputs in
    ``out_range`` (a GAN's tanh [-1, 1]) onto ``data_range`` (dequantized pixels' [0, 1])."""

    def __init__(self, model, out_range=None, data_range=None):
        self.model = model
        if out_range is None or data_range is None:
            self.scale, self.shift = 1.0, 0.0
        else:
            (a, b), (c, d) = out_range, data_range
            self.scale = (d - c) / (b - a)
            self.shift = c - a * self.scale

    @property
    def latent_dim(self) -> int:
        return int(self.model.latent_dim)

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.prior_log_prob(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.model.decode(z)
        return x if self.scale == 1.0 and self.shift == 0.0 else x * self.scale + self.shift


DECODER_AIS_CAVEAT = (
    "a likelihood of the decoder with Gaussian noise of width sigma (chosen on validation "
    "examples) added to its output (Wu et al., 2017): the model itself has no density, so "
    "this scores a blurred version of it; a stochastic lower bound whose looseness the BDMC "
    "gap on examples simulated from it measures")


def decoder_ais_metric(model, x: torch.Tensor, *, x_val: torch.Tensor, out_range=None,
                       data_range=None, n_steps: int = 100, n_chains: int = 4, n_bdmc: int = 8,
                       n_leapfrog: int = 10, n_val: int = 8, sigmas: tuple[float, ...] | None = None, seed: int = 0,
                       batch_size: int | None = None, per_example: dict | None = None,
                       key: str = "decoder_ais", progress: bool = False) -> Metric:
    """log p(x) of a decoder with a Gaussian observation model, by AIS, with its BDMC gap
    (Wu, Burda, Salakhutdinov & Grosse, 2017, "On the quantitative analysis of decoder-based
    generative models"): how a GAN's generator (or any model with ``decode``, ``latent_dim``
    and ``prior_log_prob``) is put on the likelihood axis of the models with densities.

    ``p(x | z) = N(x; decode(z), sigma^2 I)``, ``decode`` mapped from ``out_range`` to
    ``data_range`` (a tanh generator's [-1, 1] onto pixels' [0, 1]); ``sigma`` is chosen among
    ``sigmas`` (default ``(0.01, 0.02, 0.05, 0.1, 0.2, 0.5)`` times the span of ``x_val``) on
    the first ``n_val`` examples of ``x_val`` by :func:`probgen.inference.ais.select_sigma`
    (``max(10, n_steps // 5)`` steps, 2 chains, the step size adapted online). Forward AIS of ``n_steps`` transitions of
    ``n_leapfrog`` leapfrog steps and ``n_chains`` chains then scores ``x``; BDMC (:func:`probgen.inference.ais.bdmc`) on
    ``n_bdmc`` examples simulated from the same model and sigma gives the gap between the
    reverse (upper) and forward (lower) estimates, which bounds the forward estimate's error
    on such data. All randomness comes from ``seed``.

    Returns a metric in nats per example of ``x`` as given (the caller adds a
    dequantization offset); ``extra`` holds ``sigma``, the grid and its validation scores,
    ``bdmc`` (``lower``, ``upper``, ``gap``, ``gap_stderr``, ``n``), ``cost`` (wall seconds of
    each stage and in all, CPU seconds of the process, torch threads, steps, chains, leapfrog
    steps, examples), the observation model
    and its caveat. With ``per_example`` the per-example estimates are stored under ``key``.
    """
    import time

    from probgen.inference.ais import ais, bdmc, select_sigma

    missing = [a for a in ("latent_dim", "prior_log_prob", "decode") if not hasattr(model, a)]
    if missing:
        return unavailable(f"the AIS of a decoder needs latent_dim, prior_log_prob and decode; the "
                           f"model lacks {', '.join(missing)}", "nats")
    if x_val is None or x_val.shape[0] == 0:
        return unavailable("the AIS of a decoder needs validation examples to choose its "
                           "observation width sigma", "nats")
    dec = _Rescaled(model, out_range, data_range)
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    xv = x_val[:n_val]
    if sigmas is None:
        span = float(xv.max() - xv.min()) or 1.0
        sigmas = tuple(span * s for s in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5))
    t0, cpu0 = time.perf_counter(), time.process_time()
    sel_steps = max(10, n_steps // 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        # the step size adapts within the one pass (no pilot): a slight upward bias matters
        # little to the choice of sigma and halves its cost; the estimate below has its pilot
        sel = select_sigma(model=dec, x_val=xv, sigmas=sigmas, n_steps=sel_steps, n_chains=2,
                           n_leapfrog=n_leapfrog, adapt="online", batch_size=batch_size,
                           generator=gen, progress=progress)
    t1 = time.perf_counter()
    res = ais(model=dec, x=x, n_steps=n_steps, n_chains=n_chains, n_leapfrog=n_leapfrog,
              sigma=sel.sigma, batch_size=batch_size, generator=gen, progress=progress)
    t2 = time.perf_counter()
    bd = None
    if n_bdmc > 0:
        z = torch.randn(n_bdmc, dec.latent_dim, generator=gen, device=x.device).to(x.dtype)
        with torch.no_grad():
            mean = dec.decode(z).reshape(n_bdmc, *x.shape[1:])
            noise = torch.randn(mean.shape, generator=gen, device=x.device).to(x.dtype)
        x_sim = mean + sel.sigma * noise
        b = bdmc(model=dec, x=x_sim, z=z, n_steps=n_steps, n_chains=n_chains,
                 n_leapfrog=n_leapfrog, sigma=sel.sigma, batch_size=batch_size, generator=gen,
                 progress=progress)
        gap = b.gap.double()
        bd = {"lower": float(b.lower.log_px.double().mean()), "upper": float(b.upper.log_px.double().mean()),
              "gap": float(gap.mean()),
              "gap_stderr": float(gap.std() / math.sqrt(gap.numel())) if gap.numel() > 1 else None,
              "n": int(n_bdmc), "unit": "nats per simulated example",
              "note": "reverse (upper) minus forward (lower) AIS on examples simulated from the "
                      "decoder with the chosen sigma: it bounds the forward estimate's error there"}
    t3, cpu = time.perf_counter(), time.process_time() - cpu0
    extra = {
        "observation_model": f"N(x; decoder(z), sigma^2 I), sigma = {sel.sigma:.4g} chosen on "
                             f"{xv.shape[0]} validation examples",
        "caveat": DECODER_AIS_CAVEAT,
        "sigma_grid": list(sel.sigmas), "sigma_val_scores": sel.scores,
        "decoder_output_map": None if out_range is None or data_range is None else
        {"from": [float(v) for v in out_range], "to": [float(v) for v in data_range]},
        "cost": {"seconds": t3 - t0, "cpu_seconds": cpu, "threads": torch.get_num_threads(),
                 "sigma_seconds": t1 - t0, "ais_seconds": t2 - t1,
                 "bdmc_seconds": t3 - t2, "n_steps": int(n_steps), "n_chains": int(n_chains),
                 "n_leapfrog": int(res.n_leapfrog), "n_images": int(x.shape[0]),
                 "n_val_images": int(xv.shape[0]), "sigma_steps": int(sel_steps),
                 "n_sigmas": len(sel.sigmas), "n_bdmc_images": int(n_bdmc)},
    }
    if bd is not None:
        extra["bdmc"] = bd
    if caught:
        extra["sigma_warning"] = str(caught[-1].message)
    store: dict = {}
    metric = ais_result_metric(res, per_example=store, extra=extra)
    metric.extra["estimator"] = ("forward AIS with HMC on the decoder with a Gaussian observation "
                                 "model (a stochastic lower bound on its log p(x))")
    if per_example is not None:
        per_example[key] = store["ais"]
    return metric
