"""Annealed importance sampling beside IWAE-5000 on a trained VAE, and the BDMC sandwich.

What it shows, on a VAE trained with ``probgen train vae`` (loaded from its run folder the way
``probgen eval`` loads it, so the test images are the same fixed binarisation):

* on the first ``--n`` test images, the per-example mean of the forward AIS estimate of
  log p(x) (Neal, 2001, with HMC transitions as Wu et al., 2017) and of the importance-weighted
  bound IWAE-k (Burda et al., 2016) on the same images, with their paired difference: both are
  stochastic lower bounds, so AIS should agree with IWAE within the errors or lie above it;
* the bidirectional Monte Carlo sandwich (Grosse et al., 2015) on data simulated from the
  VAE itself (z ~ p(z), x ~ p(x|z)): forward AIS from the prior is a stochastic lower bound,
  reverse AIS started from the z that generated each x a stochastic upper bound, and their gap
  bounds the error of AIS on such data; IWAE-k on the same simulated data is printed beside.

Each estimate comes with the standard error of its mean over examples; the paired difference
has the standard error of the per-example differences. ``results.json`` holds every number
and the schedule. The checks at the end: mean AIS >= mean IWAE-k - 2 paired standard errors,
and mean BDMC lower <= mean upper + 2 standard errors of the gap.

With ``--smoke`` it trains a VAE with a 2-d latent space on the bundled 8x8 digits in
seconds, where IWAE with k = 20,000 is close to exact (the posterior is 2-d), and checks
also that AIS and that near-exact value agree within 0.15 nats, and that the near-exact value
lies inside the BDMC sandwich.

    python examples/ais_vae.py --run RUN_DIR --data-root DATA_ROOT \\
        --n 100 --chains 16 --steps 1000 --bdmc-n 0 --out /tmp/ais_vae_test
    python examples/ais_vae.py --run RUN_DIR --data-root DATA_ROOT \\
        --n 0 --bdmc-n 25 --chains 16 --steps 1000 --out /tmp/ais_vae_bdmc

    python examples/ais_vae.py --smoke --out /tmp/ais_vae_smoke

The first two are the full run's two parts as two processes, one per core (one torch thread
each, ``--threads``); on 2 cores shared with other work the first took 37 minutes, the
second 18.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch


def load_trained(run_dir: str, data_root: str | None):
    """The model and data set of a ``probgen train`` run, loaded as ``probgen eval`` does."""
    from probgen.recipes import get_recipe
    from probgen.runs import Run
    from probgen.training import load_run_data

    run = Run.open(run_dir, writer=False)
    data = load_run_data(run.config, device="cpu", data_root=data_root)
    model = get_recipe(run.config["model"]).load(run, data, torch.device("cpu"))
    model.eval()
    return model, data


def train_tiny(seed: int):
    """A VAE with a 2-d latent space on the bundled 8x8 digits (fixed binarisation), seconds."""
    import pyro

    from probgen.data import load_dataset
    from probgen.inference.svi import fit_svi
    from probgen.models.vae import VAE

    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    data = load_dataset("digits", binarize="fixed", seed=seed)
    vae = VAE(data.shape, 2, (64,), likelihood="bernoulli")
    fit_svi(vae.model, vae.guide, data, epochs=40, batch_size=100, lr=3e-3,
            model_kwargs={"num_data": data.train.shape[0]})
    vae.eval()
    return vae, data


def mean_se(v: torch.Tensor) -> tuple[float, float]:
    """Mean over examples and its standard error (sd / sqrt(N)); v (N,)."""
    v = v.double()
    return float(v.mean()), float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")


def iwae_per_example(model, x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """IWAE-k per example (N,), the model's own ``iwae_bound`` (chunked over the k samples)."""
    from probgen.inference.bounds import iwae_bound

    torch.manual_seed(seed)
    return iwae_bound(model, x, k).total.double()


