"""A normalizing flow as a Pyro program, built on Zuko.

:class:`Flow` is an exact density: ``x -> y`` through a fixed preprocessing with a known
Jacobian, then a Zuko flow ``y -> z`` to a standard normal. Its Pyro program is

    def model(x, num_data=None):
        pyro.module("flow", self)
        with pyro.plate("data", num_data, subsample=...):
            pyro.sample("x", FlowDistribution(self), obs=x)

    def guide(x, num_data=None):
        pass                                   # nothing latent: the ELBO is log p(x)

so :func:`probgen.inference.svi.fit_svi` fits it by maximum likelihood (the negative ELBO
of a program without latent variables is the negative log-likelihood of the minibatch,
scaled to the data set), and the evaluation layer sees ``log_prob(x)`` and ``sample(n)``.

Flows (``kind=``):

``"nsf"``
    Neural spline flow (Durkan et al. 2019): autoregressive monotonic rational-quadratic
    splines, ``zuko.flows.NSF``; the default on low-dimensional data.
``"maf"``
    Masked autoregressive flow (Papamakarios et al. 2017), affine, ``zuko.flows.MAF``. It
    scores in one pass but samples one dimension per pass, and its inverse can overflow: a
    value that leaves the range the flow was trained on meets conditioners that extrapolate,
    their scales reach Zuko's bound (a factor of 1000 per dimension) and the recursion over
    the dimensions carries the growth to ``inf`` and NaN (measured on mnist-5k, one trained
    without gradient clipping: intermediate values of 4e3 after the first inverted layer,
    1e21 after the second, 5 of 500 samples NaN; one trained with clipping stayed within 22,
    as the data's logits lie within 3).
``"realnvp"``
    Affine coupling layers with MLP conditioners (Dinh et al. 2017), ``zuko.flows.RealNVP``:
    one pass both ways (a handful of layers to invert, not one per dimension), the default
    on images.

Preprocessing (``preprocess=``): ``"standardize"`` (``(x - mean) / std`` of the training
data, fixed before training; the default on vector data, so that the splines' domain
``[-5, 5]`` holds the data) or ``"logit"`` (``y = logit(a + (1 - 2a) x)`` with ``a = 0.05``,
Dinh et al. 2017, for dequantized pixels in ``[0, 1)``; the default on images). Either way
``log p(x) = log p_flow(y) + log |dy/dx|``, so the density is of ``x`` itself. (The logit's
inverse maps the real line onto ``(-a, 1 + a) / (1 - 2a)``, slightly wider than ``[0, 1]``:
the density lives there, and samples may fall a little outside ``[0, 1]``.)
"""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as pdist
import torch
from torch import nn
from torch.distributions import constraints

from probgen.errors import ConfigError, DataError

__all__ = ["Flow", "FlowDistribution", "FLOW_KINDS", "PREPROCESS"]

FLOW_KINDS = ("nsf", "maf", "realnvp")
PREPROCESS = ("standardize", "logit", "none")
LOGIT_ALPHA = 0.05


