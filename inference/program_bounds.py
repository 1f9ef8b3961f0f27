"""Bounds on log p(x) per example for any Pyro program, computed from its traces alone.

:mod:`probgen.inference.bounds` and :mod:`probgen.inference.ais` score a model through the
latent-variable protocol (``encoder_distribution``, ``prior_log_prob``, ``log_likelihood``):
fast, but the user writes the model a second time outside Pyro. The functions here need only
the program itself, a ``model(x)`` and a ``guide(x)`` with the same signature and site names:

* :func:`program_elbo`       E_q[log p(x, z) - log q(z|x)] per example, with its
                             reconstruction and KL terms where the program has them
* :func:`program_iwae_bound` log (1/k) sum_i p(x, z_i) / q(z_i|x) per example, with a
                             standard error and the Pareto k-hat of the k weights
* :func:`program_ais`        annealed importance sampling with HMC over the continuous
                             local latents, in unconstrained space
* :func:`program_log_weights` the (k, N) log importance weights themselves
* :func:`check_program`      what the program looks like (its data plate, observed, latent,
                             enumerated and global sites), with an error naming the site and
                             the fix for every program these functions cannot score
* :class:`ProgramModel`      a program given the evaluation layer's protocol (``elbo``,
                             ``iwae_bound``, ``ais``, and ``sample`` where it has one);
                             :func:`as_program` builds it

The examples
------------
Examples live in a *data plate*: the ``pyro.plate`` that holds the observed site, of size
``len(x)`` (pass ``data_plate="name"`` when there are several candidates). Every observed site
must lie in it; the latents the guide samples inside it are *local* (one set per example),
and the per-example value of every quantity is the sum of the log densities of the sites of
that example: inner plates (pixels, time steps) and event dimensions are summed, and a plate's
subsampling scale is ignored (a bound on the examples given, not on a data set they were drawn
from).

Latents outside the data plate (*global* latents, such as a shared mean) belong to every
example at once, so no per-example bound exists for them. By default
(``global_latents="error"``) such a program is refused with the site's name. With
``global_latents="condition"`` every global latent is fixed at the mean of the guide's
distribution for it (a point estimate), in model and guide, and the bounds are on
``log p(x_n | globals = that estimate)``; the record says so (``ProgramStructure.conditioned``).

Discrete latents that the guide leaves out and the model marks for parallel enumeration
(``pyro.infer.config_enumerate`` or ``infer={"enumerate": "parallel"}``) are summed out per
example, exactly (``TraceEnum_ELBO`` does the same over the whole batch). They must lie
directly in the data plate (not in a plate inside it).

Particles
---------
The samples of one chunk are drawn at once, in an outer ``pyro.plate`` of particles (as
``vectorize_particles=True`` does in Pyro's ELBOs), over blocks of examples, so that one chunk
holds at most ``max_elements`` values of data (samples x examples x values per example): the
same memory bound as :mod:`probgen.inference.bounds` (:func:`probgen.inference.bounds.chunk_plan`,
2**23 by default). That asks the program to broadcast over a leading batch dimension, as
programs written with plates and ``.to_event`` do. A program that does not (one that reshapes
with ``.view(-1, ...)`` or takes ``z.shape[0]`` for the number of examples, as code written for
one draw per example often does) is found by :func:`check_program`, which runs two particles at
once and each alone and compares their log densities, whether the first run failed or, worse,
mixed the particles silently; its particles are then drawn one plain run of the program at a
time, as it was trained: the same estimates, more slowly (``ProgramStructure.vectorized``).

References: Burda, Grosse & Salakhutdinov (ICLR 2016) for the importance-weighted bound;
Neal (2001) and Wu et al. (ICLR 2017) for AIS; Vehtari et al. (JMLR 2024) for k-hat;
Obermeyer et al. (ICML 2019) for enumeration in plated programs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pyro
import torch
from pyro import poutine
from pyro.distributions import Independent, constraints
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample

from probgen.checks import check_positive_int
from probgen.errors import ConfigError
from probgen.inference.ais import AISOptions, AISResult
from probgen.inference.bounds import DEFAULT_MAX_ELEMENTS, ELBORecord, IWAERecord, chunk_plan

__all__ = [
    "GLOBAL_LATENTS",
    "ProgramAISResult",
    "ProgramIWAERecord",
    "ProgramModel",
    "ProgramStructure",
    "as_program",
    "check_program",
    "is_program",
    "program_ais",
    "program_elbo",
    "program_iwae_bound",
    "program_log_weights",
]

GLOBAL_LATENTS = ("error", "condition")
_PARTICLES = "_probgen_particles"
_PROBE_EXAMPLES = 16  # examples the structure probe runs the program on


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class ProgramStructure:
    """What :func:`check_program` found in a program.

    Attributes
    ----------
    data_plate : str
        The plate whose entries are the examples.
    data_dim : int
        Its (negative) batch dimension.
    max_plate_nesting : int
        Number of plate dimensions the program uses (the particle plate goes left of them).
    observed : tuple of str
        Observed sites (all in the data plate).
    latent : tuple of str
        Local latents the guide samples (in the data plate).
    enumerated : tuple of str
        Discrete latents of the model that the guide leaves out, summed out per example.
    conditioned : dict of str -> Tensor
        Global latents fixed at the guide's mean (``global_latents="condition"``); empty
        otherwise.
    vectorized : bool
        Whether the program broadcasts over an outer plate of particles, so that a chunk of
        particles is drawn in one run. False for a program whose shapes tie it to one draw per
        example (a decoder output reshaped with ``.view(-1, ...)``, say): its particles are then
        drawn one run of the program at a time, the way it was trained, slower but the same
        estimates.
    unvectorized_why : str
        What the particle probe of :func:`check_program` met when ``vectorized`` is False.
    """

    data_plate: str
    data_dim: int
    max_plate_nesting: int
    observed: tuple[str, ...]
    latent: tuple[str, ...]
    enumerated: tuple[str, ...]
    conditioned: dict = field(default_factory=dict)
    vectorized: bool = True
    unvectorized_why: str = ""

    @property
    def has_terms(self) -> bool:
        """Whether the ELBO splits into reconstruction and KL: one observed site, no
        enumerated latent."""
        return len(self.observed) == 1 and not self.enumerated


@dataclass
class ProgramIWAERecord(IWAERecord):
    """:class:`probgen.inference.bounds.IWAERecord` with the Pareto k-hat of each example's
    k importance weights (Vehtari et al., 2024; NaN where k is too small to fit, ``None`` when
    not asked for). Above 0.7 the estimate is not to be trusted whatever its standard error."""

    khat: torch.Tensor | None = None


@dataclass
class ProgramAISResult(AISResult):
    """:class:`probgen.inference.ais.AISResult` with the Pareto k-hat of each example's chain
    weights and the latent sites the chains moved."""

    khat: torch.Tensor | None = None
    sites: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- programs
def is_program(obj) -> bool:
    """True for a ``(model, guide)`` pair of callables, or an object with callable ``model``
    and ``guide`` and none of the protocol's ``elbo``, ``iwae_bound`` or ``log_prob``
    (such an object is scored through its own methods instead)."""
    if isinstance(obj, (tuple, list)):
        return len(obj) == 2 and all(callable(f) for f in obj)
    if isinstance(obj, ProgramModel):
        return True
    has_program = callable(getattr(obj, "model", None)) and callable(getattr(obj, "guide", None))
    has_protocol = any(callable(getattr(obj, a, None)) for a in ("elbo", "iwae_bound", "log_prob"))
    return has_program and not has_protocol


class ProgramModel:
    """A Pyro program with the evaluation layer's protocol, backed by the trace-based bounds.

    Parameters
    ----------
    model, guide : callable
        ``model(x)`` and ``guide(x)``, the same signature and site names.
    data_plate : str, optional
        Name of the plate that holds the examples; found from the observed site if None.
    global_latents : {"error", "condition"}
        What to do with latents outside the data plate (see the module docstring).
    sample : callable, optional
        ``sample(n)`` -> n draws (n, *data_shape). A program has no general way to draw data
        without it (``model(x)`` needs ``x`` for its shapes), so without it the sample
        metrics are unavailable and :attr:`sample` is absent.
    name : str, optional
        How results name the model (default: the model's ``__qualname__`` or its owner's
        class name).

    Methods follow the protocol of DESIGN.md: ``elbo(x, num_samples)``,
    ``iwae_bound(x, k)``, ``ais(x, **options)``, and ``sample(n)`` where given; a program
    whose every latent of an example is summed out also has its exact log-likelihood
    (``exact_density(x)``, ``exact_log_prob(x)``).
    """

    def __init__(self, model: Callable, guide: Callable, *, data_plate: str | None = None,
                 global_latents: str = "error", sample: Callable | None = None,
                 name: str | None = None):
        if not callable(model) or not callable(guide):
            raise ConfigError(f"a program needs a callable model and guide; got model="
                              f"{type(model).__name__}, guide={type(guide).__name__}.")
        _check_global_latents(global_latents)
        self.model = model
        self.guide = guide
        self.data_plate = data_plate
        self.global_latents = global_latents
        self.name = name or _program_name(model)
        if sample is not None:
            self.sample = sample
        self._structure: dict = {}
        self.conditioned_names: tuple[str, ...] = ()  # the global latents the last structure fixed

    def structure(self, x: torch.Tensor) -> ProgramStructure:
        """The program's :class:`ProgramStructure` on data like ``x`` (cached per data shape;
        the point estimates of ``global_latents="condition"`` are taken afresh each time, since
        they change as the guide trains)."""
        key = (tuple(x.shape[1:]), x.dtype, x.device)
        st = self._structure.get(key)
        if st is None or st.conditioned:
            st = check_program(self, x, data_plate=self.data_plate,
                               global_latents=self.global_latents)
            self._structure[key] = st
        self.conditioned_names = tuple(st.conditioned)
        return st

    def elbo(self, x: torch.Tensor, num_samples: int = 10) -> ELBORecord:
        """Per-example ELBO record (total, reconstruction, kl, mc_stderr); see :func:`program_elbo`."""
        return program_elbo(self, x, num_samples=num_samples)

    def iwae_bound(self, x: torch.Tensor, k: int = 100) -> ProgramIWAERecord:
        """Per-example IWAE-k record (total, mc_stderr, k, khat); see :func:`program_iwae_bound`."""
        return program_iwae_bound(self, x, k)

    def ais(self, x: torch.Tensor, **options) -> ProgramAISResult:
        """Per-example AIS estimate; keywords as :func:`program_ais`."""
        return program_ais(self, x, **options)

    def exact_density(self, x: torch.Tensor) -> bool:
        """Whether the traces give log p(x) itself on data like ``x``: the guide samples no
        latent of the examples (every local latent is discrete and summed out), so the ELBO,
        with no draw left to average over, is the log-likelihood (given the global latents'
        point estimates where the program conditions on them)."""
        return not self.structure(x).latent

    def exact_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per example (N,) of a program whose :meth:`exact_density` holds; a
        :class:`ConfigError` otherwise."""
        st = self.structure(x)
        if st.latent:
            raise ConfigError(f"{self.name}'s guide samples {', '.join(map(repr, st.latent))} for "
                              "each example, so its traces give bounds on log p(x) (elbo, "
                              "iwae_bound, ais), not log p(x) itself.")
        return program_elbo(self, x, num_samples=1).total

    def __repr__(self) -> str:
        return f"ProgramModel({self.name})"


