"""A VAE with two stochastic layers as a Pyro program (Burda, Grosse & Salakhutdinov,
"Importance weighted autoencoders", ICLR 2016, section 5, after Rezende et al. 2014).

The model and the guide::

    z2_n ~ Normal(0, I)                       (latent_dims[1],)      q(z1_n | x_n)  = Normal(enc1(x_n))
    z1_n ~ Normal(prior_net(z2_n))            (latent_dims[0],)      q(z2_n | z1_n) = Normal(enc2(z1_n))
    x_n  ~ Bernoulli(logits=decoder(z1_n))    (*data_shape)

are ``model(x)`` and ``guide(x)`` with the same signature, the same site names (``"z1"``,
``"z2"``, ``"x"``) and the same ``pyro.plate("data")`` (of size ``num_data`` over a
minibatch) as :class:`probgen.models.vae.VAE`, so :func:`probgen.inference.svi.fit_svi`
trains it on the ELBO, IWAE or DReG objective alike. The paper's networks are the default:
784-200-200-(z1: 100) and 100-100-100-(z2: 50) with tanh units, mirrored in the model.

For the evaluation layer (:mod:`probgen.inference.bounds`) the latent variable is the pair
``z = (z1, z2)`` concatenated, ``latent_dim = 150``: ``encoder_distribution(x)`` is the guide
``q(z1|x) q(z2|z1)``, ``prior_log_prob(z)`` is ``log p(z2) + log p(z1|z2)`` and
``log_likelihood(x, z)`` is ``log p(x|z1)``; so ``probgen eval --k`` reports the same
IWAE-k bound as for the one-layer VAE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from probgen.errors import ConfigError
from probgen.inference.bounds import LatentBounds
from probgen.models.nets import GaussianHead, MLPDecoder, MLPEncoder, make_mlp
from probgen.models.vae import BernoulliLikelihood, check_data_shape, data_plate

__all__ = ["TwoLayerVAE", "GaussianMLP"]


class GaussianMLP(nn.Module):
    """A conditional diagonal Gaussian: h (..., in_dim) -> (loc, scale), each (..., out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int], activation: str = "tanh"):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        self.body = make_mlp((in_dim, *hidden), activation, last_activation=True) if hidden else nn.Identity()
        self.head = GaussianHead(hidden[-1] if hidden else in_dim, out_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(h))


class _TwoLayerPosterior(torch.distributions.Distribution):
    """q(z1|x) q(z2|z1) over z = (z1, z2) concatenated: batch (N,), event (L1 + L2,)."""

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, loc1: torch.Tensor, scale1: torch.Tensor, upper: nn.Module):
        self.q1 = torch.distributions.Normal(loc1, scale1)
        self.upper = upper
        self.l1 = loc1.shape[-1]
        self.l2 = upper.head.latent_dim
        super().__init__(loc1.shape[:-1], torch.Size([self.l1 + self.l2]), validate_args=False)

    def rsample(self, sample_shape=()) -> torch.Tensor:
        z1 = self.q1.rsample(torch.Size(sample_shape))  # (S, N, L1)
        loc2, scale2 = self.upper(z1)
        z2 = loc2 + scale2 * torch.randn_like(loc2)  # (S, N, L2)
        return torch.cat([z1, z2], -1)

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        z1, z2 = z[..., : self.l1], z[..., self.l1:]
        loc2, scale2 = self.upper(z1)
        return (self.q1.log_prob(z1).sum(-1)
                + torch.distributions.Normal(loc2, scale2).log_prob(z2).sum(-1))