class Flow(nn.Module):
    """An exact density on examples of shape ``event_shape``.

    Parameters
    ----------
    event_shape : tuple of int
        Shape of one example; images are flattened inside.
    kind : {"nsf", "maf", "realnvp"}
    transforms : int
        Number of flow layers.
    hidden : sequence of int
        Hidden widths of each layer's conditioner MLP.
    bins : int
        Spline bins (``nsf`` only).
    preprocess : {"standardize", "logit", "none"}
        Fixed map applied before the flow (module docstring). With ``standardize`` call
        :meth:`fit_preprocessing` on training data before training.
    """

    def __init__(self, event_shape, *, kind: str = "nsf", transforms: int = 5,
                 hidden=(128, 128), bins: int = 8, preprocess: str = "standardize"):
        super().__init__()
        import zuko

        if kind not in FLOW_KINDS:
            raise ConfigError(f"flow kind must be one of {', '.join(FLOW_KINDS)}; got {kind!r}.")
        if preprocess not in PREPROCESS:
            raise ConfigError(f"preprocess must be one of {', '.join(PREPROCESS)}; got {preprocess!r}.")
        if int(transforms) < 1:
            raise ConfigError(f"transforms must be a positive integer; got {transforms}.")
        self.event_shape = tuple(int(s) for s in event_shape)
        self.dim = math.prod(self.event_shape)
        self.kind, self.preprocess = kind, preprocess
        hidden = tuple(int(h) for h in hidden)
        if self.dim == 1 and kind == "realnvp":
            raise ConfigError("a coupling flow (realnvp) needs at least 2 dimensions to split; "
                              "use --flow nsf or maf on 1-D data.")
        if kind == "nsf":
            self.flow = zuko.flows.NSF(self.dim, transforms=transforms, hidden_features=hidden, bins=bins)
        elif kind == "maf":
            self.flow = zuko.flows.MAF(self.dim, transforms=transforms, hidden_features=hidden)
        else:
            self.flow = zuko.flows.RealNVP(self.dim, transforms=transforms, hidden_features=hidden)
        if kind in ("maf", "realnvp"):
            self._start_at_identity()
        self.register_buffer("shift", torch.zeros(self.dim))
        self.register_buffer("log_scale", torch.zeros(self.dim))

    @torch.no_grad()
    def _start_at_identity(self) -> None:
        """Zero the last layer of every conditioner: each affine layer starts as the identity.
        (Zuko's default initialisation gives, on 784 dimensions, scales whose product puts
        the first log-densities near -1e9 nats, and training diverges from there.)"""
        for module in self.flow.modules():
            hyper = getattr(module, "hyper", None)
            layers = [] if not isinstance(hyper, nn.Module) else [
                m for m in hyper.modules() if isinstance(getattr(m, "weight", None), torch.Tensor)]
            if not layers:
                continue
            last = layers[-1]
            last.weight.zero_()
            if last.bias is not None:
                last.bias.zero_()

    # -- preprocessing
    @torch.no_grad()
    def fit_preprocessing(self, x: torch.Tensor) -> None:
        """Set the standardisation from training data ``x`` (N, *event_shape)."""
        if self.preprocess != "standardize":
            return
        x = self._flat(x).double()
        self.shift.copy_(x.mean(0).to(self.shift))
        self.log_scale.copy_(x.std(0).clamp_min(1e-6).log().to(self.log_scale))

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.event_shape:
            shape = ", ".join(map(str, self.event_shape))
            raise DataError(f"x must have shape (N, {shape}), the data shape this flow was built "
                            f"for; got {tuple(x.shape)}.")
        return x.reshape(x.shape[0], self.dim)

    def _to_latent_space(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, log |dy/dx|)`` per example for flat ``x`` (N, D)."""
        if self.preprocess == "standardize":
            y = (x - self.shift) * torch.exp(-self.log_scale)
            return y, (-self.log_scale.sum()).expand(x.shape[0])
        if self.preprocess == "logit":
            a = LOGIT_ALPHA
            s = a + (1 - 2 * a) * x
            if bool(((s <= 0) | (s >= 1)).any()):
                raise DataError("the logit preprocessing needs values in [0, 1] (dequantized "
                                "pixels); got values outside. Use --preprocess standardize.")
            y = torch.log(s) - torch.log1p(-s)
            ladj = (math.log(1 - 2 * a) - torch.log(s) - torch.log1p(-s)).sum(-1)
            return y, ladj
        return x, x.new_zeros(x.shape[0])

    def _from_latent_space(self, y: torch.Tensor) -> torch.Tensor:
        if self.preprocess == "standardize":
            return y * torch.exp(self.log_scale) + self.shift
        if self.preprocess == "logit":
            return (torch.sigmoid(y) - LOGIT_ALPHA) / (1 - 2 * LOGIT_ALPHA)
        return y

    # -- the evaluation protocol
    def distribution(self) -> torch.distributions.Distribution:
        """Zuko's distribution of the preprocessed values ``y`` (event shape (D,))."""
        return self.flow()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` per example, nats, shape (N,)."""
        y, ladj = self._to_latent_space(self._flat(x))
        return self.distribution().log_prob(y) + ladj

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """``n`` draws, shape (n, *event_shape). Draws that came out NaN or infinite (an
        overflowing inverse, see ``"maf"`` in the module docstring) are returned as they are,
        with a ``RuntimeWarning`` that counts them."""
        y = self.distribution().sample((int(n),))
        x = self._from_latent_space(y).reshape(int(n), *self.event_shape)
        bad = int((~torch.isfinite(x.reshape(int(n), -1)).all(1)).sum())
        if bad:
            warnings.warn(f"{bad} of {int(n)} samples of the {self.kind} flow are not finite (NaN "
                          "or inf): its inverse overflowed. A coupling flow (realnvp) inverts in "
                          "a few passes; training with gradient clipping (--clip) kept a MAF's "
                          "inverse in range.", RuntimeWarning, stacklevel=2)
        return x

    # -- the Pyro program
    def model(self, x: torch.Tensor, num_data: int | None = None) -> None:
        pyro.module("flow", self)
        n = x.shape[0]
        if num_data is None or num_data == n:
            plate = pyro.plate("data", n)
        else:
            if num_data < n:
                raise ConfigError(f"num_data (size of the full data set) must be >= the batch size "
                                  f"{n}; got {num_data}.")
            plate = pyro.plate("data", num_data, subsample=torch.arange(n, device=x.device))
        with plate:
            pyro.sample("x", FlowDistribution(self, n), obs=x)

    def guide(self, x: torch.Tensor, num_data: int | None = None) -> None:
        """Nothing is latent: the ELBO of :meth:`model` is the log-likelihood."""


class FlowDistribution(pdist.TorchDistribution):
    """A Pyro distribution over ``batch`` examples whose density is a :class:`Flow`'s."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, flow: Flow, batch: int, validate_args=None):
        self.flow = flow
        super().__init__(torch.Size([batch]), torch.Size(flow.event_shape), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.flow.log_prob(value)

    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        n = math.prod(shape)
        return self.flow.sample(n).reshape(*shape, *self.event_shape)

    def expand(self, batch_shape, _instance=None):
        return FlowDistribution(self.flow, math.prod(batch_shape) if len(batch_shape) else 1)
