"""Forward vs reverse KL: a simple q fitted to a multimodal p both ways (``probgen kl-demo``).

Four problems, each p an equal-weight mixture of isotropic Gaussians with sd 0.5:

==============  ==================================================  ====================
problem         p                                                   q
==============  ==================================================  ====================
``1d``          modes at -2 and 2                                   one Gaussian
``2d``          modes at (-2, -2) and (2, 2)                        one Gaussian (full
                                                                    covariance)
``1d_mixture``  modes at -3, 0 and 3                                two Gaussians
``2d_mixture``  modes on a triangle of radius 2.5 (at 90, 210, 330  two Gaussians
                degrees)
==============  ==================================================  ====================

q is fitted twice (:mod:`probgen.inference.kl`): by forward KL(p||q), maximum likelihood on
samples of p by EM, which covers every mode (for one Gaussian it matches p's mean and covariance:
in ``1d`` N(0, 4.25)); and by reverse KL(q||p), Pyro SVI on log p, which seeks modes (on one
of two equal modes KL(q||p) is log 2 = 0.693; on two of three, log 1.5 = 0.405). The reverse
fit starts from locations drawn uniformly in the box spanned by p's modes (seeded) with a
narrow scale, and is not told where the modes are. With two components on three modes one
start can end with both components on the same mode (KL(q||p) = log 3), or with one spread
between two modes, local optima of the objective; so, as EM keeps the best of its starts, the
reverse fit runs from four starts and keeps the one with the lowest KL(q||p) - log Z (over 8,192
draws of q). One start each, seeds 0-5 ended at KL(q||p) 0.405, 0.404, 0.698, 0.423, 0.702,
0.401 on ``1d_mixture`` and at 0.408 on ``2d_mixture`` but for 1.100 on seed 3. ``kl.json``
holds every start and its objective.

Both divergences of both fits are then estimated by Monte Carlo with standard errors (and in
1-D by quadrature as well), in float64, from p's exact normalised density.

Writes ``DIR/kl.json`` and one figure per problem, ``DIR/kl_<problem>.png``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from probgen.errors import ConfigError, suggest

__all__ = ["PROBLEMS", "Problem", "SETTINGS", "run_kl_demo"]


@dataclass(frozen=True)
class Problem:
    """p, an equal-weight mixture of isotropic Gaussians, and the size of q."""

    description: str
    means: tuple[tuple[float, ...], ...]  # (M, D): p's modes
    sd: float
    n_components: int  # K, Gaussians in q

    @property
    def dim(self) -> int:
        return len(self.means[0])

    def p(self, dtype: torch.dtype = torch.float32):
        """p as a distribution with event shape (D,)."""
        import pyro.distributions as dist

        means = torch.tensor(self.means, dtype=dtype)  # (M, D)
        m, d = means.shape
        scale = self.sd * torch.eye(d, dtype=dtype).expand(m, d, d)
        return dist.MixtureSameFamily(dist.Categorical(probs=torch.full((m,), 1.0 / m, dtype=dtype)),
                                      dist.MultivariateNormal(means, scale_tril=scale))

    def box(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper corners, shape (D,) each, of the box spanned by p's modes."""
        means = torch.tensor(self.means)
        return means.min(0).values, means.max(0).values

    def to_dict(self) -> dict:
        m = len(self.means)
        return {"description": self.description, "means": [list(x) for x in self.means],
                "sd": self.sd, "weights": [1.0 / m] * m, "n_components_q": self.n_components}


_R = 2.5
PROBLEMS: dict[str, Problem] = {
    "1d": Problem("two Gaussians at -2 and 2; q one Gaussian", ((-2.0,), (2.0,)), 0.5, 1),
    "2d": Problem("two Gaussians at (-2,-2) and (2,2); q one Gaussian",
                  ((-2.0, -2.0), (2.0, 2.0)), 0.5, 1),
    "1d_mixture": Problem("three Gaussians at -3, 0 and 3; q two Gaussians",
                          ((-3.0,), (0.0,), (3.0,)), 0.5, 2),
    "2d_mixture": Problem(
        "three Gaussians on a triangle of radius 2.5; q two Gaussians",
        tuple((round(_R * math.cos(math.radians(a)), 6), round(_R * math.sin(math.radians(a)), 6))
              for a in (90, 210, 330)),
        0.5, 2),
}

