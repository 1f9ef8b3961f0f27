"""The command line shared by the program examples: train the program with probgen.train,
score it with probgen.evaluate, print ELBO, IWAE-k and AIS with their standard errors."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(program, *, name: str, data: str = "mnist-5k", epochs: int = 30, argv=None) -> dict:
    import probgen

    p = argparse.ArgumentParser(description=f"train and score {name}")
    p.add_argument("--data", default=data, help=f"data set (default {data})")
    p.add_argument("--epochs", type=int, default=epochs, help=f"passes over the data (default {epochs})")
    p.add_argument("--k", type=int, default=1000, help="importance samples of IWAE-k (default 1000)")
    p.add_argument("--ais-steps", type=int, default=200, help="AIS transitions (default 200)")
    p.add_argument("--eval-limit", type=int, default=1000, help="test examples scored (default 1000)")
    p.add_argument("--out", default=f"runs/{name}", help="folder of the run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny settings (seconds)")
    a = p.parse_args(argv)
    if a.smoke:
        a.data, a.epochs, a.k, a.ais_steps, a.eval_limit = "mnist-5k", 1, 20, 10, 20
    run_dir = Path(a.out) / name
    trained = probgen.train(program, a.data, run_dir, epochs=a.epochs, seed=a.seed, overwrite=True,
                            limit=300 if a.smoke else None, figures=not a.smoke)
    result = probgen.evaluate(run_dir, k=a.k, ais=True, ais_steps=a.ais_steps, limit=a.eval_limit,
                              seed=a.seed)
    metrics = result["metrics"]
    print(f"{name} on {a.data}, {result['n']} test examples (nats per example):")
    for key in ("elbo", "iwae", "ais"):
        m = metrics.get(key) or {}
        if m.get("value") is None:
            print(f"  {key:12s} -- ({m.get('reason', 'not computed')})")
        else:
            print(f"  {key:12s} {m['value']:10.3f} ± {m['stderr']:.3f}")
    elbo, iwae = (metrics.get(k, {}).get("value") for k in ("elbo", "iwae"))
    if elbo is not None and iwae is not None:
        se = (metrics["elbo"]["stderr"] ** 2 + metrics["iwae"]["stderr"] ** 2) ** 0.5
        assert elbo <= iwae + 3 * se, f"ELBO {elbo:.3f} above IWAE-{a.k} {iwae:.3f}"
    print(f"run folder: {trained.run.path}  (also: probgen eval {trained.run.path}; "
          f"probgen compare --models vae,{Path(trained.config['program']['file'])}:{name})")
    return result
