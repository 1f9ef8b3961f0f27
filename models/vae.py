"""The variational autoencoder as a Pyro program (Kingma & Welling, "Auto-encoding variational
Bayes", ICLR 2014; Rezende, Mohamed & Wierstra, ICML 2014).

The model::

    z_n ~ Normal(0, I)                  (latent_dim,)
    x_n ~ p(x | decoder(z_n))           Bernoulli, continuous Bernoulli or Gaussian pixels

and the guide ``q(z_n | x_n) = Normal(encoder(x_n))`` are written as ``model(x)`` and
``guide(x)`` with the same signature and the same site names (``"z"``, ``"x"``), inside one
``pyro.plate("data")``. Given ``num_data=N`` the plate has size N over the minibatch, so a
minibatch ELBO is an unbiased estimate of the full data set's ELBO. Train it with
:func:`probgen.inference.svi.fit_svi`; score it with :mod:`probgen.inference.bounds`.

Likelihoods (``likelihood=``):

``"bernoulli"``
    For 0/1 pixels (binarised images). Grey values are refused with an error: a Bernoulli
    density of grey values is not a likelihood.
``"continuous-bernoulli"``
    For grey values in [0, 1] (Loaiza-Ganem & Cunningham, NeurIPS 2019): a proper density
    on [0, 1].
``"gaussian"``
    For real values. The scale is one number shared by every pixel: learned (default,
    ``gaussian_scale=None``; floored at 1e-3) or fixed (``gaussian_scale=0.1``, say). A
    learned per-pixel scale is not offered: on MNIST's always-black border it shrinks
    towards zero and the likelihood diverges.
``"discretized-logistic"``
    For dequantized 8-bit (or L-level) pixels (Salimans et al. 2017; Kingma et al. 2016):
    the probability of each pixel's level under a logistic binned on the L levels, with a
    learned per-pixel scale (bounded: a probability is at most 1). As a density on the
    dequantized values it is constant on each bin, so the evaluation layer's dequantization
    bound is the VAE's bound on ``log P(k)`` itself, with no Jensen gap from the noise.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F

from probgen.errors import ConfigError, DataError, suggest
from probgen.inference.bounds import LatentBounds
from probgen.models.nets import Standardization, make_decoder, make_encoder

__all__ = ["VAE", "data_plate", "check_data_shape", "LIKELIHOODS", "BernoulliLikelihood",
           "BernoulliImage", "ContinuousBernoulliLikelihood", "GaussianLikelihood",
           "DiscretizedLogistic", "DiscretizedLogisticLikelihood", "ReparamNormal", "StandardNormal"]


_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class ReparamNormal(dist.Normal):
    """``Normal(loc, scale)`` that scores its own last draw from the noise that made it.

    ``rsample`` draws ``z = loc + scale * eps`` exactly as :class:`~pyro.distributions.Normal`
    does (the same random numbers) and keeps ``(z, eps)``; ``log_prob(z)`` of that very
    tensor is then ``-eps^2 / 2 - log scale - log sqrt(2 pi)``, fewer operations forward and
    backward than recovering ``eps = (z - loc) / scale``. Value and total gradient are the
    same (the pathwise terms through ``z`` and through ``loc``/``scale`` cancel); any other
    value, a view or ``z.detach()`` included (the doubly-reparametrised gradient scores
    those), is scored by the usual formula.
    """

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        eps = torch.empty(shape, dtype=self.loc.dtype, device=self.loc.device).normal_()
        value = self.loc + eps * self.scale
        self._draw = (value, eps)
        return value

    def log_prob(self, value):
        draw = getattr(self, "_draw", None)
        if draw is not None and value is draw[0]:
            return -0.5 * draw[1].pow(2) - self.scale.log() - _LOG_SQRT_2PI
        return super().log_prob(value)


class StandardNormal(dist.Normal):
    """``Normal(0, 1)`` of batch shape ``batch_shape`` on ``like``'s dtype and device (the loc
    and scale are expanded, not copied), whose ``log_prob`` is ``-z^2 / 2 - log sqrt(2 pi)``:
    two operations forward and back where ``Normal``'s general formula takes eight. Values
    of another shape than ``(..., *batch_shape)`` are scored by the general formula."""

    def __init__(self, batch_shape, *, like: torch.Tensor, validate_args=None):
        zero = like.new_zeros(())
        super().__init__(zero.expand(batch_shape), (zero + 1).expand(batch_shape),
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(StandardNormal, _instance)
        return super().expand(batch_shape, _instance=new)

    def log_prob(self, value):
        if value.shape[value.dim() - len(self.batch_shape):] != self.batch_shape:
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        return -0.5 * value.pow(2) - _LOG_SQRT_2PI


# ----------------------------------------------------------------------------- likelihoods
def _describe_range(x: torch.Tensor) -> str:
    return f"[{float(x.min()):.4g}, {float(x.max()):.4g}]"


def _require_unit_interval(x: torch.Tensor, expects: str, advice: str) -> None:
    """A :class:`DataError` unless every value of ``x`` lies in [0, 1]: ``expects`` says who
    expects what, ``advice`` what to do."""
    lo, hi = (float(v) for v in torch.aminmax(x.reshape(-1)))
    if lo >= 0 and hi <= 1:
        return
    found = _describe_range(x) if bool(torch.isfinite(x).all()) else "with NaN/inf"
    raise DataError(f"{expects}, but x has values in {found}. {advice}")


class BernoulliImage(dist.Independent):
    """``Bernoulli(logits=logits).to_event(event_dims)`` whose ``log_prob`` negates the summed
    binary cross-entropy instead of summing negated per-pixel terms: the same value to the
    last bit (negation is exact, and the sum runs over the same numbers in the same order)
    with one pass over the pixels fewer, forward and backward. Values of another shape than
    the logits are scored by the general formula."""

    def __init__(self, logits: torch.Tensor, event_dims: int, validate_args=None):
        super().__init__(dist.Bernoulli(logits=logits), event_dims, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(BernoulliImage, _instance)
        return super().expand(batch_shape, _instance=new)

    def log_prob(self, value):
        base = self.base_dist
        if not isinstance(base, dist.Bernoulli) or value.shape != base.logits.shape:
            return super().log_prob(value)
        if base._validate_args:
            base._validate_sample(value)
        bce = F.binary_cross_entropy_with_logits(base.logits, value, reduction="none")
        return -bce.reshape(bce.shape[: bce.dim() - self.reinterpreted_batch_ndims] + (-1,)).sum(-1)


class BernoulliLikelihood(nn.Module):
    """p(x|z) = prod Bernoulli(x_i; sigmoid(logits_i)) for 0/1 pixels."""

    name = "bernoulli"
    expected = "0/1 pixels (binarised images)"

    def dist(self, raw: torch.Tensor):
        return dist.Bernoulli(logits=raw)

    def image_dist(self, raw: torch.Tensor, event_dims: int):
        """p(x|z) of whole images: ``dist(raw).to_event(event_dims)``, in one fewer pass."""
        return BernoulliImage(raw, event_dims)

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw)

    def check(self, x: torch.Tensor) -> None:
        # Two cheap passes instead of ((x == 0) | (x == 1)).all(): the range, then
        # sum x (1 - x), which is 0 on [0, 1] exactly when every value is 0 or 1 (all terms
        # are >= 0, so nothing cancels).
        flat = x.reshape(-1)
        lo, hi = (float(v) for v in torch.aminmax(flat))
        if not (lo >= 0 and hi <= 1):
            raise DataError(
                f"likelihood='bernoulli' expects 0/1 pixels (values in [0, 1]), but x has values "
                f"in {_describe_range(x) if bool(torch.isfinite(x).all()) else 'with NaN/inf'}. "
                "Scale the data to [0, 1] (divide 0..255 pixels by 255) and binarise it "
                "(--binarize dynamic or fixed)."
            )
        if float(torch.dot(flat, 1 - flat)) == 0:
            return
        grey = flat[(flat != 0) & (flat != 1)]
        raise DataError(
            f"likelihood='bernoulli' expects 0/1 pixels, but x holds grey values in [0, 1] "
            f"({grey.numel()} of {flat.numel()} values are neither 0 nor 1, e.g. {float(grey[0]):.4g}). "
            "Binarise the data (--binarize dynamic, or binarize='dynamic' when loading), or use "
            "likelihood='continuous-bernoulli' or 'gaussian' for grey values."
        )


class ContinuousBernoulliLikelihood(BernoulliLikelihood):
    """p(x|z) = prod ContinuousBernoulli(x_i; logits_i): a density on [0, 1]."""

    name = "continuous-bernoulli"
    expected = "grey values in [0, 1]"

    def dist(self, raw: torch.Tensor):
        return dist.ContinuousBernoulli(logits=raw)

    def image_dist(self, raw: torch.Tensor, event_dims: int):
        return self.dist(raw).to_event(event_dims)

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        return dist.ContinuousBernoulli(logits=raw).mean

    def check(self, x: torch.Tensor) -> None:
        _require_unit_interval(
            x, "likelihood='continuous-bernoulli' expects values in [0, 1]",
            "Scale the data to [0, 1] (divide 0..255 pixels by 255; --value-range 0,1), or use "
            "likelihood='gaussian'.")


class GaussianLikelihood(Standardization, nn.Module):
    """p(x|z) = prod Normal(x_i; decoder(z)_i, sigma), one sigma for every pixel.

    With a standardisation (:meth:`~probgen.models.nets.Standardization.standardize_by`:
    per-feature ``shift`` m and ``unit`` s, the training data's mean and standard deviation),
    the decoder works in standard units: p(x|z) = prod Normal(x_i; m_i + s_i decoder(z)_i,
    s_i sigma), which is the density of the standardised value ``(x - m) / s`` times the
    Jacobian ``1 / prod s_i``: a density of x itself, on the data's own scale, so that its
    bounds compare with any other model's. The encoder of the VAE sees ``(x - m) / s``.
    Without one (the default, and on images) the decoder's output is the mean itself.

    Parameters
    ----------
    scale : float, optional
        A fixed sigma (in standard units where standardised); ``None`` learns it
        (softplus-parametrised, floored at 1e-3, starting at 0.1).
    """

    name = "gaussian"
    expected = "real values"
    _floor = 1e-3

    def __init__(self, scale: float | None = None):
        super().__init__()
        if scale is None:
            init = 0.1 - self._floor
            self.raw_scale = nn.Parameter(torch.tensor(math.log(math.expm1(init))))
            self.fixed_scale = None
        else:
            if not scale > 0:
                raise ConfigError(f"gaussian_scale must be a positive number; got {scale!r}.")
            self.raw_scale = None
            self.fixed_scale = float(scale)
        self._init_standardization()  # none until standardize_by

    @property
    def scale(self) -> torch.Tensor | float:
        if self.raw_scale is None:
            return self.fixed_scale
        return F.softplus(self.raw_scale) + self._floor

    def dist(self, raw: torch.Tensor):
        scale = self.scale
        if not isinstance(scale, torch.Tensor):
            scale = raw.new_tensor(scale)
        if self.shift is None:
            return dist.Normal(raw, scale)
        return dist.Normal(self.unstandardize(raw), self.unit * scale)

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        return self.unstandardize(raw)

    def check(self, x: torch.Tensor) -> None:
        if not bool(torch.isfinite(x).all()):
            raise DataError("likelihood='gaussian' needs finite values, but x holds NaN or inf. "
                            "Clean the data first.")


class DiscretizedLogistic(dist.TorchDistribution):
    """The discretized logistic of Salimans et al. (2017, PixelCNN++) and Kingma et al.
    (2016, IAF) on ``L`` levels, as a density on dequantized values ``x`` in [0, 1).

    Level ``k`` in 0..L-1 is the bin ``[k / L, (k + 1) / L)``; its probability is the mass a
    logistic of location ``loc`` and scale ``exp(log_scale)`` puts there, the first bin
    reaching down to -inf and the last up to +inf, so that the L probabilities sum to 1::

        P(k) = F((k + 1) / L) - F(k / L),   F(-inf) for k = 0, F(+inf) for k = L - 1.

    ``log_prob(x)`` is ``log P(floor(L x)) + log L``: a density constant on each bin, whose
    dequantization bound ``E_u log p((k + u) / L) - log L`` equals ``log P(k)`` exactly.
    ``log_prob_levels(k)`` gives ``log P(k)`` of integer levels. Element-wise: batch shape
    is the shape of ``loc``.
    """

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, levels: int, validate_args=None):
        self.loc, self.log_scale = torch.broadcast_tensors(loc, log_scale)
        self.levels = int(levels)
        super().__init__(self.loc.shape, torch.Size(), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return DiscretizedLogistic(self.loc.expand(shape), self.log_scale.expand(shape), self.levels)

    def log_prob_levels(self, k: torch.Tensor) -> torch.Tensor:
        """``log P(k)`` for integer levels ``k`` (as floats or integers) in 0..L-1."""
        k = k.to(self.loc.dtype)
        inv_scale = torch.exp(-self.log_scale)
        upper = ((k + 1) / self.levels - self.loc) * inv_scale
        lower = (k / self.levels - self.loc) * inv_scale
        first, last = k <= 0, k >= self.levels - 1
        zero = torch.zeros((), dtype=upper.dtype, device=upper.device)
        # log(F(a) - F(b)) = log s(a) + log s(-b) + log(1 - exp(b - a)) with s the logistic
        # sigmoid: no cancellation when both lie in one tail; the edge bins drop their terms
        log_p = torch.where(last, zero, F.logsigmoid(upper))
        log_p = log_p + torch.where(first, zero, F.logsigmoid(-lower))
        gap = torch.log(-torch.expm1((lower - upper).clamp(max=-1e-30)))
        return log_p + torch.where(first | last, zero, gap)

    def levels_of(self, x: torch.Tensor) -> torch.Tensor:
        """The level ``floor(L x)`` of each value, clamped to 0..L-1."""
        return torch.floor(x * self.levels).clamp_(0, self.levels - 1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.log_prob_levels(self.levels_of(value)) + math.log(self.levels)

    @torch.no_grad()
    def sample(self, sample_shape=()) -> torch.Tensor:
        """``(k + u) / L``: a level drawn from P, spread uniformly over its bin."""
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp_(1e-6, 1 - 1e-6)
        y = self.loc.expand(shape) + torch.exp(self.log_scale).expand(shape) * (u.log() - (-u).log1p())
        k = self.levels_of(y)
        return (k + torch.rand_like(k)) / self.levels

    @property
    def mean(self) -> torch.Tensor:
        """The logistic's location, clipped to [0, 1] (the pixel a decoder shows)."""
        return self.loc.clamp(0, 1)


class DiscretizedLogisticLikelihood(nn.Module):
    """p(x|z) = prod DiscretizedLogistic(x_i; decoder(z)_i, s_i) on ``levels`` levels.

    A proper probability of each pixel's level, so the VAE's bounds are bounds on ``log P(k)``
    of the discrete image (module docstring of :class:`DiscretizedLogistic`). The location is
    the decoder's output; the log-scale ``log s_i`` is learned per pixel (starting at
    ``log(1 / levels)``, clamped below at ``-7``): a probability cannot exceed 1, so a
    pixel that is always 0 cannot make it diverge, unlike a Gaussian density.

    Parameters
    ----------
    data_shape : tuple of int
    levels : int
        Number of levels (256 for 8-bit pixels); the data must be dequantized on them.
    """

    name = "discretized-logistic"
    expected = "dequantized levels in [0, 1)"
    _min_log_scale = -7.0

    def __init__(self, data_shape, levels: int):
        super().__init__()
        if not (isinstance(levels, int) and levels >= 2):
            raise ConfigError(f"likelihood='discretized-logistic' needs the number of levels of the "
                              f"data (256 for 8-bit pixels), at least 2; got {levels!r}.")
        self.levels = levels
        self.log_scale = nn.Parameter(torch.full(tuple(data_shape), -math.log(levels)))

    def dist(self, raw: torch.Tensor) -> DiscretizedLogistic:
        log_scale = self.log_scale.clamp(min=self._min_log_scale).to(raw.dtype)
        return DiscretizedLogistic(raw, log_scale, self.levels)

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.clamp(0, 1)

    def check(self, x: torch.Tensor) -> None:
        _require_unit_interval(
            x, "likelihood='discretized-logistic' expects dequantized pixels in [0, 1)",
            "Give 8-bit images with --dequantize auto (the default of this likelihood).")


LIKELIHOODS: dict[str, type[nn.Module]] = {
    "bernoulli": BernoulliLikelihood,
    "continuous-bernoulli": ContinuousBernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "discretized-logistic": DiscretizedLogisticLikelihood,
}


# ----------------------------------------------------------------------------- the VAE
def data_plate(x: torch.Tensor, num_data: int | None):
    """The ``"data"`` plate of a batch ``x`` (N, ...): of size N, or of the data set's size
    ``num_data`` with the batch as its subsample, so that a minibatch ELBO is scaled by
    ``num_data / N``."""
    n = x.shape[0]
    if num_data is None or num_data == n:
        return pyro.plate("data", n)
    if num_data < n:
        raise ConfigError(f"num_data (size of the full data set) must be >= the batch size "
                          f"{n}; got {num_data}.")
    # The caller drew the minibatch; the plate only needs its size to scale by N / n.
    return pyro.plate("data", num_data, subsample=torch.arange(n, device=x.device))


def check_data_shape(x: torch.Tensor, data_shape: tuple) -> None:
    """Refuse a batch whose per-example shape is not ``data_shape``, saying how to fix it."""
    if tuple(x.shape[1:]) != tuple(data_shape):
        shape = ", ".join(map(str, data_shape))
        raise DataError(f"x must have shape (N, {shape}), the data shape this VAE was built for; "
                        f"got {tuple(x.shape)}. Reshape x to (N, {shape}), or build the VAE "
                        "with the data's own shape.")


class VAE(LatentBounds, nn.Module):
    """A VAE with a diagonal Gaussian q(z|x), a standard normal prior and a choice of p(x|z).

    Parameters
    ----------
    data_shape : tuple of int
        Shape of one example, e.g. ``(1, 28, 28)``.
    latent_dim : int
    hidden : sequence of int, optional
        Hidden widths of the encoder (the decoder mirrors them); architecture default if None
        (MLP: ``(400,)``, the 784-400-50 network of the Pyro and Kingma-Welling examples).
    arch : {"mlp", "conv"}
    likelihood : {"bernoulli", "continuous-bernoulli", "gaussian", "discretized-logistic"}
    activation : str, optional
        ``"softplus"``, ``"relu"``, ...; architecture default if None.
    gaussian_scale : float, optional
        Fixed pixel sigma for ``likelihood="gaussian"``; ``None`` learns one.
    levels : int, optional
        Number of pixel levels for ``likelihood="discretized-logistic"`` (256 for 8-bit
        images; ``round(1 / data.bin_width)`` of dequantized data).
    encoder, decoder : nn.Module, optional
        Your own networks instead (encoder: x -> (loc, scale); decoder: z (..., L) ->
        (..., *data_shape) raw output).
    param_prefix : str
        Prefix of the names under which the networks enter Pyro's param store
        (``"<prefix>encoder"``, ...), so that two VAEs can share one store.
    """

    def __init__(self, data_shape: Sequence[int], latent_dim: int = 50,
                 hidden: Sequence[int] | None = None, *, arch: str = "mlp",
                 likelihood: str = "bernoulli", activation: str | None = None,
                 gaussian_scale: float | None = None, levels: int | None = None,
                 encoder: nn.Module | None = None,
                 decoder: nn.Module | None = None, param_prefix: str = ""):
        super().__init__()
        self.param_prefix = str(param_prefix)
        if likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"likelihood must be one of {', '.join(LIKELIHOODS)}; got {likelihood!r}."
                f"{suggest(likelihood, LIKELIHOODS)}"
            )
        self.data_shape = tuple(int(s) for s in data_shape)
        self.latent_dim = int(latent_dim)
        self.encoder = encoder or make_encoder(arch, self.data_shape, self.latent_dim, hidden, activation)
        self.decoder = decoder or make_decoder(arch, self.data_shape, self.latent_dim, hidden, activation)
        if likelihood == "gaussian":
            self.likelihood = GaussianLikelihood(gaussian_scale)
        elif likelihood == "discretized-logistic":
            self.likelihood = DiscretizedLogisticLikelihood(self.data_shape, levels)
        else:
            self.likelihood = LIKELIHOODS[likelihood]()
        self._event_dims = len(self.data_shape)
        self._likelihood_has_params = any(True for _ in self.likelihood.parameters())
        # Mixed precision for the training program: with a dtype here (torch.bfloat16) the
        # networks in model() and guide() run under torch.autocast and their outputs are cast
        # back to float32 before any distribution sees them. elbo, iwae_bound,
        # log_likelihood and decode never autocast: likelihoods are evaluated in float32.
        self.autocast_dtype: torch.dtype | None = None

    def _image_dist(self, raw: torch.Tensor):
        """p(x|z) over whole examples: the likelihood's own (a Bernoulli's saves a pass over
        the pixels), else its per-pixel distribution with the data dimensions as its event."""
        own = getattr(self.likelihood, "image_dist", None)
        if own is not None:
            return own(raw, self._event_dims)
        return self.likelihood.dist(raw).to_event(self._event_dims)

    def standardize_by(self, x: torch.Tensor) -> None:
        """Standardise the data inside the Gaussian likelihood by the training data ``x``
        (per-feature mean and standard deviation; :class:`GaussianLikelihood`): the networks
        work in standard units, the bounds stay densities of x on its own scale. For
        real-valued vectors of any scale (``probgen train vae`` does it there by default)."""
        if not isinstance(self.likelihood, GaussianLikelihood):
            raise ConfigError(f"a standardisation is offered with likelihood='gaussian' only; this "
                              f"VAE's is {self.likelihood.name!r}.")
        check_data_shape(x, self.data_shape)
        self.likelihood.standardize_by(x)

    def _encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        standardize = getattr(self.likelihood, "standardize", None)
        return x if standardize is None else standardize(x)

    def _autocast(self, x: torch.Tensor):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=self.autocast_dtype)

    # -- the Pyro program
    def model(self, x: torch.Tensor, num_data: int | None = None) -> None:
        """p(z) p(x|z) over a batch ``x`` (N, *data_shape); ``num_data`` scales to the data set."""
        check_data_shape(x, self.data_shape)
        self.likelihood.check(x)
        pyro.module(self.param_prefix + "decoder", self.decoder)
        if self._likelihood_has_params:
            pyro.module(self.param_prefix + "likelihood", self.likelihood)
        n = x.shape[0]
        prior = StandardNormal((n, self.latent_dim), like=x)
        with data_plate(x, num_data):
            z = pyro.sample("z", prior.to_event(1))
            with self._autocast(x):
                raw = self.decoder(z)  # (N, *data_shape)
            raw = raw.to(x.dtype)
            pyro.sample("x", self._image_dist(raw), obs=x)

    def guide(self, x: torch.Tensor, num_data: int | None = None) -> None:
        """q(z|x) = Normal(encoder(x)) with the model's signature and site names."""
        pyro.module(self.param_prefix + "encoder", self.encoder)
        with data_plate(x, num_data):
            with self._autocast(x):
                loc, scale = self.encoder(self._encoder_input(x))  # (N, L) each
            pyro.sample("z", ReparamNormal(loc.to(x.dtype), scale.to(x.dtype)).to_event(1))

    # -- the latent-variable protocol
    def encoder_distribution(self, x: torch.Tensor):
        """q(z|x): batch shape (N,), event shape (latent_dim,)."""
        loc, scale = self.encoder(self._encoder_input(x))
        return torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)

    def prior(self, x: torch.Tensor):
        """p(z) with batch shape (N,) on x's dtype and device."""
        n = x.shape[0]
        loc = x.new_zeros((n, self.latent_dim))
        return torch.distributions.Independent(torch.distributions.Normal(loc, torch.ones_like(loc)), 1)

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I) summed over the latent dimension: (..., L) -> (...)."""
        return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z): (..., L) -> (..., *data_shape)."""
        return self.likelihood.mean(self.decoder(z))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z): x (N, *data_shape), z (S, N, L) -> (S, N)."""
        lp = self.likelihood.dist(self.decoder(z)).log_prob(x)  # (S, N, *data_shape)
        return lp.reshape(*lp.shape[: lp.dim() - self._event_dims], -1).sum(-1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean of q(z|x): (N, *data_shape) -> (N, L)."""
        return self.encoder(self._encoder_input(x))[0]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)): the mean of p(x | z = E_q[z])."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor:
        """n draws x ~ p(x|z) p(z) (or, with ``mean=True``, the means E[x|z])."""
        p = next(self.decoder.parameters())
        z = torch.randn(n, self.latent_dim, device=p.device, dtype=p.dtype)
        raw = self.decoder(z)
        return self.likelihood.mean(raw) if mean else self.likelihood.dist(raw).sample()

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def extra_repr(self) -> str:
        return f"data_shape={self.data_shape}, latent_dim={self.latent_dim}, likelihood={self.likelihood.name!r}"