def as_program(obj, *, data_plate: str | None = None, global_latents: str | None = None) -> ProgramModel:
    """A :class:`ProgramModel` from a ``(model, guide)`` pair or an object with ``model`` and
    ``guide`` methods (its ``sample`` is kept when it has one; its ``data_plate`` and
    ``global_latents`` attributes, if any, stand unless the arguments are given). A ProgramModel is returned
    as it is unless an option is given.
    """
    if isinstance(obj, ProgramModel):
        if data_plate is None and global_latents is None:
            return obj
        return ProgramModel(obj.model, obj.guide, data_plate=data_plate or obj.data_plate,
                            global_latents=global_latents or obj.global_latents,
                            sample=getattr(obj, "sample", None), name=obj.name)
    if isinstance(obj, (tuple, list)):
        if len(obj) != 2 or not all(callable(f) for f in obj):
            raise ConfigError(f"a program given as a sequence must be a (model, guide) pair of "
                              f"callables; got {len(obj)} items of types "
                              f"{[type(f).__name__ for f in obj]}.")
        model, guide = obj
        return ProgramModel(model, guide, data_plate=data_plate,
                            global_latents=global_latents or "error")
    model, guide = getattr(obj, "model", None), getattr(obj, "guide", None)
    if not (callable(model) and callable(guide)):
        raise ConfigError(
            f"{type(obj).__name__} is not a program: a program is a (model, guide) pair of "
            f"callables, or an object with model(x) and guide(x) methods (and optionally "
            f"sample(n)).")
    sample = getattr(obj, "sample", None)
    return ProgramModel(model, guide, data_plate=data_plate or getattr(obj, "data_plate", None),
                        global_latents=global_latents or getattr(obj, "global_latents", None) or "error",
                        sample=sample if callable(sample) else None, name=type(obj).__name__)


