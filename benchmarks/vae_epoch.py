"""One full MNIST epoch of `probgen train vae` against the same epoch written in plain PyTorch.

The probgen side runs the recipe behind ``probgen train vae`` (``probgen.recipes.vae.train``
into a fresh run folder: the Pyro model/guide on ``Trace_ELBO``, the NaN guard, the seeded
epoch order and dynamic binarisation, the validation ELBO, the metrics line and the
checkpoint) for one epoch. The reference builds the same networks (784-400-50 MLP encoder
and decoder, Softplus, from ``probgen.models.nets``), draws a permutation and fresh 0/1
pixels for every batch of 100 (``rand < p``, as probgen does: the draws of
``torch.bernoulli``, at about its cost on MNIST), takes single-sample ELBO steps with fused
Adam 1e-3 and scores the same validation ELBO (one sample per example, batches of 1000).
Data loading is outside both; model construction is inside both.

The two alternate (probgen, plain, probgen, plain, ...) in one process so that a busy
machine slows both alike; the first round is a warm-up and is not counted, and the medians are compared: of wall time (``ratio``) and of this process's CPU
time (``cpu_ratio``, less sensitive to other jobs on a shared machine).

    python benchmarks/vae_epoch.py --data-root /work/shared/data/mnist [--repeats 5] [--threads N]

The last line is ``RESULT ratio=<probgen epoch / plain PyTorch epoch> ...``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch


def plain_epoch(data, *, seed: int, batch_size: int = 100, lr: float = 1e-3) -> float:
    """One epoch of the VAE in plain PyTorch plus its validation ELBO; returns the latter."""
    from probgen.models.nets import MLPDecoder, MLPEncoder

    torch.manual_seed(seed)
    shape = data.shape
    enc, dec = MLPEncoder(shape, 50, (400,)), MLPDecoder(shape, 50, (400,))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=lr, fused=True)
    x_train = data.train
    n = x_train.shape[0]
    gen = torch.Generator().manual_seed(seed + 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    log2pi = math.log(2 * math.pi)

    def elbo(x, enc, dec):  # (B,) single-sample ELBO per example
        loc, scale = enc(x)  # (B, L)
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        logits = dec(z)  # (B, 1, 28, 28)
        log_px = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, x, reduction="none").flatten(1).sum(1)
        log_pz = -0.5 * (z.pow(2) + log2pi).sum(1)
        log_qz = (-0.5 * (eps.pow(2) + log2pi) - scale.log()).sum(1)
        return log_px + log_pz - log_qz

    for start in range(0, n, batch_size):
        p = x_train[order[start:start + batch_size]]
        xb = torch.rand(p.shape, generator=gen).lt_(p)  # Bernoulli(p) pixels
        loss = -elbo(xb, enc, dec).sum() * (n / xb.shape[0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    total = 0.0
    with torch.no_grad():
        for start in range(0, data.val.shape[0], 1000):
            total += float(elbo(data.val[start:start + 1000], enc, dec).sum())
    return total / max(1, data.val.shape[0])


def probgen_epoch(data, folder: Path, *, seed: int, batch_size: int = 100, lr: float = 1e-3) -> float:
    """One epoch of `probgen train vae` (the recipe, into a fresh run folder); returns the
    validation ELBO it logged."""
    from probgen.recipes import vae as recipe
    from probgen.runs import Run, StopControl, seed_everything

    config = {"model": "vae", "data": "mnist", "seed": seed, "epochs": 1, "latent_dim": 50,
              "hidden": [400], "arch": "mlp", "likelihood": "bernoulli", "batch_size": batch_size,
              "lr": lr, "lr_schedule": "constant", "loss": "trace", "num_particles": 1,
              "on_nan": "skip"}
    run = Run.create(folder, config, overwrite=True)
    seed_everything(seed)
    # a StopControl that is not entered: no time budget, and no signal handlers, so that
    # SIGTERM (from `timeout`, say) ends the benchmark instead of only the epoch
    run.stop = StopControl(None)
    recipe.train(run, data, run.config, torch.device("cpu"))
    return float(run.metrics()[-1]["val_elbo"])


def main(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    from probgen.data import load_dataset

    t = time.perf_counter()
    data = load_dataset("mnist", root=args.data_root, binarize="dynamic")
    if args.limit:
        data.train = data.train[: args.limit]
    print(f"MNIST: {data.train.shape[0]} training, {data.val.shape[0]} validation examples "
          f"(loaded in {time.perf_counter() - t:.1f} s); batch {args.batch_size}, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    names = ("probgen", "plain")
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats + 1):
            runs = {
                "probgen": lambda rep=rep: probgen_epoch(data, Path(tmp) / "run", seed=rep,
                                                 batch_size=args.batch_size),
                "plain": lambda rep=rep: plain_epoch(data, seed=rep, batch_size=args.batch_size),
            }
            vals, line = {}, []
            for name, fn in runs.items():
                t, c = time.perf_counter(), time.process_time()
                vals[name] = fn()
                w, c = time.perf_counter() - t, time.process_time() - c
                line.append(f"{name} {w:6.2f} s wall {c:6.2f} s CPU")
                if rep > 0:
                    wall[name].append(w)
                    cpu[name].append(c)
            tag = "warm-up" if rep == 0 else f"repeat {rep}"
            print(f"{tag:9s}  " + "   ".join(line) + f"   (val ELBO probgen {vals['probgen']:.2f}, "
                  f"plain {vals['plain']:.2f})", flush=True)
    med = {k: statistics.median(v) for k, v in wall.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    ratios = sorted(p / q for p, q in zip(wall["probgen"], wall["plain"], strict=True))
    cratios = sorted(p / q for p, q in zip(cpu["probgen"], cpu["plain"], strict=True))
    print(f"median epoch, wall: probgen {med['probgen']:.2f} s, plain PyTorch {med['plain']:.2f} s; "
          f"per-pair ratios {', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"median epoch, CPU time of this process: probgen {cmed['probgen']:.2f} s, plain PyTorch "
          f"{cmed['plain']:.2f} s; per-pair ratios {', '.join(f'{r:.3f}' for r in cratios)}")
    print(f"RESULT ratio={med['probgen'] / med['plain']:.3f} probgen_s={med['probgen']:.2f} "
          f"plain_s={med['plain']:.2f} cpu_ratio={cmed['probgen'] / cmed['plain']:.3f} "
          f"repeats={args.repeats} batch={args.batch_size} threads={torch.get_num_threads()}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=None, help="folder with the MNIST files")
    p.add_argument("--repeats", type=int, default=5, help="timed epochs of each (default 5)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N training images")
    main(p.parse_args())
