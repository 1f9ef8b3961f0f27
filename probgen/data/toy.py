"""Toy data sets whose density is known exactly, so every density estimate can be scored.

Each toy :class:`~probgen.data.Dataset` carries its data-generating density in ``.density``:
``log_prob(x) -> (N,)`` in nats and ``sample(n, generator=None) -> (n, D)``; the mixtures
also expose ``means`` (K, D), ``sigma``, ``weights`` (K,) and ``n_components``, which the
mode-coverage metrics use.

=============  ====  =====================================================================
name           D     density
=============  ====  =====================================================================
ring8          2     8 equal Gaussians, means (cos 2 pi k / 8, sin 2 pi k / 8), k = 0..7
                     (radius 1), sigma 0.01: PacGAN's ring (Lin et al., 2018)
grid25         2     25 equal Gaussians on {-4, -2, 0, 2, 4}^2, sigma 0.05: PacGAN's grid
bimodal1d      1     0.3 N(-2, 0.5^2) + 0.7 N(2, 0.5^2)
banana         2     x1 ~ N(0, 1), x2 | x1 ~ N(x1^2 - 1, 0.5^2) (a parabola; E x2 = 0)
checkerboard   2     uniform on the 8 dark squares of a 4 x 4 board of unit squares on
                     [-2, 2]^2 (squares [i, i+1) x [j, j+1) with i + j even), density 1/8
=============  ====  =====================================================================

Every toy set has 20,000 training, 5,000 validation and 5,000 test points. Training and
validation points are drawn with the user's seed; test points with a fixed seed, so that the
test split is the same for every seed (see :mod:`probgen.data.transforms`).

References: Lin, Khetan, Fanti and Oh, "PacGAN: The power of two samples in generative
adversarial networks" (NeurIPS 2018) for the ring and grid; Srivastava et al., "VEEGAN"
(NIPS 2017) for the same benchmarks.
"""

from __future__ import annotations

import math

import torch

from probgen.data.base import DatasetInfo
from probgen.data.registry import register
from probgen.data.transforms import FIXED_SEED, check_seed, make_dataset, stream

__all__ = [
    "GaussianMixture",
    "Banana",
    "Checkerboard",
    "ring8_density",
    "grid25_density",
    "bimodal1d_density",
    "TOY_SIZES",
]

TOY_SIZES = (20_000, 5_000, 5_000)
"""Train, validation and test sizes of every toy data set."""

_LOG_2PI = math.log(2.0 * math.pi)


def _as_points(x: torch.Tensor, dim: int, who: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if dim == 1 and x.dim() == 1:
        x = x.unsqueeze(-1)  # (N,) -> (N, 1)
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"{who}.log_prob expects points of shape (N, {dim}); got {tuple(x.shape)}.")
    return x


class GaussianMixture:
    """A mixture of isotropic Gaussians with one shared standard deviation.

    ``log p(x) = logsumexp_k [log w_k + log N(x; mu_k, sigma^2 I)]``.

    Parameters
    ----------
    means : array-like, shape (K, D)
    sigma : float
        Standard deviation of every component, per coordinate.
    weights : array-like, shape (K,), optional
        Mixture weights (normalised here); equal when omitted.

    Attributes
    ----------
    means : Tensor, shape (K, D), float32
    weights : Tensor, shape (K,), float32
    sigma : float
    n_components : int
    dim : int
    """

    def __init__(self, means, sigma: float, weights=None):
        means64 = torch.as_tensor(means, dtype=torch.float64)
        if means64.dim() != 2:
            raise ValueError(f"means must have shape (K, D); got {tuple(means64.shape)}.")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive; got {sigma!r}.")
        k = means64.shape[0]
        w64 = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(
            weights, dtype=torch.float64)
        if w64.shape != (k,) or bool((w64 <= 0).any()):
            raise ValueError(f"weights must be {k} positive numbers; got {w64.tolist()}.")
        w64 = w64 / w64.sum()
        self._means64, self._log_w64 = means64, w64.log()
        self.means = means64.float()
        self.weights = w64.float()
        self.sigma = float(sigma)
        self.n_components = k
        self.dim = means64.shape[1]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density, shape (N,), in the dtype and on the device of ``x``."""
        x = _as_points(x, self.dim, type(self).__name__)
        mu = self._means64.to(device=x.device, dtype=x.dtype)       # (K, D)
        log_w = self._log_w64.to(device=x.device, dtype=x.dtype)    # (K,)
        d2 = (x.unsqueeze(1) - mu.unsqueeze(0)).pow(2).sum(-1)     # (N, K)
        log_norm = -0.5 * self.dim * (_LOG_2PI + 2.0 * math.log(self.sigma))
        return torch.logsumexp(log_w - 0.5 * d2 / self.sigma**2, dim=1) + log_norm

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws, shape (n, D), float32, on the CPU (the device of ``generator``)."""
        device = generator.device if generator is not None else "cpu"
        k = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, device=device)
        return self.means.to(device)[k] + self.sigma * eps

    def __repr__(self) -> str:
        return f"GaussianMixture(n_components={self.n_components}, dim={self.dim}, sigma={self.sigma})"