def _program_name(model) -> str:
    owner = getattr(model, "__self__", None)
    if owner is not None:
        return type(owner).__name__
    return getattr(model, "__qualname__", None) or type(model).__name__


def _check_global_latents(value):
    if value not in GLOBAL_LATENTS:
        raise ConfigError(f"global_latents must be one of {', '.join(map(repr, GLOBAL_LATENTS))}; "
                          f"got {value!r}.")


def _resolve(program, data_plate, global_latents) -> ProgramModel:
    return as_program(program, data_plate=data_plate, global_latents=global_latents)


# ----------------------------------------------------------------------------- the probe
def _check_x(x) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 1:
        raise ConfigError(f"x must be a tensor of shape (N, ...) with N >= 1 examples; got "
                          f"{type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}.")


def _sample_sites(trace):
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)
            and not site["infer"].get("_deterministic")
            and not site["infer"].get("is_auxiliary")}


def _plates(site) -> list:
    return [f for f in site["cond_indep_stack"] if f.vectorized and f.name != _PARTICLES]


def _nesting(sites) -> int:
    dims = [-f.dim for s in sites.values() for f in _plates(s)]
    return max(dims, default=0)


@torch.no_grad()
def check_program(program, x: torch.Tensor, *, data_plate: str | None = None,
                  global_latents: str | None = None) -> ProgramStructure:
    """Run the program once on the first examples of ``x`` and say what it is made of.

    Raises :class:`probgen.errors.ConfigError`, naming the site and the fix, when the model
    has no observed site, when no data plate holds the observed sites (or several could, and
    ``data_plate`` does not say which), when an observed site lies outside the data plate,
    when the guide misses a latent of the model that cannot be enumerated or samples a site
    the model does not have, when an enumerated site lies in a plate inside the data plate,
    and, with ``global_latents="error"``, when a latent lies outside the data plate.

    Parameters
    ----------
    program
        A :class:`ProgramModel`, a ``(model, guide)`` pair, or an object with ``model`` and
        ``guide`` (see :func:`as_program`).
    x : Tensor (N, ...)
        Data of the kind the program models; only the first few examples are used.
    data_plate : str, optional
        Name of the data plate; default: the program's, or the plate found.
    global_latents : {"error", "condition"}, optional
        Default: the program's (``"error"``).

    Returns
    -------
    ProgramStructure
    """
    prog = _resolve(program, data_plate, global_latents)
    _check_x(x)
    xb = x[:_PROBE_EXAMPLES]
    n = xb.shape[0]
    guide_tr = poutine.trace(prog.guide).get_trace(xb)
    try:
        model_tr = poutine.trace(poutine.replay(prog.model, trace=guide_tr)).get_trace(xb)
    except ValueError as err:
        with pyro.validation_enabled(False):
            try:
                tr = poutine.trace(poutine.replay(prog.model, trace=guide_tr)).get_trace(xb)
            except Exception:  # noqa: BLE001 - the original error is the one to show
                raise err from None
        _check_support(prog, tr, err)
        raise
    _check_support(prog, model_tr)
    gsites, msites = _sample_sites(guide_tr), _sample_sites(model_tr)
    mpn = max(_nesting(gsites), _nesting(msites))
    observed = [k for k, s in msites.items() if s["is_observed"]]
    if not observed:
        raise ConfigError(
            f"the model of {prog.name} has no observed site: nothing in it is scored against "
            f"the data. Observe the data inside the data plate, e.g. "
            f"`with pyro.plate('data', len(x)): pyro.sample('x', ..., obs=x)`.")
    plate = _find_data_plate(prog, msites, observed, n)
    # observed sites all in the data plate
    for k in observed:
        if plate not in _plates(msites[k]):
            raise ConfigError(
                f"observed site {k!r} lies outside the data plate {plate.name!r}, so it cannot "
                f"be split among the examples. Put it inside `pyro.plate({plate.name!r}, len(x))`.")
    # guide sites the model lacks
    for k in gsites:
        if k not in msites:
            raise ConfigError(
                f"the guide samples site {k!r}, which the model does not have: the guide's "
                f"sites must be the model's latents. Rename it to the model's site or remove it.")
        if msites[k]["is_observed"]:
            raise ConfigError(
                f"the guide samples site {k!r}, which the model observes: remove it from the guide.")
    latent, enumerated, global_ = [], [], []
    for k, s in msites.items():
        if s["is_observed"]:
            continue
        in_data = plate in _plates(s)
        if k not in gsites:
            if s["infer"].get("enumerate") == "parallel" and s["fn"].has_enumerate_support:
                others = [f.name for f in _plates(s) if f != plate]
                if not in_data or others:
                    raise ConfigError(
                        f"the enumerated site {k!r} must lie directly in the data plate "
                        f"{plate.name!r} (found in plates {[f.name for f in _plates(s)]}); "
                        f"per-example enumeration of sites in inner plates is not supported. "
                        f"Sample it in the guide instead.")
                enumerated.append(k)
                continue
            kind = "discrete" if s["fn"].support.is_discrete else "continuous"
            fix = (f"add `pyro.sample({k!r}, ...)` to the guide, or mark it for enumeration in the "
                   f"model (decorate the model with pyro.infer.config_enumerate, or give the site "
                   f"infer={{'enumerate': 'parallel'}}) so that it is summed out"
                   if kind == "discrete" else f"add `pyro.sample({k!r}, ...)` to the guide")
            raise ConfigError(f"the guide of {prog.name} misses the model's {kind} latent site "
                              f"{k!r}: {fix}.")
        if in_data:
            latent.append(k)
        else:
            global_.append(k)
    conditioned = {}
    if global_:
        if prog.global_latents == "error":
            raise ConfigError(
                f"latent site{'s' if len(global_) > 1 else ''} {', '.join(map(repr, global_))} "
                f"lie{'' if len(global_) > 1 else 's'} outside the data plate {plate.name!r}: a "
                f"global latent is shared by all examples, so no per-example bound exists for "
                f"it. Pass global_latents='condition' to score log p(x_n | the guide's mean of "
                f"it) (a program class says so with the class attribute global_latents = 'condition', "
                f"which probgen train, eval and compare follow), or make it a parameter "
                f"(pyro.param) of the model.")
        conditioned = _point_estimates(prog, xb, global_)
    st = ProgramStructure(data_plate=plate.name, data_dim=plate.dim, max_plate_nesting=mpn,
                          observed=tuple(observed), latent=tuple(latent),
                          enumerated=tuple(enumerated), conditioned=conditioned)
    why = _particle_probe(prog, st, xb, guide_tr)
    return replace(st, vectorized=False, unvectorized_why=why) if why else st


