"""Plain and denoising autoencoders with the encoder/decoder networks the VAE uses.

An autoencoder learns a deterministic code z = f(x) (``latent_dim`` values) and a decoder
g(z) by minimising a reconstruction loss; a denoising autoencoder (Vincent et al.,
"Extracting and composing robust features with denoising autoencoders", ICML 2008)
reconstructs the clean x from a corrupted copy: Gaussian noise (x + sigma eps) or masking
noise (each value set to 0 with probability p), applied in training only.

It is not a density model: it has ``encode``/``decode`` and ``reconstruct``, and no
``log_prob``/``elbo``. ``sample(n)`` decodes codes drawn from a Gaussian fitted to the
training codes (:meth:`Autoencoder.fit_code_distribution`), which shows how far the code
space is from a generative model rather than being one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from probgen.errors import ConfigError, DataError, NotFittedError
from probgen.models.nets import Standardization, make_decoder, make_encoder

__all__ = ["Autoencoder", "NOISES", "RECONSTRUCTION_LOSSES"]

NOISES = ("none", "gaussian", "masking")


def _bce(raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of targets in [0, 1] under sigmoid(raw), summed per example: (N,)."""
    return F.binary_cross_entropy_with_logits(raw, x, reduction="none").flatten(1).sum(1)


def _mse(raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Squared error summed per example: (N,)."""
    return (raw - x).pow(2).flatten(1).sum(1)


# name -> (per-example loss of the raw decoder output, map from raw output to data space)
RECONSTRUCTION_LOSSES = {
    "bce": (_bce, torch.sigmoid),
    "mse": (_mse, lambda raw: raw),
}


class Autoencoder(Standardization, nn.Module):
    """A deterministic autoencoder, optionally denoising.

    Parameters
    ----------
    data_shape : tuple of int
    latent_dim : int
        Code size (2 for a planar embedding).
    hidden : sequence of int, optional
        Hidden widths (architecture default if None).
    arch : {"mlp", "conv"}
    activation : str, optional
    loss : {"bce", "mse"}
        Cross-entropy with a sigmoid output (values in [0, 1]) or squared error with a
        linear output (any range).
    noise : {"none", "gaussian", "masking"}
        Corruption applied to the input in training mode (a denoising autoencoder).
    noise_level : float
        Gaussian: the standard deviation; masking: the probability of zeroing a value.

    With a standardisation (:meth:`standardize_by`, squared error only) the networks, the
    corruption and the loss work in the training data's standard units: features of any
    scale count alike, and ``encode``/``decode``/``reconstruct`` still take and give data
    in its own units.
    """

    def __init__(self, data_shape: Sequence[int], latent_dim: int = 2,
                 hidden: Sequence[int] | None = None, *, arch: str = "mlp",
                 activation: str | None = None, loss: str = "bce", noise: str = "none",
                 noise_level: float = 0.3):
        super().__init__()
        if loss not in RECONSTRUCTION_LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(RECONSTRUCTION_LOSSES)}; got {loss!r}.")
        if noise not in NOISES:
            raise ConfigError(f"noise must be one of {', '.join(NOISES)}; got {noise!r}.")
        if noise == "masking" and not 0 <= noise_level < 1:
            raise ConfigError(f"noise_level is a masking probability for noise='masking' and must be "
                              f"in [0, 1); got {noise_level!r}.")
        if noise == "gaussian" and not noise_level >= 0:
            raise ConfigError(f"noise_level is a standard deviation for noise='gaussian' and must be "
                              f">= 0; got {noise_level!r}.")
        self.data_shape = tuple(int(s) for s in data_shape)
        self.latent_dim = int(latent_dim)
        self.encoder = make_encoder(arch, self.data_shape, self.latent_dim, hidden, activation,
                                    stochastic=False)
        self.decoder = make_decoder(arch, self.data_shape, self.latent_dim, hidden, activation)
        self.loss_name, self.noise, self.noise_level = loss, noise, float(noise_level)
        self._loss, self._output = RECONSTRUCTION_LOSSES[loss]
        self.register_buffer("code_mean", torch.zeros(self.latent_dim))
        self.register_buffer("code_scale_tril", torch.zeros(self.latent_dim, self.latent_dim))
        self._init_standardization()  # none until standardize_by

    @torch.no_grad()
    def standardize_by(self, x: torch.Tensor) -> None:
        """Work in the standard units of ``x`` (N, *data_shape), the training data
        (:class:`~probgen.models.nets.Standardization`); squared error only."""
        if self.loss_name != "mse":
            raise ConfigError(f"a standardisation is offered with loss='mse' only (its output is "
                              f"linear); this autoencoder's loss is {self.loss_name!r}.")
        super().standardize_by(x)

    @property
    def device(self) -> torch.device:
        return self.code_mean.device

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """The noisy input of a denoising autoencoder (x itself for noise="none")."""
        if self.noise == "gaussian":
            return x + self.noise_level * torch.randn_like(x)
        if self.noise == "masking":
            return x * (torch.rand_like(x) >= self.noise_level).to(x.dtype)
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code: (N, *data_shape) -> (N, L)."""
        return self.encoder(self.standardize(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction in data space: (..., L) -> (..., *data_shape)."""
        return self.unstandardize(self._output(self.decoder(z)))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean reconstruction loss per example of the clean x from its (corrupted) input."""
        if tuple(x.shape[1:]) != self.data_shape:
            shape = ", ".join(map(str, self.data_shape))
            raise DataError(f"x must have shape (N, {shape}), the data shape this autoencoder was built "
                            f"for; got {tuple(x.shape)}. Reshape x to (N, {shape}), or build the "
                            "autoencoder with the data's own shape.")
        u = self.standardize(x)
        inp = self.corrupt(u) if self.training else u
        return self._loss(self.decoder(self.encoder(inp)), u).mean()

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """Per-example loss of the clean input (no corruption), in standard units where
        standardised (the training loss): (N,)."""
        u = self.standardize(x)
        return self._loss(self.decoder(self.encoder(u)), u)

    @torch.no_grad()
    def fit_code_distribution(self, x: torch.Tensor, batch_size: int = 1000) -> Autoencoder:
        """Fit N(m, C) to the codes of x, for :meth:`sample`."""
        z = torch.cat([self.encode(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
        z = z.double()
        mean = z.mean(0)
        cov = torch.cov(z.T).reshape(self.latent_dim, self.latent_dim)
        cov += 1e-6 * torch.eye(self.latent_dim, dtype=cov.dtype, device=cov.device)
        self.code_mean.copy_(mean.to(self.code_mean.dtype))
        self.code_scale_tril.copy_(torch.linalg.cholesky(cov).to(self.code_mean.dtype))
        return self

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = True) -> torch.Tensor:
        """Decoded draws from the Gaussian fitted to the training codes: (n, *data_shape).

        An autoencoder defines no p(x|z); the decoder output is returned either way (``mean``
        is accepted for the common signature).
        """
        if not bool(self.code_scale_tril.diagonal().gt(0).all()):
            raise NotFittedError("sample needs the code distribution: call fit_code_distribution(x_train) "
                                 "after training (the ae/dae recipes do).")
        eps = torch.randn(n, self.latent_dim, device=self.code_mean.device, dtype=self.code_mean.dtype)
        return self.decode(self.code_mean + eps @ self.code_scale_tril.T)
