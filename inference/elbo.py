"""Pyro's ``Trace_ELBO`` with a short path for reparametrised guides.

:class:`Trace_ELBO` is Pyro's ``Trace_ELBO`` (same value, same gradient, same interface) for
any model/guide pair. Where Pyro's validation is on, it *is* Pyro's: every check runs (model
and guide sites match, shapes, supports). Where it is off, which is how
:func:`probgen.inference.svi.fit_svi` runs every step after the first, a single-particle
estimate whose guide draws every latent site by reparametrisation is computed on a short
path: the guide and the model run under one light recorder, the model replaying the guide's
draws as ``poutine.replay`` does, and the estimate is

    sum over model sites of scale * mask * log p(site)  -  the same over guide sites

with plates, ``poutine.scale``/``mask`` and observed sites as Pyro counts them. For such a
guide this is exactly Pyro's surrogate: there is no score-function term, and the entropy
term of each guide site is its log-density. Pyro's traces, the pruning of subsample sites
and the score-part bookkeeping are what the short path leaves out; on the VAE they cost
about a tenth of a step on the CPU.

Anything else goes to Pyro: the first step of a model/guide pair, several particles, a guide
site that cannot be reparametrised (discrete, or marked for enumeration), an observed site
in the guide, and guides written as ``GuideMessenger``.
"""

from __future__ import annotations

import pyro.infer
import torch
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.messenger import Messenger

__all__ = ["Trace_ELBO"]


class _Recorder(Messenger):
    """Records the sample sites that reach it (after the program's plates, scales and masks
    have set ``scale`` and ``mask``); with ``replay``, puts the guide's draws into the
    model's unobserved sites of the same name, as ``poutine.replay`` does."""

    def __init__(self, replay: dict | None = None):
        super().__init__()
        self.sites: list = []
        self.replay = replay

    def _pyro_sample(self, msg) -> None:
        if self.replay is not None and not msg["is_observed"]:
            guide_site = self.replay.get(msg["name"])
            if guide_site is not None:
                msg["value"] = guide_site["value"]
                msg["infer"] = guide_site["infer"]
                msg["done"] = True

    def _pyro_post_sample(self, msg) -> None:
        if type(msg["fn"]).__name__ != "_Subsample":  # a plate's index draw, not a variable
            self.sites.append(msg)


def _reparametrised(site) -> bool:
    return (not site["is_observed"] and site["fn"].has_rsample
            and not site["infer"].get("enumerate"))


def _log_prob_sum(site):
    from pyro.distributions.util import scale_and_mask

    lp = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(lp, site["scale"], site["mask"]).sum()


class Trace_ELBO(pyro.infer.Trace_ELBO):
    """Pyro's ``Trace_ELBO``, with the short path of the module docstring for reparametrised
    guides while validation is off. Constructed and used exactly like Pyro's.

    The first step of a model/guide pair is Pyro's, which shows whether the guide draws every
    latent by reparametrisation; later steps of the same pair take the short path where it
    does and validation is off. Should a later step's guide draw a site the short path cannot
    take, that step is handed to Pyro (which draws it again) and so are the pair's later steps.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pair = None        # (model, guide) whose eligibility is known
        self._short = False      # whether that pair takes the short path
        self._recording = None   # the pair a Pyro step is running for

    def differentiable_loss(self, model, guide, *args, **kwargs):
        pair = (model, guide)
        if (self.num_particles != 1 or is_validation_enabled() or self._pair != pair
                or not self._short):
            self._recording = pair
            try:
                return super().differentiable_loss(model, guide, *args, **kwargs)
            finally:
                self._recording = None
        with _Recorder() as guide_rec:
            guide(*args, **kwargs)
        if not all(_reparametrised(site) for site in guide_rec.sites):
            self._short = False
            return self.differentiable_loss(model, guide, *args, **kwargs)
        with _Recorder({site["name"]: site for site in guide_rec.sites}) as model_rec:
            model(*args, **kwargs)
        # Pyro's arithmetic, in Pyro's order, so that the value is Pyro's to the last bit (a
        # resumed run logs what an uninterrupted one did): the estimate summed in Python
        # floats site by site, the surrogate as a tensor carrying the gradient
        model_sums = [_log_prob_sum(site) for site in model_rec.sites]
        guide_sums = [_log_prob_sum(site) for site in guide_rec.sites]
        values = torch.stack(model_sums + guide_sums).tolist() if model_sums or guide_sums else []
        elbo, surrogate_elbo = 0.0, 0.0
        for value, log_prob_sum in zip(values, model_sums):
            elbo = elbo + value
            surrogate_elbo = surrogate_elbo + log_prob_sum
        for value, log_prob_sum in zip(values[len(model_sums):], guide_sums):
            elbo = elbo - value
            surrogate_elbo = surrogate_elbo - log_prob_sum
        loss, surrogate_loss = -elbo, -surrogate_elbo
        if not torch.is_tensor(surrogate_loss):
            return surrogate_loss
        return loss + (surrogate_loss - torch_item(surrogate_loss))

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        if self._recording is not None and self.num_particles == 1:
            model, guide = self._pair = self._recording
            self._short = (not isinstance(pyro.poutine.unwrap(guide), Messenger)
                           and all(_reparametrised(site) for site in guide_trace.nodes.values()
                                   if site["type"] == "sample"))
        return super()._differentiable_loss_particle(model_trace, guide_trace)
