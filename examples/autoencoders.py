"""A plain and a denoising autoencoder with 2-D codes: reconstructions and the embedding.

Both use the VAE's encoder/decoder networks (probgen.models.nets) with a deterministic
2-D code and a cross-entropy reconstruction loss, trained with the NaN-safe loop
:func:`probgen.inference.svi.fit_loss`. The denoising autoencoder (Vincent et al. 2008)
sees inputs with 30% of the pixels masked to zero and must reconstruct the clean image.
The figures show originals next to reconstructions (clean and masked inputs) and the 2-D
code of every test image coloured by its class.

At the end it checks two things that must hold: each model reconstructs the test set
better than the best constant image (the training mean), and on masked inputs the
denoising autoencoder's reconstructions are closer to the clean images than the plain one's.

    python examples/autoencoders.py --out runs/autoencoders [--data mnist --data-root DIR]
    python examples/autoencoders.py --smoke --out /tmp/autoencoders
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.nn import functional as F


def _cross_entropy(p: torch.Tensor, x: torch.Tensor) -> float:
    """Mean per-image cross-entropy of targets x under pixel probabilities p."""
    return float(F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), x, reduction="none").flatten(1).sum(1).mean())


def main(args) -> dict:
    from probgen import plots
    from probgen.data import load_dataset
    from probgen.inference.svi import fit_loss
    from probgen.models.autoencoder import Autoencoder

    torch.manual_seed(args.seed)
    data = load_dataset(args.data, root=args.data_root, limit=args.limit)
    x_test, y_test = data.test[: args.test_limit], data.test_labels[: args.test_limit]
    g = torch.Generator().manual_seed(args.seed + 1)
    masked = x_test * (torch.rand(x_test.shape, generator=g) >= args.noise_level).to(x_test.dtype)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mean_image = data.train.mean(0, keepdim=True).expand_as(x_test)
    result = {"baseline_mean_image": _cross_entropy(mean_image, x_test)}
    models = {
        "ae": Autoencoder(data.shape, 2, (args.hidden,), activation="relu"),
        "dae": Autoencoder(data.shape, 2, (args.hidden,), activation="relu", noise="masking",
                           noise_level=args.noise_level),
    }
    for name, model in models.items():
        res = fit_loss(model.loss, list(model.parameters()), data, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr)
        model.eval()
        with torch.no_grad():
            clean, from_masked = model.reconstruct(x_test), model.reconstruct(masked)
            codes = model.encode(x_test)
        result[name] = {"train_loss": res.epoch_losses[-1], "seconds": res.time_s,
                        "test_clean": _cross_entropy(clean, x_test),
                        "test_masked": _cross_entropy(from_masked, x_test)}
        print(f"{name:3s}: {res.epochs} epochs in {res.time_s:.1f} s; test cross-entropy per image: clean "
              f"input {result[name]['test_clean']:.2f}, masked input {result[name]['test_masked']:.2f}")
        plots.reconstructions(x_test[:20], clean[:20], out / f"{name}_reconstructions.png",
                              title=f"{name}: originals and reconstructions")
        plots.reconstructions(masked[:20], from_masked[:20], out / f"{name}_masked.png",
                              title=f"{name}: masked inputs and reconstructions")
        plots.latent_scatter(codes, out / f"{name}_embedding.png", labels=y_test,
                             title=f"{name}: 2-D codes of the test images")
    print(f"best constant image (the training mean): {result['baseline_mean_image']:.2f}")
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")

    for name in models:
        assert result[name]["test_clean"] < result["baseline_mean_image"], f"{name} is no better than the mean image"
    assert result["dae"]["test_masked"] < result["ae"]["test_masked"], \
        "the denoising autoencoder did not reconstruct masked inputs better than the plain one"
    print("checks passed: both beat the mean image; the DAE undoes masking better than the AE")
    return result


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/autoencoders", help="folder for the figures and result.json")
    p.add_argument("--smoke", action="store_true", help="bundled 8x8 digits, a few epochs (seconds)")
    p.add_argument("--data", default=None, help="a labelled image set (default mnist; smoke: digits)")
    p.add_argument("--data-root", default=None, help="folder with the MNIST files")
    p.add_argument("--limit", type=int, default=None, help="use at most N training images")
    p.add_argument("--epochs", type=int, default=None, help="passes over the data (default 10; smoke 40)")
    p.add_argument("--hidden", type=int, default=None, help="hidden width (default 400; smoke 64)")
    p.add_argument("--noise-level", type=float, default=0.3, help="masking probability of the DAE")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--test-limit", type=int, default=2000, help="test images to score and plot")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.data = a.data or ("digits" if a.smoke else "mnist")
    a.epochs = a.epochs or (40 if a.smoke else 10)
    a.hidden = a.hidden or (64 if a.smoke else 400)
    if a.smoke:
        a.lr = 3e-3
    main(a)