def _first_line(err: Exception) -> str:
    """``Type: message`` without Pyro's trace-shape tables under it."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _particle_probe(prog, st: ProgramStructure, xb: torch.Tensor, plain_guide_tr) -> str:
    """Run the program with two particles at once, and each particle alone in the plain
    program; '' when every example's log p(x, z) and log q(z | x) agree, else what went wrong.

    A program that reshapes across the leading dimensions (``.view(-1, ...)``,
    ``z.shape[0]`` as the number of examples) either fails in the particle plate or, worse,
    mixes particles silently; the second comparison catches the latter."""
    s, n, mpn = 2, xb.shape[0], st.max_plate_nesting
    try:
        guide_tr, model_tr = _traces(prog, st, xb, s)
        joint = _model_terms(model_tr, st, s, n)[0]
        log_q = _guide_log_q(guide_tr, st, s, n)
    except Exception as err:  # noqa: BLE001 - any failure means: draw the particles one at a time
        return _first_line(err)
    plain_sites = _sample_sites(plain_guide_tr)
    for i in range(s):
        values = {}
        for name, site in _sample_sites(guide_tr).items():
            if name in st.conditioned or name not in plain_sites:
                continue
            v = site["value"]
            d = v.dim() - site["fn"].event_dim - (mpn + 1)  # the particle dimension
            one = v.select(d, i) if d >= 0 and v.shape[d] == s else v
            shape = plain_sites[name]["value"].shape
            values[name] = one.reshape(shape) if one.numel() == math.prod(shape) else one
        try:
            g_tr, m_tr = _traces(prog, st, xb, None, values)
            joint_i = _model_terms(m_tr, st, 1, n)[0][0]
            q = _guide_log_q(g_tr, st, 1, n)
            log_q_i = q[0] if q is not None else None
        except Exception as err:  # noqa: BLE001
            return f"particle {i} alone: {_first_line(err)}"
        if not torch.allclose(joint[i], joint_i, rtol=1e-3, atol=1e-3):
            return (f"particle {i}'s log p(x, z) differs when the program runs it alone "
                    f"(largest gap {float((joint[i] - joint_i).abs().max()):.3g} nats)")
        if log_q is not None and log_q_i is not None and not torch.allclose(
                log_q[i], log_q_i, rtol=1e-3, atol=1e-3):
            return (f"particle {i}'s log q(z | x) differs when the program runs it alone "
                    f"(largest gap {float((log_q[i] - log_q_i).abs().max()):.3g} nats)")
    return ""


def _check_support(prog, tr, err=None) -> None:
    """Raise a DataError naming the observed site whose data lie outside its distribution's
    support (grey values fed to a Bernoulli, negative counts, ...)."""
    from probgen.errors import DataError

    for name, site in _sample_sites(tr).items():
        if not site["is_observed"] or site["infer"].get("_deterministic"):
            continue
        fn, value = site["fn"], site["value"]
        support, base = fn.support, fn
        while isinstance(support, constraints.independent):  # elementwise, over event dims too
            support = support.base_constraint
        while isinstance(base, Independent):
            base = base.base_dist
        try:
            ok = support.check(value)
        except (NotImplementedError, RuntimeError, TypeError):
            continue
        if not isinstance(ok, torch.Tensor) or bool(ok.all()):
            continue
        bad = value.expand(ok.shape)[~ok]
        grey = type(base).__name__ == "Bernoulli"
        advice = ("Binarise the data (binarize='dynamic' or 'fixed'; a program states it with "
                  "data_options = {'binarize': 'dynamic'}), or model grey values with "
                  "ContinuousBernoulli, Beta or Normal." if grey else
                  "Transform the data into the support, or choose a distribution whose support "
                  "holds the data.")
        raise DataError(
            f"observed site {name!r} of {prog.name} is given values outside the support of its "
            f"distribution {type(base).__name__} ({support}): {int((~ok).sum())} of {ok.numel()} "
            f"values, e.g. {float(bad.flatten()[0]):.4g}. {advice}") from err


def _find_data_plate(prog, msites, observed, n):
    stacks = [set(_plates(msites[k])) for k in observed]
    if prog.data_plate is not None:
        found = {f.name: f for s in msites.values() for f in _plates(s)}
        if prog.data_plate not in found:
            raise ConfigError(
                f"data_plate={prog.data_plate!r} is not a plate of the model; its plates are "
                f"{sorted(found) or 'none'}. Pass the name of the plate that holds the examples.")
        return found[prog.data_plate]
    common = set.intersection(*stacks)
    candidates = [f for f in common if f.size == n]
    sites = ", ".join(map(repr, observed))
    if not candidates:
        where = sorted({f.name for s in stacks for f in s})
        raise ConfigError(
            f"cannot find the data plate of {prog.name}: observed site{'s' if len(observed) > 1 else ''} "
            f"{sites} {'are' if len(observed) > 1 else 'is'} in no plate of size len(x) = {n}"
            f"{' (plates: ' + ', '.join(where) + ')' if where else ''}. Wrap the observation in "
            f"`with pyro.plate('data', len(x)):` (or pass data_plate='name').")
    if len(candidates) > 1:
        named = [f for f in candidates if f.name == "data"]
        if len(named) == 1:
            return named[0]
        raise ConfigError(
            f"several plates of size {n} hold {sites}: "
            f"{', '.join(sorted(f.name for f in candidates))}; pass data_plate='name' to say "
            f"which one holds the examples.")
    return candidates[0]


def _point_estimates(prog, xb, names) -> dict:
    """The guide's mean of each global latent, in program order, each given the earlier ones."""
    values: dict = {}
    for name in names:
        tr = poutine.trace(poutine.condition(prog.guide, data=dict(values))).get_trace(xb)
        fn = tr.nodes[name]["fn"]
        try:
            mean = fn.mean
        except NotImplementedError:
            mean = None
        if mean is None or not bool(torch.isfinite(mean).all()):
            raise ConfigError(
                f"global_latents='condition' needs the mean of the guide's distribution at "
                f"site {name!r}, but {type(fn).__name__} has no finite mean. Use a guide with a "
                f"mean there (e.g. Normal or Delta), or make it a parameter of the model.")
        values[name] = mean.detach()
    return values


