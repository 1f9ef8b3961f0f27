"""A VAE on binarised digits, written as a Pyro model/guide pair and fitted with fit_svi.

Shows the whole path in one screen: load a data set with binarisation resampled every
batch, build :class:`probgen.models.vae.VAE` (784-400-50 MLP for MNIST, Bernoulli pixels),
train it with :func:`probgen.inference.svi.fit_svi` (Trace_ELBO, minibatch ELBO scaled to
the full data set by the plate), then score the test set with the ELBO (its reconstruction
and KL terms apart) and the importance-weighted bound, and draw samples, reconstructions,
an interpolation and the latent space.

At the end it checks what must hold for any VAE: training raised the test ELBO, and
IWAE-k >= ELBO on average (Burda et al. 2016).

    python examples/vae_mnist.py --data mnist --data-root /work/shared/data/mnist --epochs 20 --out runs/vae_mnist
    python examples/vae_mnist.py --smoke --out /tmp/vae_mnist      (bundled 8x8 digits, seconds)

The command-line equivalent with checkpoints and resume is
``probgen train vae --data mnist --epochs 20 --out RUN_DIR`` then ``probgen eval RUN_DIR --k 5000``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def score(model, x, k: int) -> dict:
    """Mean ELBO (and terms) and IWAE-k per example over x, in batches."""
    rec = {"elbo": [], "reconstruction": [], "kl": [], f"iwae_{k}": []}
    with torch.no_grad():
        for start in range(0, x.shape[0], 100):
            xb = x[start:start + 100]
            e = model.elbo(xb, num_samples=10)
            rec["elbo"].append(e.total)
            rec["reconstruction"].append(e.reconstruction)
            rec["kl"].append(e.kl)
            rec[f"iwae_{k}"].append(model.iwae_bound(xb, k).total)
    return {name: float(torch.cat(v).mean()) for name, v in rec.items()}


def main(args) -> dict:
    import pyro

    from probgen import plots
    from probgen.data import load_dataset
    from probgen.inference.svi import fit_svi
    from probgen.models.vae import VAE

    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    data = load_dataset(args.data, root=args.data_root, binarize="dynamic", limit=args.limit)
    vae = VAE(data.shape, args.latent_dim, (args.hidden,), likelihood="bernoulli")
    x_test = data.test[: args.test_limit]
    before = score(vae, x_test[:200], 10)["elbo"]

    n = data.train.shape[0]
    res = fit_svi(vae.model, vae.guide, data, epochs=args.epochs, batch_size=args.batch_size,
                  lr=args.lr, model_kwargs={"num_data": n},
                  callbacks=[lambda st: print(f"epoch {st.epoch:3d}  ELBO {-st.epoch_loss / n:8.2f}")])
    print(f"{res.steps} steps in {res.time_s:.1f} s ({res.steps / res.time_s:.0f} steps/s); "
          f"skipped {len(res.skipped)} non-finite steps")
    vae.eval()
    scores = score(vae, x_test, args.k)
    print(f"test ({x_test.shape[0]} images), nats per image: ELBO {scores['elbo']:.2f} "
          f"(reconstruction {scores['reconstruction']:.2f}, KL {scores['kl']:.2f}), "
          f"IWAE-{args.k} {scores[f'iwae_{args.k}']:.2f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        plots.image_grid(vae.sample(64, mean=True), out / "samples.png", title="decoded z ~ p(z)")
        plots.reconstructions(x_test[:20], vae.reconstruct(x_test[:20]), out / "reconstructions.png")
        plots.encoded_interpolation(vae, x_test[:8], out / "interpolation.png")
        plots.latent_scatter(vae.encode(x_test), out / "latent.png", labels=data.test_labels[: args.test_limit],
                             title=f"test codes ({args.latent_dim}-D, first two principal components)")
    result = {"data": args.data, "epochs": args.epochs, "train_seconds": res.time_s,
              "elbo_before": before, **scores}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")

    assert scores["elbo"] > before + 1.0, f"training did not raise the ELBO ({before:.2f} -> {scores['elbo']:.2f})"
    assert scores[f"iwae_{args.k}"] >= scores["elbo"] - 0.5, "IWAE-k fell below the ELBO"
    print("checks passed: training raised the test ELBO; IWAE-k >= ELBO")
    return result


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/vae_mnist", help="folder for the figures and result.json")
    p.add_argument("--smoke", action="store_true", help="bundled 8x8 digits, a few epochs (seconds)")
    p.add_argument("--data", default=None, help="data set name (default mnist; smoke: digits)")
    p.add_argument("--data-root", default=None, help="folder with the MNIST files")
    p.add_argument("--limit", type=int, default=None, help="use at most N training images")
    p.add_argument("--epochs", type=int, default=None, help="passes over the data (default 10; smoke 50)")
    p.add_argument("--latent-dim", type=int, default=None, help="size of z (default 50; smoke 8)")
    p.add_argument("--hidden", type=int, default=None, help="hidden width (default 400; smoke 64)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--k", type=int, default=None, help="importance samples (default 1000; smoke 50)")
    p.add_argument("--test-limit", type=int, default=1000, help="test images to score (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.data = a.data or ("digits" if a.smoke else "mnist")
    a.epochs = a.epochs or (50 if a.smoke else 10)
    a.latent_dim = a.latent_dim or (8 if a.smoke else 50)
    a.hidden = a.hidden or (64 if a.smoke else 400)
    a.k = a.k or (50 if a.smoke else 1000)
    if a.smoke:
        a.lr = 3e-3
    main(a)
