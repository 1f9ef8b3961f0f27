"""Annealed importance sampling against IWAE and the exact log-likelihood of a linear-Gaussian model.

What it shows, on a probabilistic PCA model with known parameters (z ~ N(0, I_d), x | z ~ N(W z + mu, s^2 I_D)) whose
log p(x) = log N(x; mu, W W^T + s^2 I) is known exactly:

* the importance-weighted bound IWAE-k (Burda et al., 2015) with a mean-field proposal (the
  exact posterior mean with the mean-field variances, the best a diagonal-Gaussian encoder can
  do): it rises with k toward log p(x) but stays below it;
* annealed importance sampling with HMC (Neal, 2001; Wu et al., 2017) from the prior, run as
  the bidirectional Monte Carlo sandwich of Grosse et al. (2015) on data simulated from the
  model: the forward chain gives a stochastic lower bound, the reverse chain started from the
  latent codes that generated the data a stochastic upper bound, and both close in on
  log p(x) as the schedule lengthens;
* a figure of the error of each estimate against its cost (likelihood evaluations per
  example), and ``results.json``.

The known answers are checked at the end: IWAE-k below the exact value and rising with k;
the BDMC bounds on either side of it (within Monte Carlo error) with a gap that shrinks; and
AIS at the longest schedule within 0.05 nats of the exact mean (0.15 with ``--smoke``).

    python examples/ais_ppca.py --out runs/ais_ppca
    python examples/ais_ppca.py --smoke --out /tmp/ais_ppca
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from probgen.inference.ais import PILOT_CHAINS, AISOptions, bdmc
from probgen.models.ppca import PPCA


def linear_gaussian(latent_dim: int, data_dim: int, noise: float, seed: int = 0) -> PPCA:
    """z ~ N(0, I_d); x | z ~ N(W z + mu, s^2 I_D) with random W and mu, as a PPCA whose guide
    is the best mean-field proposal: the exact posterior mean with the mean-field standard
    deviations s / sqrt(M_ii), M = W^T W + s^2 I."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(data_dim, latent_dim, generator=g, dtype=torch.float64)
    # correlate the latents so the mean-field proposal cannot be exact
    w[:, 0] += 0.8 * w[:, -1]
    mu = torch.randn(data_dim, generator=g, dtype=torch.float64)
    return PPCA.from_parameters(w, mu, noise, guide="diagonal")


