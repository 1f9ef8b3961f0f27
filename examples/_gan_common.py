"""Shared by the GAN examples: train a GAN on a named data set with the recipe's defaults."""

from __future__ import annotations

import torch

from probgen.inference.adversarial import fit_gan
from probgen.recipes import gan as recipe


def train_gan(data, *, steps: int, seed: int = 0, device="cpu", log_every: int = 100,
              callback=None, **options):
    """(GAN model, trainer, fit result) after ``steps`` steps with the recipe's defaults for
    this kind of data, overridden by ``options`` (``width=16``, ``latent_dim=8``, ...).
    ``callback(step, record, model)`` is called every ``log_every`` steps."""
    torch.manual_seed(seed)
    config = recipe.resolve_config({"seed": seed, "steps": steps, **options}, data)
    model, trainer = recipe.build(config, data, device)
    res = fit_gan(trainer, data.train, steps, batch_size=config["batch_size"], seed=seed,
                  d_steps=config["d_steps"], log_every=log_every, lr_schedule=config["lr_decay"],
                  callback=None if callback is None else (lambda step, rec: callback(step, rec, model)))
    model.eval()
    return model, trainer, res
