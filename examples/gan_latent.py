"""Walking a GAN's latent space: linear and spherical interpolation, latent arithmetic.

Trains a GAN on handwritten digits and shows

* interpolation between random codes, linear and spherical (slerp; White, "Sampling
  generative networks", 2016). Under the N(0, I) prior codes concentrate near the sphere of
  radius sqrt(d); a linear path cuts inside it (its midpoint has norm about sqrt(d / 2) for
  two independent codes), a spherical one stays on it. The norms along both paths are
  printed and checked;
* latent arithmetic (Radford et al., 2016, section 6.3) with the feature network's classifier
  as the labeller: the mean code of the samples classified as digit c is a "class vector";
  ``z - mean[class(z)] + mean[c']`` moves a sample to class c' while keeping the rest of its
  code. The fraction of moved samples that the classifier puts in c' is printed, against
  chance (1 / number of classes).

    python examples/gan_latent.py --out OUT [--data mnist-5k] [--steps 3000]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gan_common import add_arguments, prepare, print_losses, train_gan  # noqa: E402

from probgen import plots  # noqa: E402
from probgen.data import load_dataset  # noqa: E402
from probgen.eval.features import feature_network  # noqa: E402


def interpolation_norms(latent_dim: int, *, pairs: int = 200, points: int = 9, seed: int = 0):
    """Mean code norm along linear and spherical paths between random prior draws: (T,), (T,)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(pairs, 2, latent_dim, generator=g)
    t = torch.linspace(0, 1, points)
    lin = torch.stack([plots.lerp(a, b, t) for a, b in z]).norm(dim=-1).mean(0)
    sph = torch.stack([plots.slerp(a, b, t) for a, b in z]).norm(dim=-1).mean(0)
    return lin, sph


def class_vectors(model, fn, *, n: int = 4000, seed: int = 0):
    """Mean code per predicted class of n samples: (K, L), and the counts (K,)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.latent_dim, generator=g)
    with torch.no_grad():
        cls = fn.classify(model.decode(z))
    k = fn.net.num_classes
    counts = torch.bincount(cls, minlength=k)
    means = torch.zeros(k, model.latent_dim).index_add_(0, cls, z) / counts.clamp_min(1).unsqueeze(1)
    return means, counts, z, cls


def main(args):
    out = prepare(args)
    name = "digits" if args.smoke else args.data
    data = load_dataset(name, root=args.data_root, value_range=(-1, 1))
    steps = 40 if args.smoke else args.steps
    small = dict(width=32) if args.smoke else {}
    model, _, res = train_gan(data, steps=steps, seed=args.seed, log_every=max(1, steps // 5),
                              callback=print_losses, **small)
    print(f"trained {steps} steps on {name} in {res.seconds:.0f} s")
    fn = feature_network(data)

    for spherical in (False, True):
        kind = "spherical" if spherical else "linear"
        plots.latent_interpolation(model, data, out / f"interpolation_{kind}.png", spherical=spherical,
                                   pairs=6, points=10, seed=args.seed)
    lin, sph = interpolation_norms(model.latent_dim)
    d = model.latent_dim
    print(f"mean |z| along the path (d = {d}, sqrt(d) = {math.sqrt(d):.2f}):")
    print("  linear:    " + " ".join(f"{v:.2f}" for v in lin.tolist()))
    print("  spherical: " + " ".join(f"{v:.2f}" for v in sph.tolist()))

    means, counts, z, cls = class_vectors(model, fn, seed=args.seed)
    print("samples per predicted class:", counts.tolist())
    present = [c for c in range(len(counts)) if counts[c] >= 20]
    moved_ok, total = 0, 0
    rows = []
    for target in present:
        src = z[:8]
        moved = src - means[cls[:8]] + means[target]  # (8, L)
        with torch.no_grad():
            x_moved = model.decode(moved)
            pred = fn.classify(x_moved)
        moved_ok += int((pred == target).sum())
        total += pred.numel()
        rows.append(x_moved)
    with torch.no_grad():
        rows.insert(0, model.decode(z[:8]))
        rows.insert(1, model.decode(means[present[:8]]))
    plots.image_grid(torch.cat(rows[:12]), out / "latent_arithmetic.png", nrow=8, shape=data.shape,
                     value_range=data.value_range,
                     title="row 1: samples; row 2: class-mean codes; then each row: samples moved to class c")
    chance = 1.0 / fn.net.num_classes
    frac = moved_ok / max(total, 1)
    print(f"latent arithmetic: {frac:.1%} of moved samples classified as the target class "
          f"(chance {chance:.0%}, {len(present)} classes present)")

    # known answers: slerp keeps the norm, the linear midpoint falls to about sqrt(d / 2)
    assert abs(float(sph[len(sph) // 2]) - float(sph[0])) < 0.05 * float(sph[0])
    assert abs(float(lin[len(lin) // 2]) - math.sqrt(d / 2)) < 0.1 * math.sqrt(d)
    if not args.smoke:
        assert frac > chance, "latent arithmetic did no better than chance"
    return frac


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p, out="gan-latent-output", data="mnist-5k")
    main(p.parse_args())
