"""A DCGAN on MNIST, scored with the locally trained feature network.

Trains the DCGAN pair (non-saturating loss, Adam 2e-4, beta1 0.5, pixels in [-1, 1]) and
scores its samples against the test split: Frechet and kernel distances in the feature space
of probgen's small MNIST classifier (not Inception: these numbers compare models scored
with the same network only), improved precision/recall, density/coverage and the class
histogram of the samples. The same metrics of held-out REAL images (the train split against
the test split) are printed beside them as the floor a perfect model would reach.

    python examples/dcgan_mnist.py --out OUT [--data mnist] [--steps 3000] [--data-root DIR]

--smoke trains a tiny DCGAN for a few steps on the bundled mnist-5k and checks that the real
images score better than the untrained-looking samples.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gan_common import add_arguments, prepare, train_gan  # noqa: E402

from probgen import plots  # noqa: E402
from probgen.data import load_dataset  # noqa: E402
from probgen.eval.features import feature_network  # noqa: E402
from probgen.eval.samples import image_sample_metrics  # noqa: E402


class _Replay:
    def __init__(self, x):
        self.x = x

    def sample(self, n):
        return self.x[:n]


def main(args):
    out = prepare(args)
    name = "mnist-5k" if args.smoke else args.data
    data = load_dataset(name, root=args.data_root, value_range=(-1, 1),
                        limit=512 if args.smoke else None)
    steps = 20 if args.smoke else args.steps
    n_eval = 300 if args.smoke else args.n_eval
    fn = feature_network(data, epochs=1 if args.smoke else None)
    print(f"feature network {fn.name}: test accuracy {fn.accuracy:.4f}", flush=True)

    opts = dict(width=8, latent_dim=16, batch_size=32) if args.smoke else dict(width=args.width)
    z = torch.randn(16, opts.get("latent_dim", 64), generator=torch.Generator().manual_seed(args.seed))
    rows = {}

    def cb(step, rec, model):
        print(f"step {step:6d}  loss_d {rec['loss_d']:.3f}  loss_g {rec['loss_g']:.3f}  "
              f"D(x) {rec['d_real']:.3f}  D(G(z)) {rec['d_fake']:.3f}", flush=True)
        if step % max(steps // 4, 1) == 0 or step == steps:
            with torch.no_grad():
                rows[step] = model.decode(z).cpu()

    t0 = time.perf_counter()
    model, trainer, res = train_gan(data, steps=steps, seed=args.seed,
                                    log_every=max(1, min(100, steps // 4)), callback=cb, **opts)
    print(f"trained {steps} steps in {time.perf_counter() - t0:.0f} s")
    plots.image_grid(model.sample(64).cpu(), out / "samples.png", shape=data.shape,
                     value_range=data.value_range, title=f"DCGAN samples after {steps} steps")
    plots.gan_progress(rows, data, out / "samples_over_training.png")

    gen = image_sample_metrics(model, data, n_samples=n_eval, feature_net=fn)
    real = image_sample_metrics(_Replay(data.train), data, n_samples=n_eval, feature_net=fn)
    print(f"\n{'metric':22s} {'DCGAN':>10s} {'real (train vs test)':>22s}")
    for key in ("frechet_distance", "kernel_distance", "precision", "recall", "density", "coverage",
                "class_histogram"):
        print(f"{key:22s} {gen[key].value:10.4f} {real[key].value:22.4f}")
    print("class counts of the samples:", gen["class_histogram"].extra["counts"])
    plots.class_histogram(gen["class_histogram"].extra["counts"], out / "class_histogram.png")
    (out / "dcgan_mnist.json").write_text(json.dumps(
        {"steps": steps, "data": name, "dcgan": {k: m.to_dict() for k, m in gen.items()},
         "real": {k: m.to_dict() for k, m in real.items()}}, indent=2))
    # the known answer: real held-out images are at least as close to the test split as samples
    assert real["frechet_distance"].value <= gen["frechet_distance"].value, "real data scored worse than samples"
    return gen


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p, out="dcgan-mnist-output", data="mnist", data_root="../shared/data/mnist")
    p.add_argument("--n-eval", type=int, default=5000)
    p.add_argument("--width", type=int, default=64, help="DCGAN channels of the first D layer")
    main(p.parse_args())
