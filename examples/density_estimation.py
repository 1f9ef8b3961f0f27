"""Density estimation with Gaussian mixtures fitted by EM, in 1-D and 2-D, scored exactly.

What it shows:

* choosing the number of components with the Bayesian information criterion (BIC) on a
  1-D mixture (``bimodal1d``: 0.3 N(-2, 0.5^2) + 0.7 N(2, 0.5^2)) and on the ``ring8``
  mixture (8 Gaussians of sigma 0.01 on the unit circle);
* a mixture as an approximation to a density that is not a mixture (``banana``): more
  components, better test log-likelihood, never the truth;
* every fit scored on held-out data against the exact log-likelihood of the data-generating
  density, with figures: histograms and densities in 1-D, log-density contours in 2-D.

The known answers are checked at the end: BIC picks 2 components on ``bimodal1d`` and 8 on
``ring8``, and those fits come within 0.05 nats of the true test log-likelihood.

    python examples/density_estimation.py --out runs/density
    python examples/density_estimation.py --smoke --out /tmp/density
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from probgen.data import load_dataset
from probgen.models.gmm import GaussianMixture


def fit_by_bic(x: torch.Tensor, ks, *, covariance_type="full", n_init=2, seed=0):
    """Fit one mixture per K; return ``{K: (fitted mixture, BIC on x)}``."""
    fits = {}
    for k in ks:
        gm = GaussianMixture(k, covariance_type=covariance_type, n_init=n_init, max_iter=300,
                             random_state=seed).fit(x)
        fits[k] = (gm, gm.bic(x))
    return fits


def gap(gm: GaussianMixture, data) -> float:
    """True minus fitted mean test log-likelihood (nats per point; >= 0 up to noise)."""
    return float(data.density.log_prob(data.test).mean() - gm.log_prob(data.test).mean())


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_1d(data, fits, best_k, path: Path) -> Path:
    plt = _plt()
    x = data.test[:, 0]
    grid = torch.linspace(float(x.min()) - 1, float(x.max()) + 1, 600).unsqueeze(1)  # (600, 1)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(x.numpy(), bins=80, density=True, color="0.8", label="test data")
    ax.plot(grid[:, 0], data.density.log_prob(grid).exp(), "k--", lw=1.5, label="true density")
    for k, (gm, bic) in fits.items():
        style = dict(lw=2.5) if k == best_k else dict(lw=1, alpha=0.7)
        ax.plot(grid[:, 0], gm.log_prob(grid).exp(), **style, label=f"K={k} (BIC {bic:.0f})")
    ax.legend(fontsize=8)
    ax.set_title(f"{data.name}: mixtures by number of components (BIC picks K={best_k})")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def figure_2d(panels: list[tuple[str, object, object]], path: Path) -> Path:
    """Filled log-density contours, one panel per (title, log-density function, data)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, log_prob, data) in zip(axes[0], panels):
        pts = data.test
        lo, hi = pts.min(0).values - 0.5, pts.max(0).values + 0.5           # per axis
        xx, yy = torch.meshgrid(torch.linspace(float(lo[0]), float(hi[0]), 300),
                                torch.linspace(float(lo[1]), float(hi[1]), 300), indexing="xy")
        grid = torch.stack([xx.flatten(), yy.flatten()], 1)                 # (90000, 2)
        with torch.no_grad():
            lp = log_prob(grid).reshape(300, 300).double()
        top = float(lp.max())
        levels = torch.linspace(top - 12, top, 13).tolist()                 # 12 nats of range
        ax.contourf(xx, yy, lp.clamp_min(top - 12).numpy(), levels=levels, cmap="viridis")
        ax.scatter(pts[:400, 0], pts[:400, 1], s=1, c="w", alpha=0.5)
        ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    limit = 3000 if args.smoke else None
    results = {}

    # 1-D: BIC over K on a two-component mixture
    d1 = load_dataset("bimodal1d", seed=args.seed, limit=limit)
    fits1 = fit_by_bic(d1.train, range(1, 5), seed=args.seed)
    k1 = min(fits1, key=lambda k: fits1[k][1])
    results["bimodal1d"] = {"bic": {k: b for k, (_, b) in fits1.items()}, "chosen_k": k1,
                            "gap_nats": gap(fits1[k1][0], d1)}
    figure_1d(d1, fits1, k1, out / "bimodal1d.png")

    # 2-D: BIC over K on ring8 (true K = 8)
    d2 = load_dataset("ring8", seed=args.seed, limit=limit)
    ks = (6, 8, 10) if args.smoke else (4, 6, 7, 8, 9, 10, 12)
    fits2 = fit_by_bic(d2.train, ks, seed=args.seed)
    k2 = min(fits2, key=lambda k: fits2[k][1])
    results["ring8"] = {"bic": {k: b for k, (_, b) in fits2.items()}, "chosen_k": k2,
                        "gap_nats": gap(fits2[k2][0], d2)}

    # 2-D: a density that no finite mixture equals
    d3 = load_dataset("banana", seed=args.seed, limit=limit)
    ks3 = (1, 4, 16) if args.smoke else (1, 2, 4, 8, 16, 32)
    fits3 = {k: GaussianMixture(k, n_init=2, random_state=args.seed, max_iter=300).fit(d3.train)
             for k in ks3}
    results["banana"] = {"gap_nats_by_k": {k: gap(gm, d3) for k, gm in fits3.items()}}
    kb = max(ks3)
    figure_2d([
        ("ring8: true log density", d2.density.log_prob, d2),
        (f"ring8: mixture, K={k2} by BIC", fits2[k2][0].log_prob, d2),
        ("banana: true log density", d3.density.log_prob, d3),
        (f"banana: mixture, K={kb}", fits3[kb].log_prob, d3),
    ], out / "contours_2d.png")

    for name, r in results.items():
        if "chosen_k" in r:
            print(f"{name:10s} BIC picks K={r['chosen_k']}; test log-likelihood "
                  f"{r['gap_nats']:.4f} nats below the truth")
        else:
            gaps = ", ".join(f"K={k}: {g:.3f}" for k, g in r["gap_nats_by_k"].items())
            print(f"{name:10s} nats below the truth by K: {gaps}")
    (out / "density_estimation.json").write_text(json.dumps(results, indent=2))

    # the known answers
    assert k1 == 2, f"BIC should pick the true 2 components on bimodal1d; picked {k1}"
    assert k2 == 8, f"BIC should pick the true 8 components on ring8; picked {k2}"
    for name in ("bimodal1d", "ring8"):
        assert abs(results[name]["gap_nats"]) < 0.05, f"{name}: {results[name]['gap_nats']:.4f}"
    g3 = results["banana"]["gap_nats_by_k"]
    assert g3[max(ks3)] < g3[1], "more components should approximate the banana better"
    print(f"checks passed; figures and numbers in {out}")
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="density-estimation", help="folder for figures and numbers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="fewer points and candidates (seconds)")
    main(p.parse_args())
