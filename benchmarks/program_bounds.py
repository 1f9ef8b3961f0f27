"""IWAE-k of the MNIST VAE through its Pyro traces against the latent-variable protocol path.

Both compute the same bound with the same weights, the same k and the same memory bound
(``probgen.inference.bounds.chunk_plan``): the protocol path,
``probgen.inference.bounds.iwae_bound(vae, x, k)``, calls the VAE's encoder, decoder and
likelihood directly; the trace path, ``probgen.inference.program_bounds.program_iwae_bound``,
runs ``vae.guide`` and ``vae.model`` under Pyro's handlers with the particles in an outer
plate, knowing nothing of the VAE but its program. The VAE (784-400-50 MLP, Bernoulli
pixels) is trained briefly here on MNIST binarised once (``binarize="fixed"``) so that its
posterior is not the prior. The runs are interleaved in one process in small units (one
group of ``--group`` images by one method, the methods in rotating order) and the median
over units of the time ratio is reported; the two estimates are printed with their Monte
Carlo standard errors to show that they agree (with the same seed they draw the same
particles, so they agree to rounding).

    python benchmarks/program_bounds.py [--n 50] [--k 5000] [--repeats 3] [--group 10]
        [--train-steps 300] [--data-root /work/shared/data/mnist] [--threads 1]

The last line is ``RESULT ratio=<median of trace / protocol time> ...`` (k-hat off, the same
computation on both sides); ``khat_ratio`` is the default trace path, which also fits the
Pareto k-hat of each example's k weights.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def train_vae(data, steps: int, seed: int = 0):
    """A 784-400-50 Bernoulli VAE after ``steps`` SVI steps of batch 100 on the training set."""
    import pyro

    from probgen.inference.svi import fit_svi
    from probgen.models.vae import VAE

    pyro.clear_param_store()
    torch.manual_seed(seed)
    vae = VAE(data.shape, 50, (400,))
    if steps > 0:
        fit_svi(vae.model, vae.guide, data.train, steps=steps, batch_size=100,
                model_kwargs={"num_data": data.train.shape[0]})
    return vae.eval()


def main(args) -> None:
    import pyro

    from probgen.data import load_dataset
    from probgen.inference.bounds import iwae_bound
    from probgen.inference.program_bounds import as_program, program_iwae_bound

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("mnist", root=args.data_root, binarize="fixed")
    t0 = time.perf_counter()
    vae = train_vae(data, args.train_steps)
    print(f"trained the VAE for {args.train_steps} steps in {time.perf_counter() - t0:.1f} s")
    x = data.test[:args.n]
    program = as_program((vae.model, vae.guide))
    program.structure(x)  # the one-off probe of the program's sites, outside the timings

    groups = [x[i:i + args.group] for i in range(0, x.shape[0], args.group)]
    runs = {
        "protocol": lambda xg: iwae_bound(vae, xg, args.k),
        "trace": lambda xg: program_iwae_bound(program, xg, args.k, khat=False),
        "trace_khat": lambda xg: program_iwae_bound(program, xg, args.k, khat=True),
    }
    names = list(runs)
    # Small units (one group of images, one method) in rotating order, so that the bursts of
    # other work on a shared machine fall on every method alike; the ratio is the median over
    # units of trace / protocol on the same images with the same seed.
    times = {name: [] for name in runs}
    ratios = {name: [] for name in runs}
    parts = {name: [] for name in runs}
    unit = 0
    for r in range(args.repeats + 1):  # the first round warms up and is not timed
        for g, xg in enumerate(groups):
            t_unit = {}
            order = names[unit % len(names):] + names[:unit % len(names)]
            unit += 1
            for name in order:
                pyro.set_rng_seed(100 + 1000 * r + g)
                t = time.perf_counter()
                rec = runs[name](xg)
                t_unit[name] = time.perf_counter() - t
                if r == args.repeats:
                    parts[name].append(rec)
            if r > 0:
                for name in names:
                    times[name].append(t_unit[name])
                    ratios[name].append(t_unit[name] / t_unit["protocol"])
    last = {name: _cat(recs) for name, recs in parts.items()}
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, rec in last.items():
        se = float(rec.mc_stderr.pow(2).mean().sqrt())
        print(f"{name:11s} median {med[name]:6.2f} s per {args.group} images, median ratio to "
              f"protocol {statistics.median(ratios[name]):.3f}; IWAE-{args.k} mean "
              f"{float(rec.total.mean()):9.3f} nats (per-example MC se ~{se:.3f})")
    diff = (last["trace"].total - last["protocol"].total).double()
    se = (last["trace"].mc_stderr.pow(2) + last["protocol"].mc_stderr.pow(2)).sqrt().double()
    print(f"trace - protocol per example: mean {float(diff.mean()):+.4f} nats, "
          f"max |diff| / se {float((diff.abs() / se).max()):.2f}")
    kh = last["trace_khat"].khat
    print(f"k-hat: median {float(kh.median()):.3f}, max {float(kh.max()):.3f}, "
          f"{int((kh > 0.7).sum())} of {kh.numel()} above 0.7")
    ratio = statistics.median(ratios["trace"])
    print(f"RESULT ratio={ratio:.3f} khat_ratio={statistics.median(ratios['trace_khat']):.3f} "
          f"trace_s={med['trace']:.2f} protocol_s={med['protocol']:.2f} units={len(times['trace'])} "
          f"group={args.group} n={x.shape[0]} k={args.k} repeats={args.repeats} "
          f"threads={torch.get_num_threads()}")


def _cat(records):
    """One record over the groups: total, mc_stderr and khat concatenated."""
    from dataclasses import replace

    khat = [getattr(r, "khat", None) for r in records]
    return replace(records[0], total=torch.cat([r.total for r in records]),
                   mc_stderr=torch.cat([r.mc_stderr for r in records]),
                   **({"khat": torch.cat(khat)} if all(k is not None for k in khat) else {}))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50, help="test images scored (default 50)")
    p.add_argument("--k", type=int, default=5000, help="importance samples (default 5000)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up (default 3)")
    p.add_argument("--group", type=int, default=10,
                   help="images per timed unit (default 10); the units rotate between the methods")
    p.add_argument("--train-steps", type=int, default=300,
                   help="SVI steps of batch 100 before scoring (default 300)")
    p.add_argument("--data-root", default="/work/shared/data/mnist", help="folder with the MNIST files")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    main(p.parse_args())
