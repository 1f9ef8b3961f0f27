"""The ELBO, the importance-weighted bound IWAE-k and the exact log p(x), side by side.

Probabilistic PCA (Tipping & Bishop 1999) is a latent-variable model whose marginal
likelihood is known exactly, so the bounds of probgen.inference.bounds can be seen against
the truth. A PPCA is fitted in closed form to synthetic data, with a mean-field (diagonal)
guide q(z|x) that cannot equal the correlated exact posterior. The example prints, per
example averaged over the test points:

* the ELBO, whose gap to log p(x) is KL(q(z|x) || p(z|x)) -- also printed, in closed form;
* IWAE-k for growing k (Burda et al. 2016), which climbs from the ELBO towards log p(x);
* the exact log p(x).

It checks at the end that ELBO <= IWAE-k <= log p(x) within Monte Carlo error, that the
ELBO gap equals the closed-form KL, and that the largest k is within 0.05 nats of the truth.

    python examples/ppca_bounds.py --out runs/ppca_bounds
    python examples/ppca_bounds.py --smoke --out /tmp/ppca_bounds
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch


def synthetic(n: int, dim: int, latent: int, noise: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, latent, generator=g, dtype=torch.float64)
    mu = torch.randn(dim, generator=g, dtype=torch.float64)
    z = torch.randn(n, latent, generator=g, dtype=torch.float64)
    return z @ w.T + mu + noise * torch.randn(n, dim, generator=g, dtype=torch.float64)


def main(args) -> dict:
    from probgen.inference.bounds import elbo, iwae_bound
    from probgen.models.ppca import PPCA

    torch.manual_seed(args.seed)
    ks = [1, 10, 100, 1000] if args.smoke else [1, 10, 100, 1000, 5000]
    n_test = 100 if args.smoke else 1000
    x = synthetic(4000 + n_test, args.dim, args.latent_dim, args.noise, args.seed)  # (4000 + n, D)
    train, test = x[:4000], x[4000:]
    g = torch.Generator().manual_seed(args.seed + 1)
    rotation, _ = torch.linalg.qr(torch.randn(args.latent_dim, args.latent_dim, generator=g, dtype=torch.float64))
    model = PPCA(args.dim, args.latent_dim, guide="diagonal").double().fit(train, rotation=rotation)

    with torch.no_grad():
        exact = model.log_prob(test)
        kl = model.kl_to_posterior(test)
        e = elbo(model, test, num_samples=100)
        bounds = {k: iwae_bound(model, test, k) for k in ks}
    # Monte Carlo standard error of a mean gap: log p(x) is exact per example, so the spread
    # over examples of (bound - log p(x) + its exact part) is sampling error only
    se = lambda v: float(v.std() / math.sqrt(v.numel()))  # noqa: E731
    rows = [("ELBO (100 samples)", float(e.total.mean()), se(e.total - exact + kl))]
    for k, r in bounds.items():
        rows.append((f"IWAE-{k}", float(r.total.mean()), se(r.total - exact)))
    rows.append(("exact log p(x)", float(exact.mean()), 0.0))
    print(f"PPCA D={args.dim} L={args.latent_dim}, mean-field guide, {n_test} test points (nats per example)")
    print(f"{'':22s} {'mean':>10s} {'MC s.e.':>9s} {'gap to log p(x)':>16s}")
    for name, v, mc in rows:
        print(f"{name:22s} {v:10.4f} {mc:9.4f} {v - float(exact.mean()):16.4f}")
    print(f"closed-form KL(q(z|x) || p(z|x)): {float(kl.mean()):.4f}  (the ELBO's gap)")
    print(f"(log p(x) itself varies over the test points with s.e. {se(exact):.3f}; the MC s.e. "
          "column is the sampling error of each bound's gap)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"rows": [{"name": n, "mean": v, "mc_stderr": mc} for n, v, mc in rows],
              "kl_to_posterior": float(kl.mean()), "log_px": float(exact.mean())}
    (out / "bounds.json").write_text(json.dumps(result, indent=2) + "\n")
    _figure(ks, bounds, e, exact, out / "bounds_vs_k.png")

    # the checks: every number below comes from an estimator, the truth from closed forms
    lp = float(exact.mean())
    tol = lambda mc: 4 * mc + 1e-3  # noqa: E731
    assert float(e.total.mean()) <= lp + tol(rows[0][2]), "the ELBO is above log p(x)"
    for (name, v, mc), (_, v_next, mc_next) in zip(rows[1:-2], rows[2:-1]):
        assert v <= v_next + tol(mc + mc_next), f"{name} is above the next larger k"
        assert v <= lp + tol(mc), f"{name} is above log p(x)"
    gap = float((e.total - exact).mean())
    assert abs(gap + float(kl.mean())) < tol(rows[0][2]), f"ELBO gap {gap:.4f} != -KL {-float(kl.mean()):.4f}"
    assert abs(rows[-2][1] - lp) < 0.05, f"{rows[-2][0]} is {rows[-2][1] - lp:.4f} nats from log p(x)"
    print("checks passed: ELBO <= IWAE-k (non-decreasing in k) <= log p(x); ELBO gap = -KL; "
          f"{rows[-2][0]} within 0.05 nats")
    return result


def _figure(ks, bounds, e, exact, path) -> None:
    from probgen.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(ks, [float(bounds[k].total.mean()) for k in ks], "o-", label="IWAE-k")
    ax.axhline(float(exact.mean()), color="k", lw=1, label="exact log p(x)")
    ax.axhline(float(e.total.mean()), color="C3", ls="--", lw=1, label="ELBO")
    ax.set_xscale("log")
    ax.set_xlabel("importance samples k")
    ax.set_ylabel("nats per example")
    ax.legend()
    ax.set_title("bounds on log p(x), PPCA with a mean-field guide")
    save_figure(fig, path)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/ppca_bounds", help="folder for bounds.json and the figure")
    p.add_argument("--smoke", action="store_true", help="small settings (seconds)")
    p.add_argument("--dim", type=int, default=10, help="data dimension D (default 10)")
    p.add_argument("--latent-dim", type=int, default=3, help="latent dimension L (default 3)")
    p.add_argument("--noise", type=float, default=0.3, help="noise standard deviation s of the data")
    p.add_argument("--seed", type=int, default=0)
    main(p.parse_args())