class TwoLayerVAE(LatentBounds, nn.Module):
    """A VAE with two stochastic layers, Bernoulli pixels (module docstring).

    Parameters
    ----------
    data_shape : tuple of int
    latent_dims : (int, int)
        Sizes of z1 (next to the data) and z2 (default ``(100, 50)``).
    hidden : (sequence of int, sequence of int)
        Deterministic widths between x and z1, and between z1 and z2 (default
        ``((200, 200), (100, 100))``); each network of the model mirrors its guide's.
    activation : str
        Hidden activation (default ``"tanh"``, as in the paper).
    param_prefix : str
        Prefix of the names in Pyro's param store.
    """

    def __init__(self, data_shape: Sequence[int], latent_dims: Sequence[int] = (100, 50),
                 hidden: Sequence[Sequence[int]] = ((200, 200), (100, 100)), *,
                 activation: str = "tanh", param_prefix: str = ""):
        super().__init__()
        latent_dims = tuple(int(v) for v in latent_dims)
        if len(latent_dims) != 2 or min(latent_dims) < 1:
            raise ConfigError(f"latent_dims must be two positive sizes (z1, z2); got {latent_dims!r}.")
        hidden = tuple(tuple(int(h) for h in layer) for layer in hidden)
        if len(hidden) != 2:
            raise ConfigError(f"hidden must give two lists of widths (x-z1, z1-z2); got {hidden!r}.")
        self.data_shape = tuple(int(s) for s in data_shape)
        self.latent_dims = latent_dims
        self.latent_dim = sum(latent_dims)
        self.param_prefix = str(param_prefix)
        l1, l2 = latent_dims
        self.encoder = MLPEncoder(self.data_shape, l1, hidden[0], activation)  # q(z1|x)
        self.encoder_upper = GaussianMLP(l1, l2, hidden[1], activation)  # q(z2|z1)
        self.prior_net = GaussianMLP(l2, l1, tuple(reversed(hidden[1])), activation)  # p(z1|z2)
        self.decoder = MLPDecoder(self.data_shape, l1, hidden[0], activation)  # p(x|z1)
        self.likelihood = BernoulliLikelihood()
        self._event_dims = len(self.data_shape)

    # -- the Pyro program
    def model(self, x: torch.Tensor, num_data: int | None = None) -> None:
        """p(z2) p(z1|z2) p(x|z1) over a batch ``x`` (N, *data_shape)."""
        check_data_shape(x, self.data_shape)
        self.likelihood.check(x)
        pyro.module(self.param_prefix + "prior_net", self.prior_net)
        pyro.module(self.param_prefix + "decoder", self.decoder)
        n = x.shape[0]
        prior = dist.Normal(x.new_zeros(()), x.new_ones(())).expand((n, self.latent_dims[1]))
        with data_plate(x, num_data):
            z2 = pyro.sample("z2", prior.to_event(1))
            loc1, scale1 = self.prior_net(z2)
            z1 = pyro.sample("z1", dist.Normal(loc1, scale1).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z1)).to_event(self._event_dims), obs=x)

    def guide(self, x: torch.Tensor, num_data: int | None = None) -> None:
        """q(z1|x) q(z2|z1) with the model's signature and site names."""
        pyro.module(self.param_prefix + "encoder", self.encoder)
        pyro.module(self.param_prefix + "encoder_upper", self.encoder_upper)
        with data_plate(x, num_data):
            loc1, scale1 = self.encoder(x)
            z1 = pyro.sample("z1", dist.Normal(loc1, scale1).to_event(1))
            loc2, scale2 = self.encoder_upper(z1)
            pyro.sample("z2", dist.Normal(loc2, scale2).to_event(1))

    # -- the latent-variable protocol, z = (z1, z2)
    def encoder_distribution(self, x: torch.Tensor) -> torch.distributions.Distribution:
        loc1, scale1 = self.encoder(x)
        return _TwoLayerPosterior(loc1, scale1, self.encoder_upper)

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z2) + log p(z1|z2): (..., L1 + L2) -> (...)."""
        z1, z2 = z[..., : self.latent_dims[0]], z[..., self.latent_dims[0]:]
        loc1, scale1 = self.prior_net(z2)
        log_p2 = -0.5 * (z2.pow(2).sum(-1) + z2.shape[-1] * math.log(2 * math.pi))
        return log_p2 + torch.distributions.Normal(loc1, scale1).log_prob(z1).sum(-1)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z1): x (N, *data_shape), z (S, N, L1 + L2) -> (S, N)."""
        logits = self.decoder(z[..., : self.latent_dims[0]])
        lp = self.likelihood.dist(logits).log_prob(x)
        return lp.reshape(*lp.shape[: lp.dim() - self._event_dims], -1).sum(-1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z1) for z = (z1, z2): (..., L1 + L2) -> (..., *data_shape)."""
        return torch.sigmoid(self.decoder(z[..., : self.latent_dims[0]]))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(E_q[z1|x], mean of q(z2 | z1 = E_q[z1|x])): (N, *data_shape) -> (N, L1 + L2)."""
        loc1, _ = self.encoder(x)
        return torch.cat([loc1, self.encoder_upper(loc1)[0]], -1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor:
        """n draws x ~ p(x|z1) p(z1|z2) p(z2) (or the means E[x|z1] with ``mean=True``)."""
        p = next(self.decoder.parameters())
        z2 = torch.randn(n, self.latent_dims[1], device=p.device, dtype=p.dtype)
        loc1, scale1 = self.prior_net(z2)
        z1 = loc1 + scale1 * torch.randn_like(loc1)
        probs = torch.sigmoid(self.decoder(z1))
        return probs if mean else torch.bernoulli(probs)

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def extra_repr(self) -> str:
        return f"data_shape={self.data_shape}, latent_dims={self.latent_dims}"