def ais_per_example(model, x: torch.Tensor, args, generator, label: str):
    """Forward AIS over ``x`` in batches of ``args.batch_size`` examples, printing progress.

    Returns log p(x) estimates (N,), their per-example Monte Carlo standard errors (N,), and
    the mean acceptance rate and step-size range over all chains.
    """
    from probgen.inference.ais import ais

    parts, ses, acc, eps = [], [], [], []
    t0 = time.perf_counter()
    for start in range(0, x.shape[0], args.batch_size):
        xb = x[start:start + args.batch_size]
        r = ais(model, xb, n_steps=args.steps, n_chains=args.chains, n_leapfrog=args.leapfrog,
                step_size=args.step_size, generator=generator)
        parts.append(r.log_px.double())
        ses.append(r.stderr.double())
        acc.append(r.acceptance.double().mean().item())
        eps.append(r.step_size)
        done = torch.cat(parts)
        print(f"  {label}: {done.numel()}/{x.shape[0]} examples, mean {done.mean():.3f}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    eps = torch.cat(eps, dim=1)  # (steps + 1, N)
    return torch.cat(parts), torch.cat(ses), float(sum(acc) / len(acc)), eps


def compare_on_test(model, x: torch.Tensor, args) -> dict:
    """AIS and IWAE-k on the same test images, and their paired difference."""
    t = time.perf_counter()
    iw = iwae_per_example(model, x, args.k, args.seed)
    t_iwae = time.perf_counter() - t
    t = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    a, a_mc_se, acc, eps = ais_per_example(model, x, args, gen, "AIS on test images")
    t_ais = time.perf_counter() - t
    return {
        "n": int(x.shape[0]),
        "ais": mean_se(a), "iwae": mean_se(iw), "ais_minus_iwae": mean_se(a - iw),
        "ais_mean_mc_stderr": float(a_mc_se.mean()),
        "mean_acceptance": acc,
        "step_size_range": [float(eps.min()), float(eps.max())],
        "step_size_median": float(eps.median()),
        "seconds": {"iwae": t_iwae, "ais": t_ais},
        "per_example": {"ais": a.tolist(), "iwae": iw.tolist()},
    }


@torch.no_grad()
def simulate(model, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, z) from the model: z ~ N(0, I), x ~ Bernoulli(decode(z)); x (n, *shape), z (n, d)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.latent_dim, generator=g)
    x = torch.bernoulli(model.decode(z), generator=g)
    return x, z


