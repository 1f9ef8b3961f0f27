"""Training throughput in one process against N processes (torchrun, gloo on the CPU).

Each configuration runs ``probgen train MODEL ... --nproc P`` as a fresh command with the
same global batch (``--batch-size`` is per process: ``B * P`` stays fixed) and the same
amount of training, and the throughput is read from the run's ``train.json`` (training time
only: start-up, data loading and figures excluded). Every process gets one torch thread
(``OMP_NUM_THREADS=1``), so P processes use P cores; the single process is also run with P
threads, which is the fair baseline on a shared machine. Configurations are interleaved
(1, P, 1x P threads, 1, P, ...) so that a busy machine slows them alike, and the medians are
compared.

    python benchmarks/distributed_throughput.py [--model vae|gan] [--nproc 2] [--repeats 3]

The last lines are ``RESULT model=... speedup=<examples/s with P processes / with one
process and one thread> vs_threads=<... / one process with P threads>``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {
    # model: (training flags, examples per run for a given global batch)
    "vae": lambda gb, p: (["--data", "mnist-5k", "--epochs", "3", "--batch-size", str(gb // p)],
                          3 * (3500 - 3500 % gb if p > 1 else 3500)),
    "gan": lambda gb, p: (["--data", "ring8", "--steps", "600", "--batch-size", str(gb // p),
                           "--log-every", "100", "--checkpoint-every", "600"], 600 * gb),
}


def run_once(model: str, nproc: int, threads: int, global_batch: int, out: Path) -> float:
    """Train once; return training examples per second."""
    flags, examples = SETTINGS[model](global_batch, nproc)
    cmd = [sys.executable, "-m", "probgen", "train", model, *flags, "--out", str(out),
           "--overwrite", "--no-figures", "--device", "cpu"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = json.loads((out / "train.json").read_text())["seconds"]
    return examples / seconds


def main(args) -> dict:
    configs = [("1 process, 1 thread", 1, 1), (f"{args.nproc} processes, 1 thread each", args.nproc, 1),
               (f"1 process, {args.nproc} threads", 1, args.nproc)]
    rates: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name, p, t in configs:
                r = run_once(args.model, p, t, args.global_batch, Path(tmp) / f"r{p}{t}")
                rates[name].append(r)
                print(f"repeat {rep}  {name:28s} {r:10.0f} examples/s", flush=True)
    med = {name: statistics.median(v) for name, v in rates.items()}
    base, multi, threaded = (med[name] for name, _, _ in configs)
    print(f"\nmedians over {args.repeats} repeats, global batch {args.global_batch}, model {args.model}:")
    for name, v in med.items():
        print(f"  {name:28s} {v:10.0f} examples/s")
    result = {"model": args.model, "nproc": args.nproc, "speedup": multi / base,
              "vs_threads": multi / threaded, "medians": med}
    print(f"RESULT model={args.model} nproc={args.nproc} speedup={multi / base:.3f} "
          f"vs_threads={multi / threaded:.3f} cpus={os.cpu_count()}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(SETTINGS), default="vae")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    main(parser.parse_args())