@torch.no_grad()
def sample_joint(model: PPCA, n: int, seed: int = 1):
    """(x, z): z ~ N(0, I), x ~ p(x | z); x (n, D), z (n, d)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.latent_dim, generator=g, dtype=torch.float64)
    x = model.decode(z) + model.noise_std * torch.randn(n, model.dim, generator=g, dtype=torch.float64)
    return x, z


@torch.no_grad()
def iwae_bound(model: PPCA, x: torch.Tensor, k: int, repeats: int, generator=None):
    """The IWAE-k bound E[log mean_k w] with the model's mean-field guide as proposal, per
    example (N,).

    Averages ``repeats`` independent IWAE-k estimates; returns their mean and its standard error.
    """
    q = model.encoder_distribution(x)
    loc, scale = q.mean, q.stddev  # (N, d) each
    eps = torch.randn((repeats, k, *loc.shape), dtype=loc.dtype, generator=generator)  # (R, k, N, d)
    z = loc + scale * eps
    log_q = (-0.5 * eps.pow(2) - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)  # (R, k, N)
    log_w = model.prior_log_prob(z) + model.log_likelihood(x, z) - log_q
    est = torch.logsumexp(log_w, 1) - math.log(k)  # (R, N)
    return est.mean(0), est.std(0) / math.sqrt(repeats)


def _mean_and_se(per_example: torch.Tensor, exact: torch.Tensor, mc_se: torch.Tensor):
    """Mean error against the exact value and the Monte Carlo error of that mean."""
    n = per_example.numel()
    return float((per_example - exact).mean()), float(mc_se.nan_to_num(0).pow(2).sum().sqrt() / n)


def run(args) -> dict:
    # AIS here is thousands of steps on tiny tensors: one thread avoids contention
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = linear_gaussian(args.latent_dim, args.data_dim, args.noise, seed=args.seed)
    x, z = sample_joint(model, args.n_examples, seed=args.seed + 1)
    with torch.no_grad():
        exact = model.log_prob(x)
    rows = []
    for k in args.iwae_k:
        t = time.perf_counter()
        est, se = iwae_bound(model, x, k, args.iwae_repeats, gen)
        err, err_se = _mean_and_se(est, exact, se)
        rows.append({"estimator": "iwae", "k": k, "cost": k, "error": err, "mc_stderr": err_se,
                     "seconds": time.perf_counter() - t})
    opts = AISOptions(n_chains=args.chains, n_leapfrog=args.leapfrog, step_size=0.3)
    for steps in args.ais_steps:
        t = time.perf_counter()
        res = bdmc(model, x, z, opts, n_steps=steps, generator=gen)
        seconds = time.perf_counter() - t
        # likelihood gradients per example: the step-size pilot (at most 8 chains) and the
        # forward run; the reverse run costs as much again
        cost = (args.chains + min(args.chains, PILOT_CHAINS)) * (steps - 1) * args.leapfrog
        for name, part in (("ais_forward", res.lower), ("ais_reverse", res.upper)):
            err, err_se = _mean_and_se(part.log_px, exact, part.stderr)
            rows.append({"estimator": name, "n_steps": steps, "cost": cost, "error": err,
                         "mc_stderr": err_se, "acceptance": float(part.acceptance.mean()),
                         "seconds": seconds})
    return {"exact_mean_log_px": float(exact.mean()), "n_examples": args.n_examples,
            "latent_dim": args.latent_dim, "data_dim": args.data_dim, "noise": args.noise,
            "chains": args.chains, "leapfrog": args.leapfrog, "rows": rows}


def figure(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    styles = {"iwae": ("IWAE-k (mean-field proposal)", "o-"),
              "ais_forward": ("AIS forward (lower)", "s-"),
              "ais_reverse": ("AIS reverse (upper)", "^-")}
    for name, (label, style) in styles.items():
        rows = [r for r in results["rows"] if r["estimator"] == name]
        ax.errorbar([r["cost"] for r in rows], [r["error"] for r in rows],
                    yerr=[2 * r["mc_stderr"] for r in rows], fmt=style, label=label, capsize=3)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("likelihood evaluations per example")
    ax.set_ylabel("estimate - exact log p(x) (nats)")
    ax.set_title("Estimates of log p(x) on a linear-Gaussian model (±2 MC s.e.)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def check(results: dict, tolerance: float) -> None:
    """The known answers: fail loudly if any does not hold."""
    rows = results["rows"]
    iw = [r for r in rows if r["estimator"] == "iwae"]
    for r in iw:
        assert r["error"] <= 3 * r["mc_stderr"] + 1e-9, f"IWAE-{r['k']} above log p(x): {r}"
    assert iw[-1]["error"] > iw[0]["error"], "IWAE-k did not rise with k"
    fwd = [r for r in rows if r["estimator"] == "ais_forward"]
    rev = [r for r in rows if r["estimator"] == "ais_reverse"]
    for lo, up in zip(fwd, rev):
        assert lo["error"] <= 3 * lo["mc_stderr"], f"forward AIS above log p(x): {lo}"
        assert up["error"] >= -3 * up["mc_stderr"], f"reverse AIS below log p(x): {up}"
    gaps = [up["error"] - lo["error"] for lo, up in zip(fwd, rev)]
    assert gaps[-1] < gaps[0], f"the BDMC gap did not shrink: {gaps}"
    assert abs(fwd[-1]["error"]) < tolerance, (
        f"AIS at {fwd[-1]['n_steps']} steps is {fwd[-1]['error']:+.3f} nats from the exact value")


def main(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run(args)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    figure(results, out / "ais_vs_iwae.png")
    print(f"exact mean log p(x) = {results['exact_mean_log_px']:.4f} nats over "
          f"{results['n_examples']} examples (d={args.latent_dim}, D={args.data_dim}, s={args.noise})")
    print(f"{'estimator':<12} {'k / steps':>9} {'cost':>9} {'error':>9} {'mc s.e.':>8} {'seconds':>8}")
    for r in results["rows"]:
        size = r.get("k", r.get("n_steps"))
        print(f"{r['estimator']:<12} {size:>9} {r['cost']:>9} {r['error']:>+9.4f} "
              f"{r['mc_stderr']:>8.4f} {r['seconds']:>8.2f}")
    check(results, tolerance=0.15 if args.smoke else 0.05)
    print("checks passed: IWAE below and rising, BDMC brackets log p(x), AIS converges")
    return results


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/ais_ppca", help="folder for results.json and the figure")
    p.add_argument("--smoke", action="store_true", help="tiny settings that run in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latent-dim", type=int, default=3)
    p.add_argument("--data-dim", type=int, default=10)
    p.add_argument("--noise", type=float, default=0.5, help="observation noise s")
    p.add_argument("--n-examples", type=int, default=20)
    p.add_argument("--chains", type=int, default=64, help="AIS chains per example")
    p.add_argument("--leapfrog", type=int, default=5, help="leapfrog steps per HMC transition")
    p.add_argument("--iwae-k", type=int, nargs="+", default=[1, 10, 100, 1000])
    p.add_argument("--iwae-repeats", type=int, default=50, help="IWAE-k estimates averaged per example")
    p.add_argument("--ais-steps", type=int, nargs="+", default=[10, 100, 1000])
    args = p.parse_args(argv)
    if args.smoke:
        args.n_examples, args.chains = 4, 128
        args.iwae_k, args.ais_steps = [1, 10, 100], [10, 300]
    return args


if __name__ == "__main__":
    main(_parse())