def sandwich(model, args) -> dict:
    """BDMC on ``args.bdmc_n`` examples simulated from the model, and IWAE-k beside it."""
    from probgen.inference.ais import bdmc

    x, z = simulate(model, args.bdmc_n, args.seed + 1)
    gen = torch.Generator().manual_seed(args.seed + 2)
    lo, up, t0 = [], [], time.perf_counter()
    for start in range(0, x.shape[0], args.batch_size):
        sl = slice(start, start + args.batch_size)
        r = bdmc(model, x[sl], z[sl], n_steps=args.bdmc_steps, n_chains=args.chains,
                 n_leapfrog=args.leapfrog, step_size=args.step_size, generator=gen)
        lo.append(r.lower.log_px.double())
        up.append(r.upper.log_px.double())
        print(f"  BDMC: {sum(v.numel() for v in lo)}/{x.shape[0]} examples, lower "
              f"{torch.cat(lo).mean():.3f}, upper {torch.cat(up).mean():.3f}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    t_bdmc = time.perf_counter() - t0
    lower, upper = torch.cat(lo), torch.cat(up)
    t = time.perf_counter()
    iw = iwae_per_example(model, x, args.k, args.seed + 3)
    return {
        "n": int(x.shape[0]), "steps": args.bdmc_steps,
        "lower": mean_se(lower), "upper": mean_se(upper), "gap": mean_se(upper - lower),
        "iwae": mean_se(iw), "upper_minus_iwae": mean_se(upper - iw),
        "seconds": {"bdmc": t_bdmc, "iwae": time.perf_counter() - t},
        "per_example": {"lower": lower.tolist(), "upper": upper.tolist(), "iwae": iw.tolist()},
    }


def _fmt(pair) -> str:
    return f"{pair[0]:9.3f} ± {pair[1]:.3f}"


def report(res: dict, k: int) -> None:
    s = res["schedule"]
    print(f"AIS schedule: {s['steps']} sigmoid steps, {s['chains']} chains, {s['leapfrog']} "
          f"leapfrog steps per HMC transition, step size adapted in a pilot "
          f"(start {s['step_size_start']})")
    if "test" in res:
        t = res["test"]
        print(f"first {t['n']} test images (nats, mean ± standard error over examples):")
        print(f"  AIS            {_fmt(t['ais'])}   ({t['seconds']['ais']:.0f} s; mean acceptance "
              f"{t['mean_acceptance']:.2f}; step sizes {t['step_size_range'][0]:.3g}.."
              f"{t['step_size_range'][1]:.3g}, median {t['step_size_median']:.3g})")
        print(f"  IWAE-{k:<9d}{_fmt(t['iwae'])}   ({t['seconds']['iwae']:.0f} s)")
        print(f"  AIS - IWAE     {_fmt(t['ais_minus_iwae'])}   (paired)")
        if "near_exact" in t:
            print(f"  IWAE-20000     {_fmt(t['near_exact'])}   (near exact: 2-d latent space)")
    if "bdmc" in res:
        b = res["bdmc"]
        print(f"BDMC on {b['n']} images simulated from the model, {b['steps']} steps:")
        print(f"  lower (forward AIS)  {_fmt(b['lower'])}")
        print(f"  upper (reverse AIS)  {_fmt(b['upper'])}")
        print(f"  gap                  {_fmt(b['gap'])}   ({b['seconds']['bdmc']:.0f} s)")
        print(f"  IWAE-{k:<16d}{_fmt(b['iwae'])}")
        if "near_exact" in b:
            print(f"  IWAE-20000           {_fmt(b['near_exact'])}   (near exact: 2-d latent space)")


def check(res: dict, smoke: bool) -> None:
    """The known answers: AIS not below IWAE-k beyond its error; the sandwich holds."""
    failures = []
    if "test" in res:
        d, se = res["test"]["ais_minus_iwae"]
        if d < -2 * se:
            failures.append(f"AIS is below IWAE-k by {-d:.3f} nats, more than 2 paired standard "
                            f"errors ({se:.3f}): lengthen the schedule")
    if "bdmc" in res:
        g, se = res["bdmc"]["gap"]
        if g < -2 * se:
            failures.append(f"BDMC upper bound below the lower bound by {-g:.3f} nats (> 2 se {se:.3f})")
    if smoke and "test" in res:
        exact = res["test"]["near_exact"][0]
        a = res["test"]["ais"][0]
        if abs(a - exact) > 0.15:
            failures.append(f"AIS {a:.3f} is {abs(a - exact):.3f} nats from IWAE-20000 {exact:.3f} "
                            f"on a 2-d latent space (tolerance 0.15)")
    if smoke and "bdmc" in res:
        lo, up, ex = res["bdmc"]["lower"][0], res["bdmc"]["upper"][0], res["bdmc"]["near_exact"][0]
        if not lo - 0.1 <= ex <= up + 0.1:
            failures.append(f"IWAE-20000 {ex:.3f} lies outside the BDMC sandwich [{lo:.3f}, {up:.3f}]")
    if failures:
        raise SystemExit("check failed: " + "; ".join(failures))
    print("checks passed: AIS >= IWAE-k within 2 paired standard errors; BDMC lower <= upper"
          + ("; AIS and the BDMC sandwich agree with IWAE-20000 on a 2-d latent space" if smoke else ""))


def main(args) -> dict:
    torch.set_num_threads(args.threads)
    if args.smoke:
        model, data = train_tiny(args.seed)
    else:
        model, data = load_trained(args.run, args.data_root)
    res: dict = {"schedule": {"steps": args.steps, "chains": args.chains, "leapfrog": args.leapfrog,
                              "schedule": "sigmoid", "adapt": "pilot",
                              "step_size_start": args.step_size, "k": args.k}}
    if args.n > 0:
        x = data.split("test")[: args.n]
        res["test"] = compare_on_test(model, x, args)
        if args.smoke:
            res["test"]["near_exact"] = mean_se(iwae_per_example(model, x, 20_000, args.seed + 5))
    if args.bdmc_n > 0:
        res["bdmc"] = sandwich(model, args)
        if args.smoke:
            xs, _ = simulate(model, args.bdmc_n, args.seed + 1)
            res["bdmc"]["near_exact"] = mean_se(iwae_per_example(model, xs, 20_000, args.seed + 6))
    res["threads"] = args.threads
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    report(res, args.k)
    print(f"wrote {out / 'results.json'}")
    check(res, args.smoke)
    return res


def _parse(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="run folder of a trained VAE (probgen train vae)")
    p.add_argument("--data-root", default=None, help="folder with the run's data files")
    p.add_argument("--out", default="runs/ais_vae", help="folder for results.json")
    p.add_argument("--smoke", action="store_true",
                   help="train a 2-d-latent VAE on bundled digits and run tiny settings (seconds)")
    p.add_argument("--n", type=int, default=None, help="first N test images (default 100; smoke 20); 0 skips")
    p.add_argument("--chains", type=int, default=None, help="AIS chains per example (default 16; smoke 8)")
    p.add_argument("--steps", type=int, default=None, help="AIS transitions (default 1000; smoke 200)")
    p.add_argument("--leapfrog", type=int, default=None, help="leapfrog steps per HMC move (default 10; smoke 5)")
    p.add_argument("--step-size", type=float, default=0.05, help="initial leapfrog step size")
    p.add_argument("--k", type=int, default=None, help="IWAE samples (default 5000; smoke 1000)")
    p.add_argument("--bdmc-n", type=int, default=None,
                   help="simulated examples for the BDMC sandwich (default 25; smoke 20); 0 skips")
    p.add_argument("--bdmc-steps", type=int, default=None, help="BDMC transitions (default: --steps)")
    p.add_argument("--batch-size", type=int, default=25, help="examples per AIS pass")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    defaults = {"n": (100, 20), "chains": (16, 8), "steps": (1000, 200), "leapfrog": (10, 5),
                "k": (5000, 1000), "bdmc_n": (25, 20)}
    for name, (full, smoke) in defaults.items():
        if getattr(a, name) is None:
            setattr(a, name, smoke if a.smoke else full)
    a.bdmc_steps = a.bdmc_steps or a.steps
    if not a.smoke and a.run is None:
        p.error("--run DIR is required without --smoke")
    return a


if __name__ == "__main__":
    main(_parse())