# ----------------------------------------------------------------------------- per-example sums
def _particle_plate(fn, s: int, mpn: int):
    def wrapped(*args, **kwargs):
        with pyro.plate(_PARTICLES, s, dim=-(mpn + 1)):
            return fn(*args, **kwargs)
    return wrapped


def _site_log_prob(site) -> torch.Tensor:
    lp = site["fn"].log_prob(site["value"])
    return scale_and_mask(lp, 1.0, site["mask"]) if site["mask"] is not None else lp


def _reduce(lp, st: ProgramStructure, s: int, b: int) -> torch.Tensor:
    """A site's log density -> (*enum, S, B): sum every plate dimension but the particles' and
    the data's; enumeration dimensions (left of the particle plate) are kept."""
    mpn = st.max_plate_nesting
    if not isinstance(lp, torch.Tensor):
        lp = torch.as_tensor(lp)
    if lp.dim() < mpn + 1:
        lp = lp.reshape((1,) * (mpn + 1 - lp.dim()) + tuple(lp.shape))
    others = [d for d in range(-mpn, 0) if d != st.data_dim]
    if others:
        lp = lp.sum(others, keepdim=True)
    lp = lp.movedim((-(mpn + 1), st.data_dim), (-2, -1))
    enum_shape = lp.shape[:lp.dim() - (mpn + 1)]
    lp = lp.reshape(*enum_shape, lp.shape[-2], lp.shape[-1])
    return lp.expand(*enum_shape, s, b)


@dataclass
class _Terms:
    log_joint: torch.Tensor  # (S, B): log p(x, z) with enumerated sites summed out
    log_q: torch.Tensor  # (S, B)
    log_obs: torch.Tensor | None  # (S, B): log p(x | z), where the program splits
    log_latent: torch.Tensor | None  # (S, B): log p(z)


def _model_terms(model_tr, st: ProgramStructure, s: int, b: int):
    """Per-example log p(x, z) (S, B), enumerated sites summed out; and, without enumeration,
    its observed and latent parts."""
    obs = lat = None
    total = None
    for name, site in _sample_sites(model_tr).items():
        if name in st.conditioned:
            continue
        lp = _reduce(_site_log_prob(site), st, s, b)
        total = lp if total is None else total + lp
        if not st.enumerated:
            if name in st.observed:
                obs = lp if obs is None else obs + lp
            else:
                lat = lp if lat is None else lat + lp
    if total.dim() > 2:
        total = total.flatten(0, total.dim() - 3).logsumexp(0)
    zeros = total.new_zeros((s, b))
    return total, (obs if obs is not None else zeros), (lat if lat is not None else zeros)


def _guide_log_q(guide_tr, st: ProgramStructure, s: int, b: int) -> torch.Tensor:
    out = None
    for name, site in _sample_sites(guide_tr).items():
        if name in st.conditioned:
            continue
        lp = _reduce(_site_log_prob(site), st, s, b)
        out = lp if out is None else out + lp
    return out


def _conditioned(fn, st: ProgramStructure):
    return poutine.condition(fn, data=st.conditioned) if st.conditioned else fn


