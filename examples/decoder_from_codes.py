"""A decoder is a regression from codes to images: one-hot class codes mapped to digits.

Before any encoder or latent variable, a decoder network can be trained by plain
regression: feed it the one-hot code of each training image's class and minimise the squared
error to the image. The least-squares optimum for code c is the mean of the class-c images,
so the trained decoder must reproduce the class means -- the known answer this example
checks at the end. Decoding mixtures of two codes (0.5 e_3 + 0.5 e_8, ...) shows what the
network does between the codes it was trained on: it has no reason to produce a digit there,
which is what a latent-variable model's prior is for.

    python examples/decoder_from_codes.py --out runs/decoder_from_codes [--data mnist --data-root DIR]
    python examples/decoder_from_codes.py --smoke --out /tmp/decoder_from_codes
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.nn import functional as F


def main(args) -> dict:
    from probgen import plots
    from probgen.data import load_dataset
    from probgen.inference.svi import fit_loss
    from probgen.models.nets import MLPDecoder

    torch.manual_seed(args.seed)
    data = load_dataset(args.data, root=args.data_root, limit=args.limit)
    x, y = data.train, data.train_labels  # (N, C, H, W), (N,)
    k = int(data.num_classes or int(y.max()) + 1)
    codes = F.one_hot(y, k).to(x.dtype)  # (N, K)
    decoder = MLPDecoder(data.shape, k, hidden=(args.hidden,), activation="relu")

    def loss(c, xb):  # mean squared error per pixel; the optimum is E[x | class]
        return F.mse_loss(decoder(c), xb)

    res = fit_loss(loss, list(decoder.parameters()), (codes, x), epochs=args.epochs,
                   batch_size=args.batch_size, lr=args.lr)
    class_means = torch.stack([x[y == c].mean(0) for c in range(k)])  # (K, C, H, W)
    with torch.no_grad():
        decoded = decoder(torch.eye(k, dtype=x.dtype))  # (K, C, H, W)
        pairs = [(3, 8), (1, 7), (0, 6), (4, 9)] if k == 10 else [(0, k - 1)]
        t = torch.linspace(0, 1, 9).reshape(-1, 1)  # (T, 1)
        mixes = torch.cat([decoder((1 - t) * torch.eye(k)[a] + t * torch.eye(k)[b]) for a, b in pairs])
    err = (decoded - class_means).abs().max().item()
    rms = (decoded - class_means).pow(2).mean().sqrt().item()
    print(f"{args.data}: {x.shape[0]} images, {k} classes, {res.epochs} epochs in {res.time_s:.1f} s; "
          f"final loss {res.epoch_losses[-1]:.5f}")
    print(f"decoder(one-hot c) vs class mean of c: max |difference| {err:.4f}, RMS {rms:.5f} (pixels in [0, 1])")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plots.image_grid(torch.cat([class_means, decoded]), out / "decoded_codes.png", nrow=k,
                     title="class means (top) and decoder(one-hot code) (bottom)")
    plots.image_grid(mixes, out / "code_mixtures.png", nrow=9,
                     title="decoder((1 - t) e_a + t e_b): between the trained codes")
    result = {"data": args.data, "classes": k, "max_abs_error": err, "rms_error": rms,
              "epochs": res.epochs, "seconds": res.time_s}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    assert rms < args.tolerance, f"decoded codes are {rms:.4f} RMS from the class means (> {args.tolerance})"
    print(f"check passed: the regression recovered the class means (RMS {rms:.5f} < {args.tolerance})")
    return result


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/decoder_from_codes", help="folder for the figures and result.json")
    p.add_argument("--smoke", action="store_true", help="small settings (seconds)")
    p.add_argument("--data", default=None, help="a labelled image set (default: digits, bundled)")
    p.add_argument("--data-root", default=None, help="folder with the image files (mnist, ...)")
    p.add_argument("--limit", type=int, default=None, help="use at most N training images")
    p.add_argument("--epochs", type=int, default=None, help="passes over the data (default 150; smoke 60)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--tolerance", type=float, default=0.02,
                   help="largest RMS distance (pixels in [0, 1]) from the class means that passes")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.data = a.data or "digits"
    a.epochs = a.epochs or (60 if a.smoke else 150)
    main(a)