# smoke -> sizes: samples of p for the forward fit, EM starts, reverse-fit starts, its
# optimiser steps and Monte Carlo draws per step (per component), and samples for each KL
# estimate.
SETTINGS: dict[bool, dict[str, int]] = {
    False: {"n_train": 20_000, "n_init": 5, "reverse_starts": 4, "reverse_steps": 600,
            "num_particles": 32, "n_mc": 200_000},
    True: {"n_train": 2_000, "n_init": 5, "reverse_starts": 2, "reverse_steps": 150,
           "num_particles": 8, "n_mc": 20_000},
}


@contextlib.contextmanager
def _one_thread():
    """Every tensor here is tiny: on a shared 2-core machine, threaded kernels on a (5000, 2)
    array waited on each other (a triangular solve took 24 ms on 2 threads, 0.2 ms on 1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _fit(problem: Problem, seed: int, s: dict) -> dict:
    """Both fits of one problem -> {"forward": KLFit, "reverse": KLFit, "samples": (N, D)}."""
    from probgen.inference.kl import fit_forward_kl, fit_reverse_kl

    k, d = problem.n_components, problem.dim
    p = problem.p()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        x = p.sample((s["n_train"],))  # (N, D)
    lo, hi = problem.box()
    gen = torch.Generator().manual_seed(seed)
    # (starts, K, D), uniform in the box
    init_locs = lo + (hi - lo) * torch.rand(s["reverse_starts"], k, d, generator=gen)
    t0 = time.perf_counter()
    fwd = fit_forward_kl(x, k, n_init=s["n_init"], seed=seed)
    t1 = time.perf_counter()
    rev = fit_reverse_kl(p.log_prob, d, k, init_locs=init_locs, n_init=s["reverse_starts"],
                         steps=s["reverse_steps"], num_particles=s["num_particles"], seed=seed)
    t2 = time.perf_counter()
    return {"forward": fwd, "reverse": rev, "samples": x,
            "seconds": {"forward": t1 - t0, "reverse": t2 - t1}, "init_locs": init_locs}


def _score(problem: Problem, fit, n_mc: int, seed: int) -> dict:
    """Both divergences of one fit, by Monte Carlo (and quadrature in 1-D), in float64."""
    from probgen.inference.kl import kl_monte_carlo, kl_quadrature_1d

    p, q = problem.p(torch.float64), fit.distribution(torch.float64)
    out = fit.to_dict()
    out["kl_p_q"], out["kl_p_q_stderr"] = kl_monte_carlo(p, q, n_mc, seed=seed)
    out["kl_q_p"], out["kl_q_p_stderr"] = kl_monte_carlo(q, p, n_mc, seed=seed + 1)
    if problem.dim == 1:
        modes = [m[0] for m in problem.means] + fit.locs[:, 0].tolist()
        sd = max([problem.sd] + fit.covariances[:, 0, 0].sqrt().tolist())
        lim = {"lo": min(modes) - 15 * sd, "hi": max(modes) + 15 * sd}
        out["kl_p_q_quadrature"] = kl_quadrature_1d(p, q, **lim)
        out["kl_q_p_quadrature"] = kl_quadrature_1d(q, p, **lim)
    out["final_loss"] = fit.losses[-1]
    return out


def _figure(name: str, problem: Problem, fits: dict, scores: dict, path: Path) -> Path:
    """p shaded, the forward and the reverse q drawn over it: curves in 1-D, contours in 2-D
    (at fixed fractions of each density's peak, so that no level falls in underflow noise)."""
    from probgen import plots

    plt = plots.pyplot()
    label = {w: f"{w}: KL(p||q)={scores[w]['kl_p_q']:.2f}, KL(q||p)={scores[w]['kl_q_p']:.2f}"
             for w in ("forward", "reverse")}
    colors = {"forward": "C0", "reverse": "C3"}
    lo, hi = problem.box()
    pad = 3 * problem.sd + 1.0
    p = problem.p()
    fig, ax = plt.subplots(figsize=(6, 5.5) if problem.dim == 2 else (7, 3.5))
    with torch.no_grad():
        if problem.dim == 1:
            g = torch.linspace(float(lo[0]) - pad - 1, float(hi[0]) + pad + 1, 800)[:, None]  # (G, 1)
            ax.fill_between(g[:, 0], p.log_prob(g).exp(), color="0.8", label="p")
            for w in ("forward", "reverse"):
                ax.plot(g[:, 0], fits[w].distribution().log_prob(g).exp(), color=colors[w],
                        label=label[w])
            ax.set_xlabel("z")
            ax.set_ylabel("density")
        else:
            r = 150
            g = torch.linspace(float(lo.min()) - pad, float(hi.max()) + pad, r)
            xx, yy = torch.meshgrid(g, g, indexing="xy")  # (R, R) each
            grid = torch.stack([xx.flatten(), yy.flatten()], dim=1)  # (R*R, 2)
            fractions = torch.tensor([0.05, 0.25, 0.5, 0.75])
            pz = p.log_prob(grid).exp().reshape(r, r)
            ax.contourf(xx, yy, pz, levels=float(pz.max()) * torch.tensor([0.02, 0.2, 0.5, 1.0]),
                        cmap="Greys", alpha=0.6)
            handles = [plt.Rectangle((0, 0), 1, 1, color="0.7", label="p")]
            for w in ("forward", "reverse"):
                qz = fits[w].distribution().log_prob(grid).exp().reshape(r, r)
                ax.contour(xx, yy, qz, levels=float(qz.max()) * fractions, colors=colors[w])
                handles.append(plt.Line2D([], [], color=colors[w], label=label[w]))
            ax.legend(handles=handles, fontsize=8, loc="upper left")
            ax.set_aspect("equal")
            ax.set_xlabel("z1")
            ax.set_ylabel("z2")
    if problem.dim == 1:
        ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"{name}: {problem.description}", fontsize=9)
    return plots.save_figure(fig, path)