def _traces(prog: ProgramModel, st: ProgramStructure, xb: torch.Tensor, s: int | None,
            values: dict | None = None):
    """The guide's and the model's traces on ``xb``: s particles at once in the particle
    plate, or (``s=None``) one draw of the plain program; ``values`` fixes guide sites."""
    mpn = st.max_plate_nesting
    guide, model = _conditioned(prog.guide, st), _conditioned(prog.model, st)
    if values:
        guide, model = poutine.condition(guide, data=values), poutine.condition(model, data=values)
    if s is not None:
        guide, model = _particle_plate(guide, s, mpn), _particle_plate(model, s, mpn)
    if st.enumerated:  # left of the particle plate's dimension, whether it is there or not
        model = poutine.enum(model, first_available_dim=-(mpn + 2))
    guide_tr = poutine.trace(guide).get_trace(xb)
    if not values:
        model = poutine.replay(model, trace=guide_tr)
    return guide_tr, poutine.trace(model).get_trace(xb)


def _terms(prog: ProgramModel, st: ProgramStructure, xb: torch.Tensor, s: int) -> _Terms:
    """Draw s particles per example from the guide and score them under the model: at once in
    the particle plate, or one run of the plain program after another where the program does
    not broadcast over it (``st.vectorized``)."""
    if not st.vectorized:
        runs = [_terms_of(st, *_traces(prog, st, xb, None), 1, xb.shape[0]) for _ in range(s)]
        if s == 1:
            return runs[0]
        cat = [None if getattr(runs[0], f) is None else torch.cat([getattr(t, f) for t in runs])
               for f in ("log_joint", "log_q", "log_obs", "log_latent")]
        return _Terms(*cat)
    return _terms_of(st, *_traces(prog, st, xb, s), s, xb.shape[0])


def _terms_of(st: ProgramStructure, guide_tr, model_tr, s: int, b: int) -> _Terms:
    log_q = _guide_log_q(guide_tr, st, s, b)
    log_joint, log_obs, log_latent = _model_terms(model_tr, st, s, b)
    if log_q is None:
        log_q = log_joint.new_zeros((s, b))
    if st.has_terms:
        return _Terms(log_joint, log_q, log_obs, log_latent)
    return _Terms(log_joint, log_q, None, None)


def _data_size(x: torch.Tensor) -> int:
    return max(1, math.prod(x.shape[1:]))


# ----------------------------------------------------------------------------- the bounds
@torch.no_grad()
def program_elbo(program, x: torch.Tensor, *, num_samples: int = 1, data_plate: str | None = None,
                 global_latents: str | None = None,
                 max_elements: int = DEFAULT_MAX_ELEMENTS) -> ELBORecord:
    """The evidence lower bound per example, E_q[log p(x, z) - log q(z | x)], from traces.

    Parameters
    ----------
    program
        A :class:`ProgramModel`, a ``(model, guide)`` pair, or an object with ``model`` and
        ``guide`` (see :func:`as_program`).
    x : Tensor (N, ...)
    num_samples : int
        Particles per example; the standard error needs at least 2.
    data_plate, global_latents
        As :func:`check_program`.
    max_elements : int
        Bound on particles x examples x data values held at once (:func:`chunk_plan`).

    Returns
    -------
    ELBORecord
        ``total`` (N,); ``reconstruction`` = E_q[log p(x | z)] and ``kl`` = E_q[log q(z | x)
        - log p(z)] (Monte Carlo, on the same particles) when the program has one observed
        site and no enumerated latent, else ``None``; ``mc_stderr`` (N,) with
        ``num_samples >= 2``.
    """
    check_positive_int("num_samples", num_samples)
    prog = _resolve(program, data_plate, global_latents)
    st = prog.structure(x)
    n = x.shape[0]
    # one particle per chunk where they are drawn one run at a time: the blocks of examples grow
    block, chunk = chunk_plan(n, _data_size(x), max_elements, None if st.vectorized else 1)
    totals, recs, kls, ses = [], [], [], []
    for b0 in range(0, n, block):
        xb = x[b0:b0 + block]
        parts, rec_parts, kl_parts = [], [], []
        for start in range(0, num_samples, chunk):
            s = min(chunk, num_samples - start)
            t = _terms(prog, st, xb, s)
            parts.append(t.log_joint - t.log_q)
            if t.log_obs is not None:
                rec_parts.append(t.log_obs)
                kl_parts.append(t.log_q - t.log_latent)
        total = torch.cat(parts)  # (S, B)
        totals.append(total.mean(0))
        if rec_parts:
            recs.append(torch.cat(rec_parts).mean(0))
            kls.append(torch.cat(kl_parts).mean(0))
        if num_samples > 1:
            ses.append(total.std(0, unbiased=True) / math.sqrt(num_samples))
    return ELBORecord(total=torch.cat(totals).to(x.dtype) if x.is_floating_point() else torch.cat(totals),
                      reconstruction=torch.cat(recs) if recs else None,
                      kl=torch.cat(kls) if kls else None,
                      mc_stderr=torch.cat(ses) if ses else None)


def _log_weight_blocks(prog, st, x, k, block, chunk):
    """Yield (slice, log_w (s, B) float64) over blocks of examples and chunks of particles."""
    n = x.shape[0]
    for b0 in range(0, n, block):
        sl = slice(b0, min(b0 + block, n))
        xb = x[sl]
        for start in range(0, k, chunk):
            s = min(chunk, k - start)
            t = _terms(prog, st, xb, s)
            yield sl, start, (t.log_joint - t.log_q).double()


