"""One SVI step of probgen's VAE against the same ELBO step written in plain PyTorch.

Both use the same networks (784-400-50 MLP encoder and decoder, Softplus, from
``probgen.models.nets``), the same single-sample ELBO estimator (log p(x|z) + log p(z) -
log q(z|x) at one reparametrised z), Bernoulli pixels, batch 256 and Adam 1e-3. The steps
are interleaved in one process (A, B, C, A, B, C, ...) so that a busy machine slows all of
them alike, and the median time of each is compared.

    python benchmarks/vae_step.py [--steps 200] [--batch-size 256] [--threads N]
    python benchmarks/vae_step.py --epoch --data-root /work/shared/data/mnist
    python benchmarks/vae_step.py --device cuda [--amp]

The last line is ``RESULT ratio=<probgen step / plain PyTorch step> ...``. Pyro's stock
``SVI(model, guide, pyro.optim.Adam, Trace_ELBO())`` is timed alongside for context.
With ``--epoch`` it also times one full training epoch on MNIST (data included) and the
IWAE-5000 evaluation on the test set (``--eval-limit`` examples). ``--device cuda`` runs all
of it on the GPU (synchronising before every clock reading); ``--amp`` runs the networks of
every side under bfloat16 autocast (probgen's VAE through its ``autocast_dtype``, the plain
steps inside ``torch.autocast``), the likelihoods in float32.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()


def _plain_step(enc, dec, opt, x, num_data, amp=False):
    """The ELBO of the VAE, written by hand: the reference."""
    n = x.shape[0]
    with _autocast(x.device, amp):
        loc, scale = enc(x)  # (N, L)
    loc, scale = loc.float(), scale.float()
    eps = torch.randn_like(loc)
    z = loc + scale * eps
    with _autocast(x.device, amp):
        logits = dec(z).float()  # (N, 1, 28, 28)
    log_px = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits, x, reduction="none").flatten(1).sum(1)  # (N,)
    log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
    log_qz = (-0.5 * (eps.pow(2) + math.log(2 * math.pi)) - scale.log()).sum(1)
    loss = -(log_px + log_pz - log_qz).sum() * (num_data / n)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def time_steps(steps: int, batch_size: int, seed: int = 0, warmup: int = 10,
               validate: str = "first", device: str = "cpu", amp: bool = False) -> dict:
    """Median step times of plain PyTorch, probgen's fit_svi loop and Pyro's stock SVI.

    probgen's loop runs for real (``fit_svi`` over a data tensor); after each of its steps
    its ``step_callback`` times one plain-PyTorch step and one stock-SVI step on a batch
    indexed out of the same tensor, so the three alternate step by step.
    """
    import pyro
    from pyro.infer import SVI, Trace_ELBO

    from probgen.inference.svi import fit_svi
    from probgen.models.nets import MLPDecoder, MLPEncoder
    from probgen.models.vae import VAE

    torch.manual_seed(seed)
    pyro.clear_param_store()
    device = torch.device(device)
    shape, num_data = (1, 28, 28), 60_000
    x_all = torch.bernoulli(torch.rand(32 * batch_size, *shape) * 0.4).to(device)  # (32 B, 1, 28, 28)

    # plain PyTorch with the optimiser probgen uses by default (fused Adam), and with the
    # default torch.optim.Adam (a per-tensor loop on CPU) for context
    enc, dec = MLPEncoder(shape, 50, (400,)).to(device), MLPDecoder(shape, 50, (400,)).to(device)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3, fused=True)
    enc2, dec2 = MLPEncoder(shape, 50, (400,)).to(device), MLPDecoder(shape, 50, (400,)).to(device)
    opt2 = torch.optim.Adam([*enc2.parameters(), *dec2.parameters()], lr=1e-3)
    stock = VAE(shape, 50, (400,), param_prefix="stock_").to(device)
    stock_svi = SVI(stock.model, stock.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    vae = VAE(shape, 50, (400,)).to(device)
    if amp:
        stock.autocast_dtype = vae.autocast_dtype = torch.bfloat16

    times = {"plain": [], "probgen": [], "pyro_svi": [], "plain_unfused": []}
    last = [None]

    def interleave(step, loss):
        _sync(device)
        now = time.perf_counter()
        if last[0] is not None and step > warmup:
            times["probgen"].append(now - last[0])
        idx = torch.randint(0, x_all.shape[0], (batch_size,), device=device)
        _sync(device)
        t = time.perf_counter()
        _plain_step(enc, dec, opt, x_all[idx], num_data, amp)
        _sync(device)
        t2 = time.perf_counter()
        stock_svi.step(x_all[idx], num_data=num_data)
        _sync(device)
        t3 = time.perf_counter()
        _plain_step(enc2, dec2, opt2, x_all[idx], num_data, amp)
        _sync(device)
        t4 = time.perf_counter()
        if step > warmup:
            times["plain"].append(t2 - t)
            times["pyro_svi"].append(t3 - t2)
            times["plain_unfused"].append(t4 - t3)
        last[0] = time.perf_counter()

    fit_svi(vae.model, vae.guide, x_all, steps=steps + warmup + 1, batch_size=batch_size,
            model_kwargs={"num_data": num_data}, step_callback=interleave, validate=validate)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"median_s": med, "images_per_s": {k: batch_size / v for k, v in med.items()}}


def time_epoch(data_root, eval_limit: int, k: int, device: str = "cpu", amp: bool = False) -> dict:
    """One epoch of `probgen train vae` work on full MNIST and the IWAE-k test evaluation."""
    import pyro

    from probgen.data import load_dataset
    from probgen.inference.svi import fit_svi
    from probgen.models.vae import VAE

    pyro.clear_param_store()
    t0 = time.perf_counter()
    data = load_dataset("mnist", root=data_root, binarize="dynamic", device=device)
    t_load = time.perf_counter() - t0
    vae = VAE(data.shape, 50, (400,)).to(device)
    vae.autocast_dtype = torch.bfloat16 if amp else None
    n = data.train.shape[0]
    res = fit_svi(vae.model, vae.guide, data, epochs=1, batch_size=100,
                  model_kwargs={"num_data": n})
    _sync(torch.device(device))
    t_epoch = res.time_s
    vae.autocast_dtype = None
    x = data.test[:eval_limit]
    t = time.perf_counter()
    with torch.no_grad():
        vals = torch.cat([vae.iwae_bound(x[i:i + 10], k).total for i in range(0, x.shape[0], 10)])
    _sync(torch.device(device))
    t_eval = time.perf_counter() - t
    return {"load_s": t_load, "epoch_s": t_epoch, "eval_s": t_eval, "eval_n": x.shape[0],
            "iwae": float(vals.mean()), "k": k}


def main(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.amp and args.device == "cpu":
        print("note: --amp on the CPU runs bfloat16 autocast there too (meant for CUDA)")
    r = time_steps(args.steps, args.batch_size, validate=args.validate, device=args.device,
                   amp=args.amp)
    med, ips = r["median_s"], r["images_per_s"]
    labels = {
        "plain": "plain PyTorch, fused Adam",
        "probgen": "probgen fit_svi (Trace_ELBO, fused Adam)",
        "pyro_svi": "Pyro SVI(Trace_ELBO, pyro.optim.Adam)",
        "plain_unfused": "plain PyTorch, default torch.optim.Adam",
    }
    for k in med:
        print(f"{labels[k]:42s} median step {med[k] * 1e3:7.2f} ms  {ips[k]:8.0f} images/s")
    stock = med["pyro_svi"] / med["plain"]
    print(f"Pyro SVI / plain (fused): {stock:.3f}   Pyro SVI / plain (default Adam): "
          f"{med['pyro_svi'] / med['plain_unfused']:.3f}   probgen / plain (default Adam): "
          f"{med['probgen'] / med['plain_unfused']:.3f}")
    if args.epoch:
        e = time_epoch(args.data_root, args.eval_limit, args.k, device=args.device, amp=args.amp)
        print(f"full MNIST: load {e['load_s']:.1f} s, one epoch {e['epoch_s']:.1f} s (batch 100), "
              f"IWAE-{e['k']} on {e['eval_n']} test images {e['eval_s']:.1f} s "
              f"(bound {e['iwae']:.2f} after one epoch)")
    ratio = med["probgen"] / med["plain"]
    print(f"RESULT ratio={ratio:.3f} probgen_ms={med['probgen'] * 1e3:.2f} "
          f"plain_ms={med['plain'] * 1e3:.2f} pyro_svi_ratio={stock:.3f} batch={args.batch_size} "
          f"threads={torch.get_num_threads()} validate={args.validate} "
          f"device={torch.device(args.device).type} amp={int(args.amp)}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="timed steps of each (default 200)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--validate", choices=["first", "always"], default="first",
                   help="fit_svi's validate option: Pyro validation on the first step only "
                   "(default) or on every step")
    p.add_argument("--epoch", action="store_true", help="also time a full MNIST epoch and IWAE eval")
    p.add_argument("--data-root", default=None, help="folder with the MNIST files")
    p.add_argument("--eval-limit", type=int, default=1000, help="test images for the IWAE timing")
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--amp", action="store_true",
                   help="bfloat16 autocast of the networks on every side (meant for CUDA)")
    main(p.parse_args())
