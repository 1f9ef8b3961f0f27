"""Encoding with a GAN by inversion, against a VAE's encoder.

A GAN has a decoder (its generator) but no encoder. ``GAN.encode`` finds a code by gradient
descent on ``||G(z) - x||^2`` from several random starts (Creswell and Bharath, 2018). This
example trains a GAN and a VAE (Gaussian pixels of fixed scale 0.1, so that its decoder mean
lives in pixel space like G's output) on the same digits, encodes held-out images both
ways and compares the reconstruction errors (mean squared error per pixel), and the
inversion error against the number of restarts.

Known answers checked at the end: the restarts of one run are independent (Adam acts per
coordinate and the loss is a sum over codes), so with the same seed, more restarts can
only lower each example's error; and a GAN's own samples, which lie on its range, are
inverted better than real images.

    python examples/gan_inversion.py --out OUT [--data mnist-5k] [--steps 3000]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gan_common import add_arguments, prepare, train_gan  # noqa: E402

from probgen import plots  # noqa: E402
from probgen.data import load_dataset  # noqa: E402


def train_vae(data, *, epochs: int, latent_dim: int, seed: int):
    """A VAE with Gaussian pixels (scale 0.1) fitted with SVI."""
    import pyro

    from probgen.inference.svi import fit_svi
    from probgen.models.vae import VAE

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    vae = VAE(data.shape, latent_dim, likelihood="gaussian", gaussian_scale=0.1)
    fit_svi(vae.model, vae.guide, data.train, epochs=epochs, batch_size=128, lr=1e-3,
            model_kwargs={"num_data": data.train.shape[0]})
    return vae.eval()


def main(args):
    out = prepare(args)
    name = "digits" if args.smoke else args.data
    data = load_dataset(name, root=args.data_root, value_range=(0, 1))
    steps = 40 if args.smoke else args.steps
    latent = 8 if args.smoke else args.latent_dim
    small = dict(width=32) if args.smoke else {}
    gan, _, res = train_gan(data, steps=steps, seed=args.seed, latent_dim=latent, **small)
    print(f"GAN: {steps} steps on {name} in {res.seconds:.0f} s")
    vae = train_vae(data, epochs=1 if args.smoke else args.vae_epochs, latent_dim=latent, seed=args.seed)
    print("VAE trained")

    x = data.test[: 32 if args.smoke else args.n]
    inv = gan.invert(x, restarts=args.restarts, steps=50 if args.smoke else args.inversion_steps)
    inv1 = gan.invert(x, restarts=1, steps=50 if args.smoke else args.inversion_steps)
    with torch.no_grad():
        vae_rec = vae.decode(vae.encode(x))
    vae_err = (vae_rec - x).reshape(x.shape[0], -1).pow(2).mean(1)
    with torch.no_grad():
        own = gan.sample(x.shape[0])
    inv_own = gan.invert(own, restarts=args.restarts, steps=50 if args.smoke else args.inversion_steps)

    print(f"\nmean squared error per pixel on {x.shape[0]} test images (pixels in [0, 1]):")
    print(f"  GAN inversion, {args.restarts} restarts: {inv.error.mean():.4f}")
    print(f"  GAN inversion, 1 restart:  {inv1.error.mean():.4f}")
    print(f"  VAE encoder + decoder:     {vae_err.mean():.4f}")
    print(f"  GAN inversion of its own samples: {inv_own.error.mean():.4f}")
    k = min(8, x.shape[0])
    plots.image_grid(torch.cat([x[:k], inv.reconstruction[:k], vae_rec[:k]]), out / "reconstructions.png",
                     nrow=k, shape=data.shape, title="test images; GAN inversion; VAE reconstruction")

    assert bool((inv.error <= inv1.error + 1e-6).all()), "more restarts gave a worse code"
    if not args.smoke:
        assert inv_own.error.mean() < inv.error.mean(), "the GAN's own samples inverted worse than data"
    return {"gan": float(inv.error.mean()), "vae": float(vae_err.mean())}


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p, out="gan-inversion-output", data="mnist-5k")
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--vae-epochs", type=int, default=30)
    p.add_argument("--n", type=int, default=200, help="test images to encode")
    p.add_argument("--restarts", type=int, default=4)
    p.add_argument("--inversion-steps", type=int, default=300)
    main(p.parse_args())
