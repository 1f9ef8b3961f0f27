"""Generative models written as programs (installed as ``probgen.models``).

=====================  ======================================================================
module                 model
=====================  ======================================================================
``vae``                :class:`VAE`: a Pyro model/guide pair (Bernoulli, continuous Bernoulli
                       or Gaussian pixels), trained with SVI on ``Trace_ELBO``
``two_layer_vae``      :class:`TwoLayerVAE`: two stochastic layers (Burda et al. 2016), same
                       conventions as ``vae``
``ppca``               :class:`PPCA`: linear-Gaussian latent model with an exact ``log_prob``
``autoencoder``        :class:`Autoencoder`: plain and denoising
``gan``                :class:`GAN`: an implicit model (generator + discriminator)
``gmm``                :class:`GaussianMixture`: EM with scikit-learn's semantics
``bmm``                :class:`BernoulliMixture`: EM for binary data, the same estimator API
``mixture_program``    the same mixture as a Pyro program (assignments summed out)
``bayes_mixture``      a Bayesian mixture for NUTS and PSIS-LOO
``flow``               :class:`Flow`: a normalizing flow (Zuko) as a Pyro program, exact ``log_prob``
``nets``               the shared encoders, decoders, generators and discriminators
=====================  ======================================================================

Names are imported lazily, so ``import probgen.models`` stays cheap.
"""

import importlib

_EXPORTS = {
    "VAE": "vae", "PPCA": "ppca", "Autoencoder": "autoencoder", "GAN": "gan",
    "GaussianMixture": "gmm", "MixtureDensity": "gmm", "BernoulliMixture": "bmm",
    "TwoLayerVAE": "two_layer_vae", "Flow": "flow",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
