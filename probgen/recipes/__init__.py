"""Recipes: how ``probgen train MODEL`` builds, fits, saves and reloads each model.

A recipe glues the layers together for one model name: data -> model -> inference ->
run folder. The model and inference code knows nothing of run folders or the command line;
the recipe is the only place that does.

Each recipe module must be cheap to import (no torch at module level: ``probgen --help``
and ``probgen train MODEL --help`` stay fast) and defines:

``HELP: str``
    One line for ``probgen train --help``.
``add_arguments(parser)``
    Model-specific flags (``--kebab-case``; defaults that are sensible for any data set).
``data_options(args) -> dict``
    Defaults for the data options this model needs (e.g. ``{"binarize": "dynamic"}`` for a
    Bernoulli VAE); the user's explicit ``--binarize``/``--value-range`` win.
``train(run, data, config, device) -> model``
    Fit the model, logging with ``run.log(step, ...)`` and checkpointing with
    ``run.save_checkpoint(state, step=...)``. When ``run`` already holds a checkpoint
    (``--resume``) continue from it: same seed, same data -> same result as an
    uninterrupted run on the CPU.
``load(run, data, device) -> model``
    Rebuild the fitted model from ``run.config`` and the latest checkpoint.
``figures(model, data, run) -> list[Path]`` (optional)
    Figures written into ``run.figures_dir``.
``defaults_for_data(options, kind, shape) -> dict`` (optional)
    Fill the options left unset (``None``) that depend on the data (its kind, ``"image"``,
    ``"vector"`` or ``"toy"``, and per-example shape); return ``{option: {"value", "why"}}``
    for what it chose, which config.json records under ``defaults_from_data``.
``prepare_config(options) -> dict``, ``check(config, data, device)`` (optional)
    Rewrite the options before they are recorded, and refuse what cannot be trained before
    the run folder is written (user programs).

The returned models implement the protocol the evaluation layer sees (DESIGN.md):
``sample(n)``, and where they can ``log_prob(x)``, ``elbo(x)``, ``iwae_bound(x, k)``,
``encode(x)``, ``decode(z)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from probgen.errors import ConfigError, suggest

__all__ = ["RECIPES", "get_recipe", "load_model_state", "resume_epochs", "epoch_checkpoint",
           "record_progress", "positive_int", "positive_float"]

# model name -> module that implements its recipe
RECIPES: dict[str, str] = {
    "vae": "probgen.recipes.vae",
    "ae": "probgen.recipes.ae",
    "dae": "probgen.recipes.ae",
    "ppca": "probgen.recipes.ppca",
    "gan": "probgen.recipes.gan",
    "gmm": "probgen.recipes.gmm",
    "bmm": "probgen.recipes.bmm",
    "flow": "probgen.recipes.flow",
    "program": "probgen.recipes.program",
}


def positive_int(text: str) -> int:
    """argparse type of counts (``--epochs``, ``--batch-size``): an integer >= 1."""
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return v


def positive_float(text: str) -> float:
    """argparse type of rates (``--lr``): a finite number > 0."""
    import argparse
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number; got {text!r}")
    return v


def get_recipe(name: str) -> ModuleType:
    if name not in RECIPES:
        raise ConfigError(
            f"unknown model {name!r}.{suggest(name, RECIPES)} Known models: {', '.join(RECIPES)}."
        )
    return importlib.import_module(RECIPES[name])


def load_model_state(run, model, device, what: str):
    """Load ``state["model"]`` of the run's latest checkpoint into ``model`` and return the
    checkpoint; a state that does not fit the model built from config.json is a clear error."""
    from probgen.errors import CheckpointError

    ckpt = run.load_checkpoint(map_location=device, required=True)
    try:
        model.load_state_dict(ckpt["state"]["model"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"the checkpoint of {run.path} does not fit {what} built from its config.json "
            f"({type(e).__name__}: {str(e).splitlines()[0]}). Was config.json edited?"
        ) from e
    return ckpt


def resume_epochs(run, model, device) -> tuple[int, int, dict | None, bool]:
    """Continue an epoch-based run from its checkpoint, if it has one.

    Loads the model's state, restores the RNG state and drops metrics logged after the
    checkpoint. Returns ``(start_epoch, start_step, optimizer_state, resumed)``; a fresh run
    gives ``(0, 0, None, False)``.
    """
    ckpt = run.load_checkpoint(map_location=device, restore_rng=True)
    if ckpt is None:
        return 0, 0, None, False
    state = ckpt["state"]
    model.load_state_dict(state["model"])
    start_step = int(ckpt["step"])
    run.truncate_metrics(start_step)
    return int(state["epoch"]), start_step, state["optimizer"], True


def epoch_checkpoint(run, model):
    """The ``checkpoint`` hook of :func:`~probgen.inference.svi.fit_loss` for an epoch-based
    run: model, optimiser and epoch, in the layout :func:`resume_epochs` reads back; and,
    beside it, the run's progress record (:func:`record_progress`)."""

    def save(st) -> None:
        run.save_checkpoint({"model": model.state_dict(), "optimizer": st.optimizer.state_dict(),
                             "epoch": st.epoch}, step=st.step)
        record_progress(run, epochs=st.epoch, steps=st.step)

    return save


def record_progress(run, *, epochs: int, steps: int, requested: int | None = None) -> None:
    """Write ``progress.json``: the epochs and steps the run has really completed (those of
    its checkpoint), beside the ``epochs`` asked for in config.json, and why training stopped
    short of them when it did (a time budget or a signal). A run trained to a time budget
    asks for more epochs than it runs; this record says how many it ran. ``requested``
    replaces config.json's ``epochs`` where the fit has its own count (a closed form: 1)."""
    asked = requested if requested is not None else run.config.get("epochs")
    stop = getattr(run, "stop", None)
    reason = stop.reason if stop is not None else None
    done = asked is not None and epochs >= asked
    run.write_json("progress.json", {
        "epochs_run": int(epochs), "steps_run": int(steps), "epochs_requested": asked,
        "finished": bool(done), "stopped_by": None if done else reason,
    })