@torch.no_grad()
def program_log_weights(program, x: torch.Tensor, k: int, *, data_plate: str | None = None,
                        global_latents: str | None = None,
                        max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """The log importance weights log p(x, z_i) - log q(z_i | x), z_i ~ q, per example.

    The work is chunked as in :func:`program_iwae_bound`, but the result itself holds
    k x N values.

    Returns
    -------
    Tensor (k, N), float64
    """
    check_positive_int("k", k)
    prog = _resolve(program, data_plate, global_latents)
    st = prog.structure(x)
    n = x.shape[0]
    # one particle per chunk where they are drawn one run at a time: the blocks of examples grow
    block, chunk = chunk_plan(n, _data_size(x), max_elements, None if st.vectorized else 1)
    out = torch.empty((k, n), dtype=torch.float64, device=x.device)
    for sl, start, lw in _log_weight_blocks(prog, st, x, k, block, chunk):
        out[start:start + lw.shape[0], sl] = lw
    return out


@torch.no_grad()
def program_iwae_bound(program, x: torch.Tensor, k: int, *, khat: bool = True,
                       data_plate: str | None = None, global_latents: str | None = None,
                       chunk_size: int | None = None,
                       max_elements: int = DEFAULT_MAX_ELEMENTS) -> ProgramIWAERecord:
    """The importance-weighted bound log (1/k) sum_i p(x, z_i) / q(z_i | x) per example.

    The k particles are drawn in chunks folded into a running log-sum-exp, as in
    :func:`probgen.inference.bounds.iwae_bound`, so the memory of a chunk stays within
    ``max_elements`` data values whatever k and N are. With ``khat`` the weights of a block of
    examples are kept (at most ``max_elements`` of them) to fit the Pareto k-hat of each example.

    Parameters
    ----------
    program
        See :func:`as_program`.
    x : Tensor (N, ...)
    k : int
        Importance samples per example.
    khat : bool
        Compute the Pareto k-hat of each example's k weights
        (:func:`probgen.eval.diagnostics.pareto_khat`; NaN for k below about 25).
    data_plate, global_latents
        As :func:`check_program`.
    chunk_size : int, optional
        Particles per chunk; default: as many as fit in ``max_elements``.
    max_elements : int

    Returns
    -------
    ProgramIWAERecord
        ``total`` (N,), ``mc_stderr`` (N,) (delta method; None for k = 1), ``k``,
        ``khat`` (N,) float64 or None.
    """
    check_positive_int("k", k)
    prog = _resolve(program, data_plate, global_latents)
    st = prog.structure(x)
    n = x.shape[0]
    block, chunk = chunk_plan(n, _data_size(x), max_elements, chunk_size if st.vectorized else 1)
    if khat:
        block = max(1, min(block, max_elements // k))
    lse1 = torch.full((n,), -math.inf, dtype=torch.float64, device=x.device)
    lse2 = torch.full((n,), -math.inf, dtype=torch.float64, device=x.device)
    # With khat, one (k, block) buffer, allocated once, holds the weights of the current
    # block: a list of per-chunk pieces would scatter small long-lived allocations among the
    # chunks' large temporaries, and the heap then grows by fragmentation (measured: peak RSS
    # up to 1.5 GiB above the floor for k = 1000 on 2,000 images, against 0.1-0.3 GiB).
    keep = torch.empty((k, block), dtype=torch.float64, device=x.device) if khat else None
    khats, kept_sl = [], None
    for sl, start, lw in _log_weight_blocks(prog, st, x, k, block, chunk):
        if khat and sl != kept_sl:
            if kept_sl is not None:
                khats.append(_khat(keep[:, :kept_sl.stop - kept_sl.start]))
            kept_sl = sl
        lse1[sl] = torch.logaddexp(lse1[sl], torch.logsumexp(lw, 0))
        lse2[sl] = torch.logaddexp(lse2[sl], torch.logsumexp(2 * lw, 0))
        if khat:
            keep[start:start + lw.shape[0], :lw.shape[1]] = lw
    if khat and kept_sl is not None:
        khats.append(_khat(keep[:, :kept_sl.stop - kept_sl.start]))
    total = lse1 - math.log(k)
    se = None
    if k > 1:
        rel_var = (k * torch.exp(lse2 - 2 * lse1) - 1).clamp_min(0)
        se = (rel_var / k).sqrt()
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    return ProgramIWAERecord(total=total.to(dtype), mc_stderr=None if se is None else se.to(dtype),
                             k=k, khat=torch.cat(khats) if khat else None)


def _khat(log_w: torch.Tensor) -> torch.Tensor:
    from probgen.inference.khat import pareto_khat

    lw = log_w.clone()
    lw[torch.isnan(lw)] = -math.inf
    return pareto_khat(lw, dim=0)


# ----------------------------------------------------------------------------- AIS
def program_ais(program, x: torch.Tensor, options: AISOptions | None = None, *,
                generator: torch.Generator | None = None, data_plate: str | None = None,
                global_latents: str | None = None, **changes) -> ProgramAISResult:
    """Forward AIS estimate of log p(x) per example (a stochastic lower bound), from traces.

    Runs :func:`probgen.inference.ais.ais` (its HMC kernel, schedules, step-size adaptation
    and records) on the program's continuous local latents, one set of ``n_chains`` chains
    per example. The chains move in unconstrained space: each latent site's value is
    ``biject_to(support)(u)`` and the target density carries the log-determinant of the
    Jacobian, so the annealing path goes from N(0, I) over u to p(u | x). Enumerated discrete
    latents are summed out inside the target; the guide is not used (only the model's
    structure). ``options``, ``generator`` and the keywords that change the options as
    :func:`probgen.inference.ais.ais` (``sigma`` is not used: a program has its own
    likelihood); ``data_plate`` and ``global_latents`` as :func:`check_program`. The transform of each site is taken from its
    support on the first examples, so supports must not depend on the example (``Normal``,
    ``Gamma``, ``Beta``, ``Dirichlet`` ... do not; a ``Uniform(0, x_n)`` would).

    Returns
    -------
    ProgramAISResult
        The :class:`probgen.inference.ais.AISResult` fields, ``khat`` (N,) of the chain
        weights, and ``sites``, the latent sites the chains moved.
    """
    from probgen.inference.ais import ais
    from probgen.inference.khat import pareto_khat

    prog = _resolve(program, data_plate, global_latents)
    st = prog.structure(x)
    target = _ProgramTarget(prog, st, x)
    opts = AISOptions.of(options, **changes)
    if opts.batch_size is None:  # the chains' memory is the program's data size, not index's
        opts = replace(opts, batch_size=max(1, DEFAULT_MAX_ELEMENTS // (_data_size(x) * opts.n_chains)))
    res = ais(target, target.index, opts, generator=generator)
    fields = {f: getattr(res, f) for f in res.__dataclass_fields__}
    return ProgramAISResult(**fields, khat=pareto_khat(res.log_weights), sites=st.latent)


@dataclass(frozen=True)
class _LatentSite:
    name: str
    transform: object  # biject_to(support): unconstrained -> the site's support
    rest: tuple  # shape of one example's unconstrained value, particle and data dims removed
    pos: int  # position of the data dim in (C, *plates, *event) with the particle plate first
    dim: int  # prod(rest)
    plain_shape: tuple  # the value's shape in a plain run of the program, ...
    plain_pos: int  # ... whose dimension at this position is the examples'


class _ProgramTarget:
    """A program's log p(x, z) for :func:`probgen.inference.ais.ais`, over a flat vector per
    example of the unconstrained values of its continuous local latents.

    The "data" AIS passes around is ``index`` (N, 1), the examples' row numbers, so that
    programs over data of any shape and dtype fit AIS's (N, *shape) floating-point contract.
    """

    def __init__(self, prog: ProgramModel, st: ProgramStructure, x: torch.Tensor):
        from torch.distributions import biject_to

        self.prog, self.st, self.x = prog, st, x
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        self.index = torch.arange(x.shape[0], dtype=dtype, device=x.device).unsqueeze(1)
        xb = x[:_PROBE_EXAMPLES]
        with torch.no_grad():
            guide_tr = poutine.trace(_conditioned(prog.guide, st)).get_trace(xb)
            model_tr = poutine.trace(poutine.replay(_conditioned(prog.model, st),
                                                    trace=guide_tr)).get_trace(xb)
        mpn = st.max_plate_nesting
        sites = []
        for name in st.latent:
            site = model_tr.nodes[name]
            fn = site["fn"]
            if fn.support.is_discrete:
                raise ConfigError(
                    f"AIS moves continuous latents by HMC, but site {name!r} is discrete. Leave "
                    f"it out of the guide and mark it for enumeration in the model "
                    f"(pyro.infer.config_enumerate) so that it is summed out.")
            support = fn.support
            if isinstance(support, torch.distributions.constraints.MixtureSameFamilyConstraint):
                support = support.base_constraint  # a mixture's support is its components'
            t = biject_to(support)
            v_shape = tuple(site["value"].shape)
            batch_len = len(v_shape) - fn.event_dim
            if batch_len > mpn:
                raise ConfigError(
                    f"site {name!r} has batch shape {v_shape[:batch_len]}, more dimensions than "
                    f"the program's {mpn} plate(s); declare its extra dimensions with "
                    f".to_event(...) or a plate.")
            u_shape = tuple(t.inverse_shape(torch.Size(v_shape)))
            full = (1,) + (1,) * (mpn - batch_len) + u_shape
            pos = 1 + mpn + st.data_dim
            rest = tuple(d for i, d in enumerate(full) if i not in (0, pos))
            sites.append(_LatentSite(name, t, rest, pos, max(1, math.prod(rest)), v_shape,
                                     batch_len + st.data_dim))
        if not sites:
            raise ConfigError(
                f"{prog.name} has no continuous local latent for AIS to move: its latents are "
                f"{'enumerated' if st.enumerated else 'absent'}, and the ELBO with them summed out "
                f"is already log p(x).")
        self.sites = tuple(sites)
        self.latent_dim = sum(s.dim for s in sites)

    def log_joint(self, index: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, u) = log p(x, T(u)) + log |det dT/du|: index (B, 1), z (C, B, d) -> (C, B)."""
        rows = index[:, 0].long()
        xb = self.x[rows[0]:rows[-1] + 1] if _contiguous(rows) else self.x[rows]
        c, b, _ = z.shape
        values, logdet, off = {}, z.new_zeros((c, b)), 0
        for s in self.sites:
            u = z[..., off:off + s.dim].reshape(c, b, *s.rest).movedim(1, s.pos)
            off += s.dim
            v = s.transform(u)
            ld = s.transform.log_abs_det_jacobian(u, v)
            logdet = logdet + ld.movedim(s.pos, 1).reshape(c, b, -1).sum(-1)
            values[s.name] = v
        if self.st.vectorized:
            total = self._log_joint(xb, values, c, b)
        else:  # one chain at a time, each in a plain run of the program
            total = torch.cat([self._log_joint(xb, {
                s.name: values[s.name][i].reshape(s.plain_shape[:s.plain_pos] + (b,)
                                                  + s.plain_shape[s.plain_pos + 1:])
                for s in self.sites}, None, b) for i in range(c)])
        return total + logdet

    def _log_joint(self, xb, values: dict, c: int | None, b: int) -> torch.Tensor:
        """(c, b) log p(x, z) of the values, in the particle plate of c chains (``c=None``:
        one chain, the plain program)."""
        st = self.st
        model = poutine.condition(self.prog.model, data={**st.conditioned, **values})
        if c is not None:
            model = _particle_plate(model, c, st.max_plate_nesting)
        if st.enumerated:
            model = poutine.enum(model, first_available_dim=-(st.max_plate_nesting + 2))
        # HMC proposals may leave the region where the model's distributions accept their
        # parameters (a positive latent overflowing to inf); there the log density must be
        # -inf, which AIS rejects, not a validation error that stops every chain. The data
        # were validated by check_program before.
        with pyro.validation_enabled(False):
            tr = poutine.trace(model).get_trace(xb)
            total, _, _ = _model_terms(tr, st, c or 1, b)
        return total


def _contiguous(rows: torch.Tensor) -> bool:
    return rows.numel() > 0 and int(rows[-1] - rows[0]) + 1 == rows.numel()
