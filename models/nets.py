"""The networks every model shares: plain ``nn.Module`` encoders, decoders, generators and
discriminators. Models take them as arguments; nothing here knows about Pyro or losses.

Shapes are given as (batch, ...) in the docstrings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

# ============================================================================ encoders / decoders
# An encoder maps x (N, *data_shape) to a code. A *stochastic* encoder returns the location and
# scale of a diagonal Gaussian q(z|x), each (N, latent_dim); a deterministic one (autoencoders)
# returns the code (N, latent_dim). A decoder maps z (..., latent_dim) to the raw output
# (..., *data_shape): logits for Bernoulli-type likelihoods, the mean for a Gaussian. Any
# number of leading dimensions is allowed on z, so S samples of N codes, (S, N, latent_dim),
# decode in one call.

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
}

_MIN_SCALE = 1e-4  # floor on encoder scales, so that log q(z|x) stays finite


def _activation(name: str) -> type[nn.Module]:
    from probgen.errors import ConfigError, suggest

    if name not in ACTIVATIONS:
        raise ConfigError(
            f"activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}.{suggest(name, ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


def make_mlp(sizes: Sequence[int], activation: str, *, last_activation: bool) -> nn.Sequential:
    """Linear layers ``sizes[0] -> sizes[1] -> ...`` with ``activation`` between them."""
    act = _activation(activation)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def _check_sizes(latent_dim: int, hidden: Sequence[int]) -> tuple[int, ...]:
    from probgen.errors import ConfigError

    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise ConfigError(f"latent_dim must be a positive integer; got {latent_dim!r}.")
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    if any((not isinstance(h, int)) or h < 1 for h in hidden):
        raise ConfigError(f"hidden must be positive integers (layer widths); got {hidden!r}.")
    return hidden


class GaussianHead(nn.Module):
    """h (N, H) -> (loc, scale) of a diagonal Gaussian, each (N, L); one fused matmul."""

    def __init__(self, in_features: int, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.linear = nn.Linear(in_features, 2 * latent_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.linear(h)  # (N, 2L)
        loc, raw_scale = out[..., : self.latent_dim], out[..., self.latent_dim:]
        return loc, F.softplus(raw_scale) + _MIN_SCALE


class MLPEncoder(nn.Module):
    """Fully connected encoder, e.g. 784-400-(50, 50) with Softplus (Kingma & Welling 2014).

    Parameters
    ----------
    data_shape : tuple of int
        Shape of one example, e.g. ``(1, 28, 28)``; it is flattened.
    latent_dim : int
    hidden : sequence of int
        Widths of the hidden layers.
    activation : {"softplus", "relu", "elu", "tanh"}
    stochastic : bool
        ``True``: return ``(loc, scale)`` of q(z|x); ``False``: return the code only.
    """

    def __init__(self, data_shape: Sequence[int], latent_dim: int, hidden: Sequence[int] = (400,),
                 activation: str = "softplus", stochastic: bool = True):
        super().__init__()
        hidden = _check_sizes(latent_dim, hidden)
        self.data_shape = tuple(data_shape)
        self.latent_dim = latent_dim
        self.stochastic = stochastic
        in_dim = math.prod(self.data_shape)
        self.body = make_mlp((in_dim, *hidden), activation, last_activation=True)
        last = hidden[-1] if hidden else in_dim
        self.head = GaussianHead(last, latent_dim) if stochastic else nn.Linear(last, latent_dim)

    def forward(self, x: torch.Tensor):
        h = self.body(x.reshape(x.shape[0], -1))  # (N, D) -> (N, H)
        return self.head(h)


class MLPDecoder(nn.Module):
    """Fully connected decoder: z (..., L) -> raw output (..., *data_shape)."""

    def __init__(self, data_shape: Sequence[int], latent_dim: int, hidden: Sequence[int] = (400,),
                 activation: str = "softplus"):
        super().__init__()
        hidden = _check_sizes(latent_dim, hidden)
        self.data_shape = tuple(data_shape)
        self.latent_dim = latent_dim
        self.net = make_mlp((latent_dim, *reversed(hidden), math.prod(self.data_shape)), activation,
                        last_activation=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)  # (..., D)
        return out.reshape(*z.shape[:-1], *self.data_shape)  # (..., C, H, W)


def _conv_shape(data_shape: Sequence[int]) -> tuple[int, int, int]:
    from probgen.errors import ConfigError

    if len(data_shape) != 3 or data_shape[1] % 4 or data_shape[2] % 4:
        raise ConfigError(
            f"arch='conv' needs images of shape (C, H, W) with H and W divisible by 4; got "
            f"{tuple(data_shape)}. Use arch='mlp' for this data."
        )
    return tuple(data_shape)  # type: ignore[return-value]


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (32, 64 channels) and a fully connected stack.

    x (N, C, H, W) -> (N, 32, H/2, W/2) -> (N, 64, H/4, W/4) -> (N, 64*H*W/16) -> hidden -> code.
    """

    def __init__(self, data_shape: Sequence[int], latent_dim: int, hidden: Sequence[int] = (256,),
                 activation: str = "relu", stochastic: bool = True):
        super().__init__()
        hidden = _check_sizes(latent_dim, hidden)
        c, h, w = _conv_shape(data_shape)
        self.data_shape = (c, h, w)
        self.latent_dim = latent_dim
        self.stochastic = stochastic
        act = _activation(activation)
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, 4, stride=2, padding=1), act(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), act(),
        )
        flat = 64 * (h // 4) * (w // 4)
        self.body = make_mlp((flat, *hidden), activation, last_activation=True)
        last = hidden[-1] if hidden else flat
        self.head = GaussianHead(last, latent_dim) if stochastic else nn.Linear(last, latent_dim)

    def forward(self, x: torch.Tensor):
        h = self.conv(x.reshape(x.shape[0], *self.data_shape))  # (N, 64, H/4, W/4)
        return self.head(self.body(h.flatten(1)))  # (N, 64*H*W/16) -> (N, L)


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: z (..., L) -> hidden -> (64, H/4, W/4) -> (C, H, W)."""

    def __init__(self, data_shape: Sequence[int], latent_dim: int, hidden: Sequence[int] = (256,),
                 activation: str = "relu"):
        super().__init__()
        hidden = _check_sizes(latent_dim, hidden)
        c, h, w = _conv_shape(data_shape)
        self.data_shape = (c, h, w)
        self.latent_dim = latent_dim
        act = _activation(activation)
        self._grid = (64, h // 4, w // 4)
        self.body = make_mlp((latent_dim, *reversed(hidden), math.prod(self._grid)), activation,
                         last_activation=True)
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), act(),
            nn.ConvTranspose2d(32, c, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.body(z.reshape(-1, z.shape[-1]))  # (M, L) -> (M, 64*H*W/16), M = prod(lead)
        out = self.deconv(h.reshape(-1, *self._grid))  # (M, 64, H/4, W/4) -> (M, C, H, W)
        return out.reshape(*lead, *self.data_shape)


# name -> (encoder class, decoder class, default hidden sizes, default activation)
ARCHITECTURES: dict[str, tuple[type[nn.Module], type[nn.Module], tuple[int, ...], str]] = {
    "mlp": (MLPEncoder, MLPDecoder, (400,), "softplus"),
    "conv": (ConvEncoder, ConvDecoder, (256,), "relu"),
}


def _arch(arch: str):
    from probgen.errors import ConfigError, suggest

    if arch not in ARCHITECTURES:
        raise ConfigError(
            f"arch must be one of {', '.join(ARCHITECTURES)}; got {arch!r}.{suggest(arch, ARCHITECTURES)}"
        )
    return ARCHITECTURES[arch]


def make_encoder(arch: str, data_shape: Sequence[int], latent_dim: int,
                 hidden: Sequence[int] | None = None, activation: str | None = None,
                 stochastic: bool = True) -> nn.Module:
    """The encoder of architecture ``arch`` ("mlp" or "conv"); ``None`` takes its defaults."""
    enc, _, default_hidden, default_act = _arch(arch)
    return enc(data_shape, latent_dim, default_hidden if hidden is None else hidden,
               activation or default_act, stochastic=stochastic)


def make_decoder(arch: str, data_shape: Sequence[int], latent_dim: int,
                 hidden: Sequence[int] | None = None, activation: str | None = None) -> nn.Module:
    """The decoder of architecture ``arch`` ("mlp" or "conv"); ``None`` takes its defaults."""
    _, dec, default_hidden, default_act = _arch(arch)
    return dec(data_shape, latent_dim, default_hidden if hidden is None else hidden,
               activation or default_act)


# ============================================================================ end of encoders / decoders

# =============================================================================================
# Generators and discriminators (GAN)
#
# DCGAN-style convolutional pairs for 28x28 and 32x32 images (Radford, Metz and Chintala,
# "Unsupervised representation learning with deep convolutional generative adversarial
# networks", 2016) and small MLP pairs for 1-D/2-D toy data. A discriminator built with
# ``pack=K`` judges K samples at once, concatenated along features (or channels): PacGAN
# (Lin, Khetan, Fanti and Oh, "PacGAN: the power of two samples in generative adversarial
# networks", 2018).
# =============================================================================================
import math as _gan_math  # noqa: E402

from torch import nn as _gan_nn  # noqa: E402

GAN_DISCRIMINATOR_NORMS = ("batch", "spectral", "none")


def _gan_output_activation(value_range) -> _gan_nn.Module:
    """Sigmoid for pixels in [0, 1], tanh for [-1, 1], identity for unbounded data."""
    if value_range is None:
        return _gan_nn.Identity()
    lo, hi = float(value_range[0]), float(value_range[1])
    if (lo, hi) == (0.0, 1.0):
        return _gan_nn.Sigmoid()
    if (lo, hi) == (-1.0, 1.0):
        return _gan_nn.Tanh()
    raise ValueError(f"value_range must be (0, 1), (-1, 1) or None; got {value_range!r}.")


def _gan_check_norm(norm: str) -> None:
    if norm not in GAN_DISCRIMINATOR_NORMS:
        raise ValueError(
            f"norm must be one of {', '.join(GAN_DISCRIMINATOR_NORMS)}; got {norm!r}."
        )


def _gan_sn(module: _gan_nn.Module, norm: str) -> _gan_nn.Module:
    if norm == "spectral":
        return _gan_nn.utils.parametrizations.spectral_norm(module)
    return module


class _GroupedBatchNorm:
    """BatchNorm whose batch statistics are taken per group of consecutive examples.

    While ``groups`` is k > 1 (set by :func:`probgen.inference.adversarial.batch_groups`), a
    training-mode forward pass over
    a batch of k * n examples normalises each block of n consecutive examples with its own
    mean and variance and updates the running statistics once per block, in order: exactly
    what k separate passes over the blocks would do. A discriminator judging a real and a
    generated batch in one pass thus normalises them as in two passes (pytorch/examples'
    DCGAN), without two passes. With ``groups`` = 1 or in eval mode it is plain BatchNorm;
    its parameters and buffers are those of BatchNorm.
    """

    groups = 1

    def forward(self, x):
        k = int(self.groups)
        if k == 1 or not (self.training or self.running_mean is None):
            return super().forward(x)
        n = x.shape[0]
        if n % k:
            raise ValueError(f"a batch of {n} cannot be cut into {k} equal groups")
        m = n // k
        # BatchNorm itself on each block of consecutive examples, in order: the blocks are
        # views (no copy), each pass normalises and updates the running statistics in one
        # native kernel, and only the outputs are joined
        return torch.cat([super(_GroupedBatchNorm, self).forward(x[i * m:(i + 1) * m]) for i in range(k)])


class GroupedBatchNorm1d(_GroupedBatchNorm, _gan_nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` with per-group batch statistics (see
    :func:`probgen.inference.adversarial.batch_groups`)."""


class GroupedBatchNorm2d(_GroupedBatchNorm, _gan_nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d` with per-group batch statistics (see
    :func:`probgen.inference.adversarial.batch_groups`)."""


def standardization(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, unit)`` per feature of ``x`` (N, *shape), computed in float64: the unit is the
    standard deviation, or 1 for a feature whose standard deviation is at most 1e-6 (or for a
    single example)."""
    x64 = x.double()
    std = x64.std(0) if x.shape[0] > 1 else torch.zeros_like(x64[0])
    unit = torch.where(std > 1e-6, std, torch.ones_like(std))
    return x64.mean(0).to(x.dtype), unit.to(x.dtype)


class Standardization:
    """Optional per-feature standardisation of a module's data side, a mixin (the GAN's MLPs,
    the VAE's Gaussian likelihood, the autoencoder): buffers ``shift`` and ``unit`` (the
    training data's mean and standard deviation, set by :meth:`standardize_by`), absent from
    the state dict where unset, so that modules without one save and load as they always did
    and a fresh module takes a standardised one's state."""

    def _init_standardization(self) -> None:
        self.register_buffer("shift", None)
        self.register_buffer("unit", None)

    @property
    def standardized(self) -> bool:
        return self.shift is not None

    @torch.no_grad()
    def standardize_by(self, x: torch.Tensor) -> None:
        """Work in the standard units of ``x`` (N, *shape), the training data (a feature
        constant there keeps a unit of 1; :func:`standardization`)."""
        self.shift, self.unit = standardization(x)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - shift) / unit``; x itself without a standardisation."""
        return x if self.shift is None else (x - self.shift) / self.unit

    def unstandardize(self, u: torch.Tensor) -> torch.Tensor:
        """``shift + unit * u``; u itself without a standardisation."""
        return u if self.shift is None else self.shift + self.unit * u

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("shift", "unit"):
            if prefix + name in state_dict and getattr(self, name) is None:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MLPGenerator(Standardization, _gan_nn.Module):
    """z (B, latent_dim) -> x (B, out_dim): ReLU MLP with a linear output (toy data, vectors).
    With a standardisation (:meth:`standardize_by`) the MLP's output is in standard units and
    x = shift + unit * output.

    Parameters
    ----------
    latent_dim, out_dim : int
    hidden : tuple of int
        Widths of the hidden layers.
    """

    def __init__(self, latent_dim: int, out_dim: int, hidden=(256, 256, 256)):
        super().__init__()
        layers, d = [], latent_dim
        for h in hidden:
            layers += [_gan_nn.Linear(d, h), _gan_nn.ReLU()]
            d = h
        layers.append(_gan_nn.Linear(d, out_dim))
        self.net = _gan_nn.Sequential(*layers)
        self.latent_dim, self.out_shape = latent_dim, (out_dim,)
        self._init_standardization()

    def forward(self, z):
        return self.unstandardize(self.net(z))


class MLPDiscriminator(Standardization, _gan_nn.Module):
    """x (B, in_dim) -> logits (B / pack,): LeakyReLU MLP judging ``pack`` samples at once.

    The batch is cut into consecutive groups of ``pack`` samples whose features are
    concatenated: (B, D) -> (B / pack, pack * D). With a standardisation
    (:meth:`standardize_by`) it judges ``(x - shift) / unit``.
    """

    def __init__(self, in_dim: int, hidden=(256, 256, 256), *, pack: int = 1, norm: str = "none"):
        super().__init__()
        _gan_check_norm(norm)
        layers, d = [], in_dim * pack
        for h in hidden:
            layers.append(_gan_sn(_gan_nn.Linear(d, h), norm))
            if norm == "batch":
                layers.append(GroupedBatchNorm1d(h))
            layers.append(_gan_nn.LeakyReLU(0.2))
            d = h
        layers.append(_gan_sn(_gan_nn.Linear(d, 1), norm))
        self.net = _gan_nn.Sequential(*layers)
        self.pack, self.in_shape, self.norm = pack, (in_dim,), norm
        self._init_standardization()

    def forward(self, x):
        x = self.standardize(x)
        x = x.reshape(-1, self.pack * x.shape[-1])  # (B, D) -> (B / pack, pack * D)
        return self.net(x).squeeze(-1)


def _dcgan_plan(height: int, width: int) -> tuple[int, int]:
    """(start side, number of x2 upsamplings) for the image sizes the DCGAN pair supports."""
    if height != width or height not in (28, 32):
        raise ValueError(
            f"the DCGAN generator/discriminator support 28x28 and 32x32 images; got "
            f"{height}x{width}. Resize the data, or use an MLP pair on flattened images."
        )
    return (7, 2) if height == 28 else (4, 3)


class DCGANGenerator(_gan_nn.Module):
    """z (B, latent_dim) -> x (B, C, H, W), H = W in {28, 32}.

    A linear layer to (width * 2**(n-1), s, s), then n stride-2 transposed convolutions with
    BatchNorm and ReLU, halving the channels each time; the last one maps to C channels with
    the activation of ``value_range`` (sigmoid for [0, 1], tanh for [-1, 1]). 28x28: s=7,
    n=2; 32x32: s=4, n=3.
    """

    def __init__(self, latent_dim: int, shape=(1, 28, 28), *, width: int = 64,
                 value_range=(0.0, 1.0)):
        super().__init__()
        c, h, w = shape
        side, n_up = _dcgan_plan(h, w)
        ch = width * 2 ** (n_up - 1)
        self.fc = _gan_nn.Sequential(
            _gan_nn.Linear(latent_dim, ch * side * side, bias=False),
            _gan_nn.BatchNorm1d(ch * side * side), _gan_nn.ReLU(True),
        )
        layers = []
        for i in range(n_up):
            last = i == n_up - 1
            out = c if last else ch // 2
            layers.append(_gan_nn.ConvTranspose2d(ch, out, 4, 2, 1, bias=last))
            if not last:
                layers += [_gan_nn.BatchNorm2d(out), _gan_nn.ReLU(True)]
            ch = out
        layers.append(_gan_output_activation(value_range))
        self.conv = _gan_nn.Sequential(*layers)
        self.latent_dim, self.out_shape, self._side = latent_dim, tuple(shape), side

    def forward(self, z):
        h = self.fc(z)
        h = h.reshape(z.shape[0], -1, self._side, self._side)  # (B, ch * s * s) -> (B, ch, s, s)
        return self.conv(h)


class DCGANDiscriminator(_gan_nn.Module):
    """x (B, C, H, W) -> logits (B / pack,), H = W in {28, 32}.

    n stride-2 convolutions (width, 2 width, ...) with LeakyReLU(0.2) and the chosen
    normalisation (BatchNorm except on the first layer, spectral norm on every layer, or
    none), then a linear layer to one logit. With ``pack=K`` the K images of a group are
    stacked along channels: (B, C, H, W) -> (B / K, K * C, H, W).
    """

    def __init__(self, shape=(1, 28, 28), *, width: int = 64, pack: int = 1, norm: str = "batch"):
        super().__init__()
        _gan_check_norm(norm)
        c, h, w = shape
        side, n_down = _dcgan_plan(h, w)
        layers, ch_in, ch = [], c * pack, width
        for i in range(n_down):
            layers.append(_gan_sn(_gan_nn.Conv2d(ch_in, ch, 4, 2, 1, bias=norm != "batch" or i == 0), norm))
            if norm == "batch" and i > 0:
                layers.append(GroupedBatchNorm2d(ch))
            layers.append(_gan_nn.LeakyReLU(0.2, True))
            ch_in, ch = ch, ch * 2
        self.conv = _gan_nn.Sequential(*layers)
        self.fc = _gan_sn(_gan_nn.Linear(ch_in * side * side, 1), norm)
        self.pack, self.in_shape, self.norm = pack, tuple(shape), norm

    def forward(self, x):
        c, h, w = x.shape[-3:]
        x = x.reshape(-1, self.pack * c, h, w)  # (B, C, H, W) -> (B / pack, pack * C, H, W)
        return self.fc(self.conv(x).flatten(1)).squeeze(-1)


GAN_ARCHS = ("auto", "dcgan", "mlp")


def gan_networks(data_shape, latent_dim: int, *, value_range=None, pack: int = 1,
                 norm: str | None = None, width: int | None = None, depth: int = 3,
                 arch: str = "auto"):
    """A generator/discriminator pair that fits ``data_shape``.

    With ``arch="auto"``, images (C, 28, 28) or (C, 32, 32) get the DCGAN pair (``width``
    channels in the first discriminator layer, default 64) and everything else (vectors,
    other images) MLPs with ``depth`` hidden layers of ``width`` units (default 256), on
    flattened data; ``arch="mlp"`` takes the MLPs for images too (on a CPU they learn 28x28
    digits in far fewer seconds than the DCGAN), ``arch="dcgan"`` insists on the DCGAN pair.
    ``norm`` defaults to BatchNorm for the DCGAN discriminator and none for the MLP.

    Returns
    -------
    (generator, discriminator) : nn.Module, nn.Module
    """
    shape = tuple(int(s) for s in data_shape)
    if arch not in GAN_ARCHS:
        raise ValueError(f"arch must be one of {', '.join(GAN_ARCHS)}; got {arch!r}.")
    if arch == "dcgan" or (arch == "auto" and len(shape) == 3 and shape[1] == shape[2] and shape[1] in (28, 32)):
        if len(shape) != 3:
            raise ValueError(f"the DCGAN pair needs images (C, H, W); got data of shape {shape}.")
        g = DCGANGenerator(latent_dim, shape, width=width or 64, value_range=value_range)
        d = DCGANDiscriminator(shape, width=width or 64, pack=pack, norm=norm or "batch")
        return g, d
    dim = _gan_math.prod(shape)
    hidden = (width or 256,) * depth
    g = MLPGenerator(latent_dim, dim, hidden)
    if len(shape) != 1:
        g = _FlatToShape(g, shape, value_range)
    elif value_range is not None:
        g = _gan_nn.Sequential(g, _gan_output_activation(value_range))
    d = MLPDiscriminator(dim, hidden, pack=pack, norm=norm or "none")
    if len(shape) != 1:
        d = _ShapeToFlat(d)
    return g, d


class _FlatToShape(_gan_nn.Module):
    """Wrap an MLP generator so it returns (B, *shape) with the data's value range."""

    def __init__(self, net, shape, value_range):
        super().__init__()
        self.net, self.shape, self.act = net, tuple(shape), _gan_output_activation(value_range)

    def forward(self, z):
        return self.act(self.net(z)).reshape(z.shape[0], *self.shape)  # (B, D) -> (B, *shape)


class _ShapeToFlat(_gan_nn.Module):
    """Wrap an MLP discriminator so it takes (B, *shape)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.pack = net, net.pack

    def forward(self, x):
        return self.net(x.flatten(1))
