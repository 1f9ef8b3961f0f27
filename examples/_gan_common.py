"""Shared by the GAN examples: their command-line options, their set-up, and a GAN trained
on a named data set with the recipe's defaults (:mod:`probgen.recipes.gan`)."""

from __future__ import annotations

from pathlib import Path

import torch

from probgen.inference.adversarial import fit_gan
from probgen.recipes import gan as recipe


def add_arguments(parser, *, out: str, data: str | None = None, data_root: str | None = None,
                  steps: int = 3000):
    """The options every GAN example takes: --out, --data (when ``data`` is given),
    --data-root, --steps, --seed, --threads and --smoke."""
    parser.add_argument("--out", default=out)
    if data is not None:
        parser.add_argument("--data", default=data)
        parser.add_argument("--data-root", default=data_root)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    return parser


def prepare(args) -> Path:
    """Make the output folder and set torch's threads (one with ``--smoke``); return the folder."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1 if args.smoke else args.threads)
    return out


def print_losses(step: int, record: dict, model=None) -> None:
    """A ``callback`` for :func:`train_gan` that prints the two losses."""
    print(f"step {step}: loss_d {record['loss_d']:.3f} loss_g {record['loss_g']:.3f}", flush=True)


def build_gan(data, *, device="cpu", **options):
    """(GAN model, trainer, config) with the recipe's defaults for this kind of data,
    overridden by ``options`` (``width=16``, ``latent_dim=8``, ...)."""
    config = recipe.resolve_config(options, data)
    model, trainer = recipe.build(config, data, device)
    return model, trainer, config


def fit(trainer, data, config: dict, *, steps: int, seed: int = 0, log_every: int = 100,
        callback=None):
    """``steps`` steps of ``trainer`` on ``data.train`` with the config's batch size,
    discriminator steps and learning-rate schedule; ``callback(step, record)``."""
    return fit_gan(trainer, data.train, steps, batch_size=config["batch_size"], seed=seed,
                   d_steps=config["d_steps"], log_every=log_every, lr_schedule=config["lr_decay"],
                   callback=callback)


def train_gan(data, *, steps: int, seed: int = 0, device="cpu", log_every: int = 100,
              callback=None, **options):
    """(GAN model, trainer, fit result) after ``steps`` steps with the recipe's defaults for
    this kind of data, overridden by ``options`` (``width=16``, ``latent_dim=8``, ...).
    ``callback(step, record, model)`` is called every ``log_every`` steps."""
    torch.manual_seed(seed)
    model, trainer, config = build_gan(data, device=device, seed=seed, steps=steps, **options)
    res = fit(trainer, data, config, steps=steps, seed=seed, log_every=log_every,
              callback=None if callback is None else (lambda step, rec: callback(step, rec, model)))
    model.eval()
    return model, trainer, res
