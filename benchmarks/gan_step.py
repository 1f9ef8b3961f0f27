"""GAN training steps per second: probgen's step against pytorch/examples' DCGAN step.

The reference is the training step of pytorch/examples ``dcgan/main.py``, written inline:
BCELoss on sigmoid outputs, the discriminator run SEPARATELY on a real and on a fake batch
(``errD_real.backward(); ... errD_fake.backward()``), then the generator step on the fake
batch. probgen's step (:class:`probgen.inference.adversarial.GANTrainer`, non-saturating loss)
runs the discriminator ONCE on real and fake concatenated, its BatchNorm layers taking their
statistics per half (probgen.models.nets.batch_groups), which normalises and updates the
running statistics exactly as the two passes do, then the generator step on the same fake
batch alone (tests/test_gan.py checks parameters and running statistics against this
reference step). Both use the same 28x28 DCGAN
networks (probgen.models.nets), the same batch, Adam(2e-4, (0.5, 0.999)): torch's default
Adam in the reference, as pytorch/examples has it, and Adam's fused kernel in probgen (one
kernel for all of a network's tensors). So that the two changes can be told apart, a third
side runs the reference step with fused Adam (``ratio_vs_fused_reference``). All are timed
in one process, interleaved, after a warm-up.

    python benchmarks/gan_step.py [--batch-size 64] [--rounds 5] [--steps 20] [--threads N]
                                  [--device cuda] [--amp]

The last line is ``RESULT ratio=<probgen step time / reference step time> ...``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from probgen.inference.adversarial import GANTrainer
from probgen.models.nets import DCGANDiscriminator, DCGANGenerator


class _Prob(nn.Module):
    """pytorch/examples' discriminator ends in a Sigmoid; BCELoss takes probabilities."""

    def __init__(self, d):
        super().__init__()
        self.d = d

    def forward(self, x):
        return torch.sigmoid(self.d(x))


def reference_step(netG, netD, optG, optD, real, nz, criterion, amp):
    """pytorch/examples dcgan/main.py, one iteration (labels 1 = real, 0 = fake)."""
    b = real.shape[0]
    dev = real.device
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else torch.autocast("cpu", enabled=False)
    # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
    netD.zero_grad()
    label = torch.full((b,), 1.0, device=dev)
    with ctx:
        output = netD(real).float()
    errD_real = criterion(output, label)
    errD_real.backward()
    noise = torch.randn(b, nz, device=dev)
    with ctx:
        fake = netG(noise)
        output = netD(fake.detach()).float()
    label.fill_(0.0)
    errD_fake = criterion(output, label)
    errD_fake.backward()
    optD.step()
    # (2) Update G network: maximize log(D(G(z)))
    netG.zero_grad()
    label.fill_(1.0)
    with ctx:
        output = netD(fake).float()
    errG = criterion(output, label)
    errG.backward()
    optG.step()
    return errD_real + errD_fake, errG


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(args):
    device = torch.device(args.device)
    torch.manual_seed(0)
    nz, shape = 64, (1, 28, 28)
    real = torch.rand(args.batch_size, *shape, device=device) * 2 - 1

    g1 = DCGANGenerator(nz, shape, value_range=(-1, 1)).to(device)
    d1 = DCGANDiscriminator(shape, norm="batch").to(device)
    ours = GANTrainer(g1, d1, latent_dim=nz, loss="ns", lr=2e-4, amp=args.amp)

    g2 = DCGANGenerator(nz, shape, value_range=(-1, 1)).to(device)
    d2 = _Prob(DCGANDiscriminator(shape, norm="batch")).to(device)
    g2.load_state_dict(g1.state_dict())
    d2.d.load_state_dict(d1.state_dict())
    opt_g = torch.optim.Adam(g2.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d2.parameters(), lr=2e-4, betas=(0.5, 0.999))
    criterion = nn.BCELoss()
    # the reference step again, on Adam's fused kernel
    g3 = DCGANGenerator(nz, shape, value_range=(-1, 1)).to(device)
    d3 = _Prob(DCGANDiscriminator(shape, norm="batch")).to(device)
    g3.load_state_dict(g1.state_dict())
    d3.d.load_state_dict(d1.state_dict())
    opt_g3 = torch.optim.Adam(g3.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True)
    opt_d3 = torch.optim.Adam(d3.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True)

    def run_ours(n):
        for _ in range(n):
            ours.step(real)

    def run_ref(n):
        for _ in range(n):
            reference_step(g2, d2, opt_g, opt_d, real, nz, criterion, args.amp and device.type == "cuda")

    def run_fused_ref(n):
        for _ in range(n):
            reference_step(g3, d3, opt_g3, opt_d3, real, nz, criterion, args.amp and device.type == "cuda")

    run_ours(3)
    run_ref(3)
    run_fused_ref(3)
    _sync(device)
    t_ours, t_ref, t_fused = [], [], []
    for r in range(args.rounds):
        order = [(run_ours, t_ours), (run_ref, t_ref), (run_fused_ref, t_fused)]
        order = order[r % 3:] + order[:r % 3]  # each side first in turn
        for fn, acc in order:
            _sync(device)
            t0 = time.perf_counter()
            fn(args.steps)
            _sync(device)
            acc.append((time.perf_counter() - t0) / args.steps)
    mo, mr, mf = statistics.median(t_ours), statistics.median(t_ref), statistics.median(t_fused)
    print(f"device {device}, batch {args.batch_size}, amp {args.amp}, threads {torch.get_num_threads()}, "
          f"{args.rounds} rounds x {args.steps} steps")
    for name, m in (("probgen", mo), ("reference", mr), ("reference, fused Adam", mf)):
        print(f"{name + ' step:':27s} {1000 * m:8.2f} ms  ({1 / m:7.1f} steps/s, "
              f"{args.batch_size / m:9.0f} images/s)")
    print(f"RESULT ratio={mo / mr:.3f} ratio_vs_fused_reference={mo / mf:.3f} probgen_ms={1000 * mo:.2f} "
          f"reference_ms={1000 * mr:.2f} fused_reference_ms={1000 * mf:.2f} batch={args.batch_size} "
          f"device={device.type} amp={int(args.amp)} threads={torch.get_num_threads()}")
    return mo / mr


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA only)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    main(args)
