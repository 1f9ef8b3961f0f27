"""Peak memory of the likelihood evaluations on a trained VAE: IWAE-k and AIS, chunked.

Each measurement runs in a fresh Python process and reads that process's peak resident set
size (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at its end; tracemalloc does not see
torch's allocations). The child loads only the model (built from the run's config, weights
from its checkpoint, as ``probgen eval`` does) and the N test images it scores, which the
parent wrote beforehand; so its peak is the interpreter with torch, the model, the images, and
the evaluation's working memory. A child that loads the same and evaluates nothing gives the
floor, and the ``eval`` column is the peak above it.

What the table shows:

* IWAE-k (:func:`probgen.inference.bounds.iwae_bound`, all N images in one call): the
  examples are taken in blocks and the k samples in chunks of at most ``max_elements`` data
  values (default 2**23: 32 MiB of float32 per tensor of decoder output), so the peak does not
  grow with N once N * 784 exceeds that, while an unchunked evaluation would hold
  k * N * 784 float32 values per tensor (the ``unchunked`` column);
* AIS (:func:`probgen.inference.ais.ais`, default batching: as many examples per pass as keep
  chains x examples x 784 within the same 2**23 values): the same, with chains in the place of
  samples. AIS's memory does not depend on the number of steps, so a short schedule measures it.

    python benchmarks/eval_memory.py --run /work/runs/vae-mnist --data-root /work/shared/data/mnist
    python benchmarks/eval_memory.py --run RUN --iwae-n 10000 --bounds 262144 --ais-n ""
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss: KiB on Linux


def _vm_hwm_mib() -> float | None:
    """Peak RSS of this process's own address space (VmHWM), where /proc has it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def child(spec: dict) -> dict:
    """One measurement in this (fresh) process; returns the numbers as a dict."""
    if spec["what"] == "prepare":
        return prepare(spec)
    import types

    import torch

    from probgen.recipes import get_recipe
    from probgen.runs import Run

    torch.set_num_threads(spec["threads"])
    x = torch.load(spec["images"], weights_only=True)[: spec["n"]]  # (N, 1, 28, 28)
    run = Run.open(spec["run"], writer=False)
    # the recipe builds the network from config.json and the data's shape alone
    model = get_recipe(run.config["model"]).load(run, types.SimpleNamespace(shape=tuple(x.shape[1:])),
                                                 torch.device("cpu"))
    before = _peak_rss_mib()
    t0 = time.perf_counter()
    value = None
    if spec["what"] == "iwae":
        from probgen.inference.bounds import iwae_bound

        torch.manual_seed(0)
        value = float(iwae_bound(model, x, spec["k"], max_elements=spec["max_elements"]).total.mean())
    elif spec["what"] == "ais":
        from probgen.inference.ais import ais

        res = ais(model, x, n_steps=spec["steps"], n_chains=spec["chains"], n_leapfrog=spec["leapfrog"],
                  batch_size=spec.get("batch_size"), generator=torch.Generator().manual_seed(0))
        value = float(res.log_px.mean())
    return {"peak_mib": _peak_rss_mib(), "vm_hwm_mib": _vm_hwm_mib(), "before_eval_mib": before,
            "seconds": time.perf_counter() - t0, "mean_value": value}


def prepare(spec: dict) -> dict:
    """Write the first N test images (the fixed binarisation ``probgen eval`` scores) to a file.

    Runs in a child of its own: a parent that held torch and MNIST would pass its resident
    set to every child it forks, and Linux carries that high-water mark through exec into the
    child's ``ru_maxrss``.
    """
    import torch

    from probgen.inference.bounds import DEFAULT_MAX_ELEMENTS
    from probgen.runs import Run
    from probgen.training import load_run_data

    run = Run.open(spec["run"], writer=False)
    data = load_run_data(run.config, data_root=spec["data_root"])
    x = data.split("test")[: spec["n"]].clone()  # (N, 1, 28, 28)
    torch.save(x, spec["images"])
    return {"data_size": int(x[0].numel()), "n": int(x.shape[0]),
            "default_max_elements": DEFAULT_MAX_ELEMENTS}