def run_kl_demo(out_dir, *, seed: int = 0, smoke: bool = False,
                problems: Sequence[str] | None = None) -> dict:
    """Fit q to each problem's p by forward and by reverse KL; write kl.json and figures.

    Parameters
    ----------
    out_dir : path
        Folder to write ``kl.json`` and ``kl_<problem>.png`` into (created if missing).
    seed : int
        Seeds p's samples, the starts of both fits and the Monte Carlo estimates.
    smoke : bool
        Tiny sizes (seconds) instead of the full ones (see :data:`SETTINGS`).
    problems : sequence of str, optional
        Names from :data:`PROBLEMS`; default all.

    Returns
    -------
    dict
        What ``kl.json`` holds: ``{"seed", "smoke", "settings", "problems": {name: {"p",
        "forward", "reverse", "figure"}}}``; each fit has ``locs`` (K, D), ``covariances``
        (K, D, D), ``weights`` (K,), ``kl_p_q``, ``kl_q_p`` and their ``*_stderr``
        (Monte Carlo), ``*_quadrature`` in 1-D, the final loss and the fit's seconds.
    """
    from probgen.runs import atomic_write_json

    names = list(PROBLEMS) if problems is None else list(problems)
    for name in names:
        if name not in PROBLEMS:
            raise ConfigError(f"unknown KL-demo problem {name!r}.{suggest(name, PROBLEMS)} "
                              f"Known: {', '.join(PROBLEMS)}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = SETTINGS[bool(smoke)]
    result = {"seed": seed, "smoke": bool(smoke), "settings": dict(s), "problems": {}}
    with _one_thread():
        for i, name in enumerate(names):
            problem = PROBLEMS[name]
            fits = _fit(problem, seed, s)
            scores = {w: _score(problem, fits[w], s["n_mc"], seed=1000 * seed + 10 * i + 2 * j)
                      for j, w in enumerate(("forward", "reverse"))}
            for w in scores:
                scores[w]["seconds"] = round(fits["seconds"][w], 3)
            scores["reverse"]["init_locs"] = fits["init_locs"].tolist()  # of every start
            scores["reverse"]["start_objectives"] = fits["reverse"].start_objectives
            fig = _figure(name, problem, fits, scores, out / f"kl_{name}.png")
            result["problems"][name] = {"p": problem.to_dict(), **scores, "figure": fig.name}
    atomic_write_json(out / "kl.json", result)
    return result
