"""probgen's EM against scikit-learn's ``GaussianMixture``, side by side in one process.

Both fit the same data from the same starting point (the same ``weights_init``,
``means_init`` and ``precisions_init``, so neither runs an initialisation) for the same
number of iterations (``tol=0``: every one of ``--iters`` iterations runs), with full and
with diagonal covariances. The runs are interleaved (scikit-learn, probgen, probgen,
scikit-learn, ...) and each time reported is the median over ``--repeats``, because the
machine may be shared. Both log-likelihoods are printed so that a speed-up that changes the
answer shows.

    python benchmarks/gmm_vs_sklearn.py                 # N=100,000, D=16, K=10, 50 iterations
    python benchmarks/gmm_vs_sklearn.py --n 20000 --repeats 1     # quick
    python benchmarks/gmm_vs_sklearn.py --dtype float32  # probgen in float32
    python benchmarks/gmm_vs_sklearn.py --threads 1      # one thread for both libraries

On a machine whose cores are shared with other busy processes, both libraries' thread
pools (torch's OpenMP, NumPy's OpenBLAS) can wait for descheduled threads at every
operation and run many times slower than on one thread; compare with ``--threads 1`` too.

The last line is ``RESULT ratio=<probgen time / scikit-learn time, both cases summed>
full_ratio=... diag_ratio=... probgen_ll=... sklearn_ll=...`` (the log-likelihoods are the
mean per point after fitting, full covariances).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch


def make_data(n: int, d: int, k: int, seed: int) -> np.ndarray:
    """``n`` points from a random ``k``-component mixture in ``d`` dimensions, (n, d)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, d))
    factors = rng.normal(scale=0.5, size=(k, d, d)) + np.eye(d)
    labels = rng.integers(k, size=n)
    z = rng.normal(size=(n, d))
    return centres[labels] + np.einsum("nd,nde->ne", z, factors[labels])


def starting_point(x: np.ndarray, k: int, covariance_type: str, seed: int) -> dict:
    """Uniform weights, ``k`` distinct data points as means, the data's precision."""
    rng = np.random.default_rng(seed + 1)
    means = x[rng.choice(len(x), size=k, replace=False)]
    if covariance_type == "full":
        precisions = np.repeat(np.linalg.inv(np.cov(x.T))[None], k, axis=0)
    else:
        precisions = np.repeat((1.0 / x.var(0))[None], k, axis=0)
    return {"weights_init": np.full(k, 1.0 / k), "means_init": means,
            "precisions_init": precisions}


def fit_sklearn(x, k, covariance_type, iters, init):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(k, covariance_type=covariance_type, tol=0.0, max_iter=iters, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        gm.fit(x)
        elapsed = time.perf_counter() - t0
    return elapsed, gm.score(x), gm.lower_bounds_


def fit_probgen(x, k, covariance_type, iters, init, dtype):
    from probgen.inference.em import ConvergenceWarning
    from probgen.models.gmm import GaussianMixture

    gm = GaussianMixture(k, covariance_type=covariance_type, tol=0.0, max_iter=iters,
                         dtype=dtype, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        gm.fit(x)
        elapsed = time.perf_counter() - t0
    return elapsed, gm.score(x), gm.lower_bounds_


def main(args) -> dict:
    if args.threads:  # the same thread count for torch and for NumPy's BLAS (scikit-learn)
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        with threadpool_limits(limits=args.threads):
            return _run(args)
    return _run(args)


def _run(args) -> dict:
    dtype = {"float64": torch.float64, "float32": torch.float32}[args.dtype]
    x = make_data(args.n, args.d, args.k, args.seed)
    from threadpoolctl import threadpool_info

    blas = ",".join(f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info())
    print(f"N={args.n} D={args.d} K={args.k} iterations={args.iters} repeats={args.repeats} "
          f"probgen dtype={args.dtype} torch threads={torch.get_num_threads()} "
          f"thread pools={blas}")
    out = {}
    for ct in ("full", "diag"):
        init = starting_point(x, args.k, ct, args.seed)
        times = {"sklearn": [], "probgen": []}
        ll = {}
        lbs = {}
        for rep in range(args.repeats):
            order = ("sklearn", "probgen") if rep % 2 == 0 else ("probgen", "sklearn")
            for who in order:
                if who == "sklearn":
                    t, s, lb = fit_sklearn(x, args.k, ct, args.iters, init)
                else:
                    t, s, lb = fit_probgen(x, args.k, ct, args.iters, init, dtype)
                times[who].append(t)
                ll[who], lbs[who] = s, lb
                print(f"  {ct} repeat {rep + 1}: {who} {t:.2f} s", flush=True)
        med = {who: statistics.median(v) for who, v in times.items()}
        path_gap = max(abs(a - b) for a, b in zip(lbs["probgen"], lbs["sklearn"]))
        out[ct] = {"time": med, "ll": ll, "path_gap": path_gap}
        print(f"{ct:5s} scikit-learn {med['sklearn']:7.3f} s  probgen {med['probgen']:7.3f} s  "
              f"ratio {med['probgen'] / med['sklearn']:.3f}  "
              f"(all times: sklearn {', '.join(f'{t:.2f}' for t in times['sklearn'])}; "
              f"probgen {', '.join(f'{t:.2f}' for t in times['probgen'])})")
        print(f"      log-likelihood per point: scikit-learn {ll['sklearn']:.8f}  probgen "
              f"{ll['probgen']:.8f}  (largest gap along the {len(lbs['probgen'])}-iteration "
              f"lower-bound path: {path_gap:.2e})")
    total = {who: sum(out[ct]["time"][who] for ct in out) for who in ("sklearn", "probgen")}
    ratio = total["probgen"] / total["sklearn"]
    full_r = out["full"]["time"]["probgen"] / out["full"]["time"]["sklearn"]
    diag_r = out["diag"]["time"]["probgen"] / out["diag"]["time"]["sklearn"]
    print(f"RESULT ratio={ratio:.3f} full_ratio={full_r:.3f} diag_ratio={diag_r:.3f} "
          f"probgen_ll={out['full']['ll']['probgen']:.8f} "
          f"sklearn_ll={out['full']['ll']['sklearn']:.8f} "
          f"diag_probgen_ll={out['diag']['ll']['probgen']:.8f} "
          f"diag_sklearn_ll={out['diag']['ll']['sklearn']:.8f}")
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="points (default 100,000)")
    p.add_argument("--d", type=int, default=16, help="features (default 16)")
    p.add_argument("--k", type=int, default=10, help="components (default 10)")
    p.add_argument("--iters", type=int, default=50, help="EM iterations (default 50)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="probgen's compute dtype (default float64)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both torch and NumPy's BLAS (default: each library's own)")
    p.add_argument("--seed", type=int, default=0)
    main(p.parse_args())