def measure(spec: dict) -> dict:
    """Run :func:`child` (or :func:`prepare`) in a fresh interpreter and return its numbers."""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(args) -> list[dict]:
    iwae_n = [int(v) for v in args.iwae_n.split(",") if v]
    ais_n = [int(v) for v in args.ais_n.split(",") if v]
    n_max = max(iwae_n + ais_n + [1])
    tmp = Path(tempfile.mkdtemp(prefix="eval_memory_"))
    images = tmp / "test_images.pt"
    info = measure({"what": "prepare", "run": args.run, "data_root": args.data_root, "n": n_max,
                    "images": str(images)})
    d, default_max = info["data_size"], info["default_max_elements"]
    n_max = info["n"]
    iwae_n = [min(n, n_max) for n in iwae_n]
    ais_n = [min(n, n_max) for n in ais_n]
    base = {"run": args.run, "images": str(images), "threads": args.threads}

    plan = [("load only (floor)", {**base, "what": "none", "n": n_max}, None, None)]
    bounds = [default_max if v == "default" else int(v) for v in args.bounds.split(",") if v]
    for bound in bounds:
        for n in iwae_n:
            what = f"IWAE-{args.k}" + ("" if bound == default_max else f" max_elements={bound}")
            plan.append((what, {**base, "what": "iwae", "k": args.k, "n": n, "max_elements": bound},
                         bound, args.k * n * d))
    for n in ais_n:
        batch = max(1, default_max // (args.chains * d))
        plan.append((f"AIS C={args.chains} T={args.ais_steps} L={args.leapfrog}",
                     {**base, "what": "ais", "n": n, "chains": args.chains, "steps": args.ais_steps,
                      "leapfrog": args.leapfrog},
                     args.chains * min(batch, n) * d, args.chains * n * d))

    rows = []
    floor = None
    print(f"{'what':36s} {'k/C':>5s} {'N':>6s} {'peak RSS MiB':>12s} {'VmHWM MiB':>9s} {'eval MiB':>9s} "
          f"{'bound/tensor MiB':>16s} {'unchunked MiB':>14s} {'time s':>8s}  mean log p", flush=True)
    for what, spec, bound, naive in plan:
        r = measure(spec)
        if floor is None:
            floor = r["peak_mib"]
        row = {"what": what, "k_or_chains": spec.get("k", spec.get("chains")), "n": spec["n"],
               "peak_rss_mib": r["peak_mib"], "vm_hwm_mib": r["vm_hwm_mib"],
               "eval_mib": r["peak_mib"] - floor,
               "bound_mib": None if bound is None else bound * 4 / MIB,
               "unchunked_mib": None if naive is None else naive * 4 / MIB,
               "seconds": r["seconds"], "mean_value": r["mean_value"]}
        rows.append(row)

        def f(v, fmt):
            return format(v, fmt) if v is not None else "--"
        print(f"{what:36s} {f(row['k_or_chains'], '>5'):>5s} {row['n']:6d} {row['peak_rss_mib']:12.0f} "
              f"{f(row['vm_hwm_mib'], '9.0f'):>9s} "
              f"{row['eval_mib']:9.0f} {f(row['bound_mib'], '16.1f'):>16s} "
              f"{f(row['unchunked_mib'], '14.0f'):>14s} {row['seconds']:8.1f}  "
              f"{f(row['mean_value'], '.3f')}", flush=True)
    images.unlink()
    tmp.rmdir()
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="run folder of a trained VAE")
    p.add_argument("--data-root", default=None, help="folder with the run's data files")
    p.add_argument("--k", type=int, default=5000, help="IWAE samples")
    p.add_argument("--iwae-n", default="500,2000", help="comma-separated test-set sizes for IWAE")
    p.add_argument("--bounds", default="default,262144",
                   help="comma-separated max_elements for IWAE, each run on every size "
                        "('default': the library's 2**23)")
    p.add_argument("--ais-n", default="200,1000", help="comma-separated test-set sizes for AIS")
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--ais-steps", type=int, default=10)
    p.add_argument("--leapfrog", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child is not None:
        print(json.dumps(child(json.loads(a.child))))
    else:
        if a.run is None:
            p.error("--run DIR is required")
        main(a)