class Banana:
    """``x1 ~ N(0, 1)``, ``x2 | x1 ~ N(b (x1^2 - 1), s^2)``: a bent Gaussian.

    ``log p(x) = log N(x1; 0, 1) + log N(x2; b (x1^2 - 1), s^2)``. Moments: ``E x = 0``,
    ``Var x1 = 1``, ``Var x2 = 2 b^2 + s^2``, ``Cov(x1, x2) = 0``.
    """

    dim = 2

    def __init__(self, b: float = 1.0, s: float = 0.5):
        if not s > 0:
            raise ValueError(f"s must be positive; got {s!r}.")
        self.b, self.s = float(b), float(s)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density, shape (N,)."""
        x = _as_points(x, 2, "Banana")
        x1, x2 = x[:, 0], x[:, 1]
        r = (x2 - self.b * (x1**2 - 1.0)) / self.s
        return -0.5 * x1**2 - 0.5 * r**2 - _LOG_2PI - math.log(self.s)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws, shape (n, 2), float32."""
        device = generator.device if generator is not None else "cpu"
        e = torch.randn(n, 2, generator=generator, device=device)
        x1 = e[:, 0]
        return torch.stack([x1, self.b * (x1**2 - 1.0) + self.s * e[:, 1]], dim=1)

    def __repr__(self) -> str:
        return f"Banana(b={self.b}, s={self.s})"


class Checkerboard:
    """Uniform density on the dark squares of an ``n x n`` board of unit squares.

    The board covers ``[-n/2, n/2]^2``; square ``[i, i+1) x [j, j+1)`` (integer corners) is
    dark when ``i + j`` is even. With ``n`` even, ``n^2 / 2`` squares are dark and the
    density there is ``2 / n^2``; ``log_prob`` is ``-inf`` elsewhere.

    Attributes
    ----------
    corners : Tensor, shape (n^2 / 2, 2)
        Lower-left corners of the dark squares.
    """

    dim = 2

    def __init__(self, n: int = 4):
        if n < 2 or n % 2:
            raise ValueError(f"n must be an even number >= 2; got {n!r}.")
        self.n = int(n)
        h = self.n // 2
        cells = [(i, j) for i in range(-h, h) for j in range(-h, h) if (i + j) % 2 == 0]
        self.corners = torch.tensor(cells, dtype=torch.float32)
        self._log_density = -math.log(len(cells))  # unit squares: density 1 / (number of squares)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density, shape (N,): ``-log(n^2 / 2)`` on dark squares, ``-inf`` elsewhere."""
        x = _as_points(x, 2, "Checkerboard")
        h = self.n / 2
        c = torch.floor(x)
        inside = ((x >= -h) & (x < h)).all(dim=1)
        dark = (c.sum(dim=1).remainder(2) == 0) & inside
        out = torch.full((x.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
        return out.masked_fill(dark, self._log_density)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws, shape (n, 2), float32: a dark square at random, then a uniform point in it."""
        device = generator.device if generator is not None else "cpu"
        k = torch.randint(len(self.corners), (n,), generator=generator, device=device)
        return self.corners.to(device)[k] + torch.rand(n, 2, generator=generator, device=device)

    def __repr__(self) -> str:
        return f"Checkerboard(n={self.n})"


# ----------------------------------------------------------------------------- the named densities
def ring8_density(radius: float = 1.0, sigma: float = 0.01) -> GaussianMixture:
    """8 Gaussians at angles ``2 pi k / 8``, k = 0..7 (the end point 2 pi is not a ninth mode)."""
    angles = torch.arange(8, dtype=torch.float64) * (2.0 * math.pi / 8)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)  # (8, 2)
    return GaussianMixture(means, sigma)


def grid25_density(sigma: float = 0.05) -> GaussianMixture:
    """25 Gaussians on ``{-4, -2, 0, 2, 4}^2``."""
    g = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
    means = torch.cartesian_prod(g, g)  # (25, 2)
    return GaussianMixture(means, sigma)


def bimodal1d_density() -> GaussianMixture:
    """``0.3 N(-2, 0.5^2) + 0.7 N(2, 0.5^2)`` in one dimension."""
    return GaussianMixture([[-2.0], [2.0]], 0.5, weights=[0.3, 0.7])


def _load_toy(name: str, density, source: str, *, seed=0, limit=None, binarize="none", **_ignored):
    """Draw the three splits of a toy set (``value_range``, ``root``, ``download`` do not apply)."""
    seed = check_seed(seed)
    n_train, n_val, n_test = TOY_SIZES
    train = density.sample(n_train, generator=stream(seed, "toy-train"))
    val = density.sample(n_val, generator=stream(seed, "toy-val"))
    test = density.sample(n_test, generator=stream(FIXED_SEED, "toy-test"))
    return make_dataset(
        name, train=train, val=val, test=test, kind="toy", pixels=False, seed=seed,
        binarize=binarize, limit=limit, density=density, source=source,
    )


_TOYS = {
    "ring8": (ring8_density, "8 Gaussians on a circle: radius 1, sigma 0.01 (PacGAN)"),
    "grid25": (grid25_density, "25 Gaussians on {-4,-2,0,2,4}^2, sigma 0.05 (PacGAN)"),
    "bimodal1d": (bimodal1d_density, "0.3 N(-2, 0.5^2) + 0.7 N(2, 0.5^2)"),
    "banana": (Banana, "x1 ~ N(0,1), x2 ~ N(x1^2 - 1, 0.5^2)"),
    "checkerboard": (Checkerboard, "uniform on 8 squares of a 4x4 board on [-2,2]^2"),
}


def _register_toys() -> None:
    n_train, n_val, n_test = TOY_SIZES
    size = f"{n_train:,} + {n_val:,} + {n_test:,}"
    for name, (make, text) in _TOYS.items():
        dim = make().dim

        def loader(_name=name, _make=make, _text=text, **opts):
            return _load_toy(_name, _make(), f"exact density: {_text}", **opts)

        register(DatasetInfo(
            name=name, shape=(dim,), size=size, source=f"exact density: {text}", kind="toy",
            description=text,
        ))(loader)


_register_toys()
