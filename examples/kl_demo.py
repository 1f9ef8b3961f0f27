"""Forward vs reverse KL: fitting a Gaussian to a two-mode p covers both modes one way and
seeks one mode the other way.

q is fitted to each p of :mod:`probgen.kl_demo` twice: by forward KL(p||q), maximum likelihood
on samples of p (EM), and by reverse KL(q||p), Pyro SVI on p's log density. Both
divergences of both fits are estimated by Monte Carlo (and by quadrature in 1-D); the
figures land in ``--out``.

Known answers, checked at the end:

* the forward Gaussian fit of the 1-D p = 0.5 N(-2, 0.5^2) + 0.5 N(2, 0.5^2) matches p's
  moments, mean 0 and variance 4 + 0.25 = 4.25 (up to the sampling error of the moments);
* the reverse fit sits on one mode, where KL(q||p) = log 2 = 0.693;
* in 1-D and 2-D, KL(p||q) is smaller for the forward fit and KL(q||p) for the reverse one.

    python examples/kl_demo.py --out /tmp/kl [--smoke] [--seed 0]
"""

from __future__ import annotations

import math

from probgen.kl_demo import SETTINGS, run_kl_demo


def main(args) -> dict:
    result = run_kl_demo(args.out, seed=args.seed, smoke=args.smoke)
    print(f"{'problem':11s} {'fit':8s} {'KL(p||q)':>18s} {'KL(q||p)':>18s}")
    for name, fits in result["problems"].items():
        for which in ("forward", "reverse"):
            f = fits[which]
            print(f"{name:11s} {which:8s} {f['kl_p_q']:9.4f} ± {f['kl_p_q_stderr']:.4f} "
                  f"{f['kl_q_p']:9.4f} ± {f['kl_q_p_stderr']:.4f}")
    check(result, n_train=SETTINGS[bool(args.smoke)]["n_train"])
    print(f"checks passed; kl.json and figures in {args.out}")
    return result


def check(result: dict, *, n_train: int) -> None:
    """Raise SystemExit with the failing comparison when a known answer is missed."""
    problems = result["problems"]
    fwd = problems["1d"]["forward"]
    # sampling sd of the sample mean and variance of p: var 4.25, fourth central moment 22.1875
    se_mean, se_var = math.sqrt(4.25 / n_train), math.sqrt((22.1875 - 4.25**2) / n_train)
    failures = []
    if abs(fwd["locs"][0][0]) > 5 * se_mean:
        failures.append(f"1d forward mean {fwd['locs'][0][0]:.4f}, expected 0 ± {se_mean:.4f}")
    if abs(fwd["covariances"][0][0][0] - 4.25) > 5 * se_var:
        failures.append(f"1d forward variance {fwd['covariances'][0][0][0]:.4f}, "
                        f"expected 4.25 ± {se_var:.4f}")
    rev = problems["1d"]["reverse"]
    if abs(rev["kl_q_p"] - math.log(2)) > 0.05:
        failures.append(f"1d reverse KL(q||p) = {rev['kl_q_p']:.4f}, expected log 2 = 0.6931")
    for name in ("1d", "2d"):
        f, r = problems[name]["forward"], problems[name]["reverse"]
        if not f["kl_p_q"] < r["kl_p_q"]:
            failures.append(f"{name}: KL(p||q) forward {f['kl_p_q']:.4f} >= reverse {r['kl_p_q']:.4f}")
        if not r["kl_q_p"] < f["kl_q_p"]:
            failures.append(f"{name}: KL(q||p) reverse {r['kl_q_p']:.4f} >= forward {f['kl_q_p']:.4f}")
    if failures:
        raise SystemExit("known answers missed:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for kl.json and figures")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--smoke", action="store_true", help="tiny settings (seconds)")
    main(parser.parse_args())
