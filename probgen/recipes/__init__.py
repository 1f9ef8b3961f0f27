"""Recipes: how ``probgen train MODEL`` builds, fits, saves and reloads each model.

A recipe glues the layers together for one model name: data -> model -> inference ->
run folder. The model and inference code knows nothing of run folders or the command line;
the recipe is the only place that does.

Registration
------------
Every module of this package whose name does not start with ``_`` is a recipe and registers
itself by being there: :data:`RECIPES` is filled by listing the package when it is first
imported, and ``probgen train``, ``probgen compare`` (and so the report) and the contract test
(``tests/test_recipes_contract.py``) learn of a model from :data:`RECIPES` alone. A recipe
defined elsewhere (a plug-in, a test) joins with :func:`register`. Adding a model is therefore
three files: its module in ``models/``, its recipe here, its test.

The contract
------------
A recipe module must be cheap to import (no torch at module level: ``probgen --help`` and
``probgen train MODEL --help`` stay fast) and defines:

``HELP: str``
    One line for ``probgen train --help``.
``Config``
    A :class:`RecipeConfig`: a dataclass with one field per option of the model, its default
    declared with :func:`option` together with its help text and its flag. The flags of
    ``probgen train MODEL`` and the options of ``probgen.train(MODEL, ...)`` and of
    ``compare``'s rows are generated from it; the recipe reads a run's config through
    ``Config.read(config)``, so every default is stated once. A default of ``None`` means
    "follows the data" (filled by ``defaults_for_data`` or the recipe's own resolution, and
    recorded in config.json).
``NAMES: tuple[str, ...]`` (optional)
    The model names the recipe serves (default: the module's name; ``ae`` serves ``ae`` and
    ``dae``). A recipe sees its name as ``config["model"]``.
``DISTRIBUTED: bool`` (default False)
    Trains under ``torchrun`` (``--nproc``): batches split by rank, gradients or sufficient
    statistics reduced, rank 0 writes. Others refuse to start in several processes.
``TRAINS_BY: "epochs" | "steps" | None`` (default None)
    The option that sets how long training runs, or None for a fit that runs in one go (EM,
    a closed form). A recipe that trains by epochs or steps checkpoints at their boundaries,
    stops there when ``run.should_stop()`` says so (a signal, the time budget), and records
    what it really ran with :func:`record_progress` (``progress.json``).
``FILLS_BUDGET: bool`` (default False)
    In ``compare``, with a time budget and no length given, train with an unbounded
    ``TRAINS_BY`` so that the model's share of the budget is what stops it (only for recipes
    whose schedule does not depend on the length).
``QUICK: bool`` (default False)
    Converges well inside any share of a budget: ``compare`` trains it first, so that the time
    it leaves goes to the models after it.
``LIST_ORDER: int`` (default 80)
    Where the model comes in the lists of models (``probgen train --help``, "Known models"):
    by this number, then by name.
``SMOKE: dict``
    The smallest run that exercises the contract, for the contract test: ``{"data": NAME,
    "limit": N, **options}`` (a program recipe gives ``"program": "FILE.py:Name"`` relative to
    the repository root).
``data_options(args) -> dict``
    Defaults for the data options this model needs (e.g. ``{"binarize": "dynamic"}`` for a
    Bernoulli VAE); the user's explicit ``--binarize``/``--value-range`` win.
``train(run, data, config, device) -> model``
    Fit the model, logging with ``run.log(step, ...)`` and checkpointing with
    ``run.save_checkpoint(state, step=...)``. When ``run`` already holds a checkpoint
    (``--resume``) continue from it: same seed, same data -> the same parameters, bit for
    bit, as an uninterrupted run on the CPU.
``load(run, data, device) -> model``
    Rebuild the fitted model from ``run.config`` and the latest checkpoint.
``figures(model, data, run) -> list[Path]`` (optional)
    Figures written into ``run.figures_dir``; every path returned exists.
``defaults_for_data(options, kind, shape) -> dict`` (optional)
    Fill the options left unset (``None``) that depend on the data (its kind, ``"image"``,
    ``"vector"`` or ``"toy"``, and per-example shape); return ``{option: {"value", "why"}}``
    for what it chose, which config.json records under ``defaults_from_data``.
``prepare_config(options) -> dict``, ``check(config, data, device)`` (optional)
    Rewrite the options before they are recorded, and refuse what cannot be trained before
    the run folder is written (user programs).

The returned models implement the protocol the evaluation layer sees (docs/design.md):
``sample(n)``, and where they can ``log_prob(x)``, ``elbo(x)``, ``iwae_bound(x, k)``,
``encode(x)``, ``decode(z)``.
"""

from __future__ import annotations

import argparse
import importlib
import os
from types import ModuleType
from typing import Any

from probgen.checks import positive_float, positive_int
from probgen.errors import ConfigError, suggest

__all__ = ["RECIPES", "Recipe", "RecipeConfig", "Option", "option", "register", "get_recipe",
           "add_recipe_arguments", "load_model_state", "resume_epochs", "epoch_checkpoint",
           "record_progress", "cosine_lr", "schedule_fraction", "fill_budget", "UNBOUNDED_LENGTH",
           "MIN_DEFAULT_STEPS", "default_epochs", "resolve_epochs", "positive_int", "positive_float"]

TRAINS_BY_CHOICES = ("epochs", "steps", None)


# ----------------------------------------------------------------------------- options
class Option:
    """One option of a recipe, as :func:`option` declares it."""

    __slots__ = ("default", "help", "flag", "aliases", "type", "choices", "metavar", "action",
                 "required")

    def __init__(self, default, help, flag, aliases, type, choices, metavar, action, required):
        self.default, self.help, self.flag, self.aliases = default, help, flag, tuple(aliases)
        self.type, self.choices, self.metavar = type, choices, metavar
        self.action, self.required = action, required

    def fresh_default(self):
        """The default; a list or dict one copied (instances must not share it)."""
        d = self.default
        return list(d) if isinstance(d, list) else dict(d) if isinstance(d, dict) else d


def option(default: Any = None, help: str = "", *, flag: str | None = None,
           aliases: tuple[str, ...] = (), type=None, choices=None, metavar: str | None = None,
           action=None, required: bool = False) -> Any:
    """A field of a recipe's :class:`RecipeConfig`: its default, help text and flag.

    ``flag`` defaults to ``--`` and the field's name with ``-`` for ``_``; ``aliases`` are
    further flags; ``type``, ``choices``, ``metavar``, ``required`` and ``action`` (a string
    such as ``"store_true"`` or an ``argparse.Action`` class) are argparse's. A ``False``
    default makes an on/off flag. ``%(default)s`` in the help shows the default
    (:func:`show_value`), so that it is stated once.
    """
    return Option(default, help, flag, aliases, type, choices, metavar, action, required)


class RecipeConfig:
    """Base of the recipes' options: a subclass is written as a dataclass is, one annotated
    field per option with :func:`option` as its default::

        class Config(RecipeConfig):
            epochs: int = option(20, "passes over the data (default %(default)s)", type=positive_int)

    and it is a :func:`dataclasses.dataclass` from its first instance on (``Config.read``,
    ``Config()``). Until then its options are read from the class alone, so that building the
    command line (``probgen --help``) does without the dataclass machinery and its imports.
    """

    __options__: dict[str, Option] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = {name: v for name, v in vars(cls).items() if isinstance(v, Option)}
        missing = [n for n in own if n not in cls.__dict__.get("__annotations__", {})]
        if missing:
            raise TypeError(f"{cls.__qualname__}: give {', '.join(missing)} a type annotation "
                            "(each option is a dataclass field).")
        cls.__options__ = {**cls.__options__, **own}

    def __new__(cls, *args, **kwargs):
        if "__dataclass_fields__" not in vars(cls):
            import dataclasses

            for name, o in cls.__options__.items():
                setattr(cls, name, dataclasses.field(default_factory=o.fresh_default,
                                                     metadata={"option": o}))
            dataclasses.dataclass(cls)
        return super().__new__(cls)

    @classmethod
    def options(cls) -> dict[str, Option]:
        """Field name -> its :class:`Option`, in the order they are declared."""
        return dict(cls.__options__)

    @classmethod
    def read(cls, config: dict):
        """The options of a run's ``config`` (its other keys ignored; missing ones at their
        defaults, as a config.json written by an older probgen may lack a newer option)."""
        return cls(**{k: v for k, v in config.items() if k in cls.__options__})

    @classmethod
    def complete(cls, config: dict) -> dict:
        """A copy of ``config`` with the options it lacks at their defaults."""
        return {**{n: o.fresh_default() for n, o in cls.__options__.items()}, **config}

    @classmethod
    def flags(cls) -> dict[str, str]:
        """Field name -> its main flag."""
        return {n: o.flag or "--" + n.replace("_", "-") for n, o in cls.__options__.items()}

    def as_dict(self) -> dict:
        return {n: getattr(self, n) for n in self.__options__}


def add_recipe_arguments(parser: argparse.ArgumentParser, recipe) -> None:
    """Add the flags of ``recipe``'s :class:`RecipeConfig` (a module, a :class:`Recipe`, or the
    class itself) to ``parser``, in the order of its fields."""
    config = recipe if isinstance(recipe, type) else recipe.Config
    flags = config.flags()
    for name, o in config.options().items():
        default = o.fresh_default()
        kw: dict[str, Any] = {"dest": name, "default": default,
                              "help": o.help.replace("%(default)s", show_value(default))}
        action = o.action
        if action is None and o.default is False:
            action = "store_true"
        if action is not None:
            kw["action"] = action
        if action != "store_true":
            for key in ("type", "choices", "metavar"):
                if getattr(o, key) is not None:
                    kw[key] = list(o.choices) if key == "choices" else getattr(o, key)
        if o.required:
            kw["required"] = True
        parser.add_argument(flags[name], *o.aliases, **kw)


def show_value(value) -> str:
    """A default as a person writes it: the shorter of ``0.05`` and ``5e-2`` (``1e-3`` rather
    than ``0.001``), lists comma-separated."""
    if isinstance(value, float) and value != 0:
        mantissa, exponent = f"{value:e}".split("e")
        short = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return short if len(short) < len(f"{value:g}") else f"{value:g}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


# ----------------------------------------------------------------------------- the registry
class Recipe:
    """A registered recipe: its name, its module and the fields of its contract."""

    __slots__ = ("name", "module")

    def __init__(self, name: str, module: ModuleType):
        self.name, self.module = name, module

    def __repr__(self) -> str:
        return f"Recipe({self.name!r}, {self.module.__name__})"

    @property
    def help(self) -> str:
        return self.module.HELP

    @property
    def Config(self) -> type:  # noqa: N802 - the class the module defines
        return self.module.Config

    @property
    def distributed(self) -> bool:
        return bool(getattr(self.module, "DISTRIBUTED", False))

    @property
    def trains_by(self) -> str | None:
        return getattr(self.module, "TRAINS_BY", None)

    @property
    def fills_budget(self) -> bool:
        return bool(getattr(self.module, "FILLS_BUDGET", False))

    @property
    def quick(self) -> bool:
        return bool(getattr(self.module, "QUICK", False))

    @property
    def smoke(self) -> dict:
        return dict(getattr(self.module, "SMOKE", {}))


# model name -> its recipe, in the order `probgen train --help` lists them
RECIPES: dict[str, Recipe] = {}


def register(module: ModuleType, names=None) -> list[str]:
    """Register the recipe ``module`` under ``names`` (default: its ``NAMES``, else the last
    part of its module name); returns the names. The module is checked against the contract:
    a missing part is a :class:`ConfigError` that names it."""
    missing = [a for a in ("HELP", "Config", "data_options", "train", "load")
               if not hasattr(module, a)]
    if missing:
        raise ConfigError(f"the recipe {module.__name__} lacks {', '.join(missing)}: see "
                          "probgen.recipes for what a recipe defines.")
    if not (isinstance(module.Config, type) and issubclass(module.Config, RecipeConfig)):
        raise ConfigError(f"the recipe {module.__name__}: Config must be a subclass of "
                          "probgen.recipes.RecipeConfig.")
    if getattr(module, "TRAINS_BY", None) not in TRAINS_BY_CHOICES:
        raise ConfigError(f"the recipe {module.__name__}: TRAINS_BY must be 'epochs', 'steps' "
                          f"or None; got {module.TRAINS_BY!r}.")
    names = tuple(names or getattr(module, "NAMES", None) or (module.__name__.rsplit(".", 1)[-1],))
    for name in names:
        RECIPES[name] = Recipe(name, module)
    return list(names)


DEFAULT_LIST_ORDER = 80


def _discover() -> None:
    # the package's own .py files (os.listdir: pkgutil.iter_modules imports inspect, which
    # would slow `probgen --help` down)
    names = sorted({f[:-3] for d in __path__ for f in os.listdir(d)
                    if f.endswith(".py") and not f.startswith("_")})
    modules = [importlib.import_module(f"{__name__}.{name}") for name in names]
    for module in sorted(modules, key=lambda m: (getattr(m, "LIST_ORDER", DEFAULT_LIST_ORDER),
                                                 m.__name__)):
        register(module)


def get_recipe(name: str) -> ModuleType:
    """The module of model ``name``'s recipe; an unknown name is an error that lists the known."""
    if name not in RECIPES:
        raise ConfigError(
            f"unknown model {name!r}.{suggest(name, RECIPES)} Known models: {', '.join(RECIPES)}."
        )
    return RECIPES[name].module


# ----------------------------------------------------------------------------- helpers
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
    scale = getattr(run, "lr_scale_on_resume", None)  # --resume --lr: the new rate from here on
    if scale and state.get("optimizer"):
        for group in state["optimizer"]["param_groups"]:
            group["lr"] *= scale
    return int(state["epoch"]), start_step, state["optimizer"], True


def epoch_checkpoint(run, model, extra=None):
    """The ``checkpoint`` hook of :func:`~probgen.inference.svi.fit_loss` for an epoch-based
    run: model, optimiser and epoch, in the layout :func:`resume_epochs` reads back; and,
    beside it, the run's progress record (:func:`record_progress`). ``extra() -> dict``, if
    given, adds entries of the recipe's own to the saved state (read back from
    ``run.load_checkpoint()["state"]``)."""

    def save(st) -> None:
        run.save_checkpoint({**(extra() if extra is not None else {}), "model": model.state_dict(),
                             "optimizer": st.optimizer.state_dict(), "epoch": st.epoch},
                            step=st.step)
        record_progress(run, epochs=st.epoch, steps=st.step)

    return save


UNBOUNDED_LENGTH = 1_000_000  # epochs or steps asked for when a time budget is what stops training

# A default length in epochs is at least this many steps: 20 epochs of MNIST are 5,500 steps of
# 200, but 20 epochs of sklearn's 1,258 digits were 140, after which the VAE decoded every
# image to the same mean digit (its latent unused; 2,800 steps gave distinct reconstructions).
MIN_DEFAULT_STEPS = 3000


def default_epochs(n_train: int, batch_size: int, epochs: int, *,
                   min_steps: int = MIN_DEFAULT_STEPS) -> int:
    """A recipe's default number of epochs on ``n_train`` training examples: ``epochs``, or
    as many as ``min_steps`` steps of ``batch_size`` take where the training set is smaller,
    so that a default run trains a model on a small data set about as long as on a large one."""
    import math

    return max(int(epochs), math.ceil(min_steps / _steps_per_epoch(n_train, batch_size)))


def _steps_per_epoch(n_train: int, batch_size: int) -> int:
    import math

    return max(1, math.ceil(int(n_train) / int(batch_size)))


def resolve_epochs(run, c, n_train: int, default: int) -> int:
    """The epochs a run of config ``c`` trains for: ``c.epochs`` where given, else
    :func:`default_epochs` of ``n_train`` examples in batches of ``c.batch_size``, recorded
    in config.json (what ``progress.json`` and ``--resume`` read) with the reason under
    ``defaults_from_data``; a default raised above ``default`` is said in the run's log."""
    if c.epochs is not None:
        return int(c.epochs)
    epochs = default_epochs(n_train, c.batch_size, default, min_steps=MIN_DEFAULT_STEPS)
    per_epoch = _steps_per_epoch(n_train, c.batch_size)
    batch = min(int(c.batch_size), int(n_train))  # no batch holds more than the training set
    why = (f"{default} passes, or as many as {MIN_DEFAULT_STEPS:,} steps of {batch} take "
           f"on {int(n_train):,} training examples")
    notes = {**(run.config.get("defaults_from_data") or {}), "epochs": {"value": epochs, "why": why}}
    run.config = {**run.config, "epochs": epochs, "defaults_from_data": notes}
    run.write_json("config.json", run.config)
    if epochs > default and getattr(run, "writer", True):
        print(f"{epochs:,} epochs: the default of {default} passes over {int(n_train):,} training "
              f"examples would be {default * per_epoch:,} steps of {batch}, and a default run "
              f"takes at least {MIN_DEFAULT_STEPS:,} (--epochs sets the length)", flush=True)
    return epochs


def default_epochs_words(epochs: int, min_steps: int = MIN_DEFAULT_STEPS) -> str:
    """The help text of an ``--epochs`` whose default is :func:`default_epochs`."""
    return (f"passes over the training set (default {epochs}, or as many as {min_steps:,} steps "
            "take on a smaller training set)")


def fill_budget(model: str, options: dict) -> None:
    """Ask ``model``'s recipe for :data:`UNBOUNDED_LENGTH` epochs or steps in ``options``
    (in place) when it ``FILLS_BUDGET``, so that a time budget, not the default length, stops
    it. The caller decides that a budget is set and no length was given."""
    recipe = RECIPES.get(model)
    if recipe is not None and recipe.fills_budget and recipe.trains_by:
        options[recipe.trains_by] = UNBOUNDED_LENGTH


def cosine_lr(lr: float, done: float, floor: float = 0.01) -> float:
    """A cosine from ``lr`` (``done`` = 0) down to ``lr * floor`` (``done`` >= 1)."""
    import math

    done = min(1.0, max(0.0, float(done)))
    return lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * done)))


def schedule_fraction(run, epoch: int, epochs: int, *, follow_budget: bool = True) -> float:
    """How far along its schedule a run is after ``epoch`` of ``epochs``: the larger of the
    fractions of epochs and of the run's time budget spent (``follow_budget`` and a budget
    set), so that a run stopped by its budget has annealed when it stops. With a budget the
    fraction depends on the wall clock, so such a run is not reproducible bit for bit."""
    import time

    done = min(epoch, epochs) / max(1, epochs)
    stop = getattr(run, "stop", None)
    budget = getattr(stop, "time_budget", None) if follow_budget else None
    if budget:
        done = max(done, (time.perf_counter() - stop.start) / float(budget))
    return min(1.0, done)


def record_progress(run, *, steps: int, epochs: int | None = None,
                    requested: int | None = None) -> None:
    """Write ``progress.json``: the epochs (for a recipe that trains by epochs) and steps the
    run has really completed (those of its checkpoint), beside the length asked for in
    config.json (``epochs``, else ``steps``), and why training stopped short of it when it did
    (a time budget or a signal). A run trained to a time budget asks for more than it runs;
    this record says how much it ran. ``requested`` replaces config.json's length where the
    fit has its own count (a closed form: 1 epoch; EM: the iterations it ran)."""
    unit, done_count = ("epochs", epochs) if epochs is not None else ("steps", steps)
    asked = requested if requested is not None else run.config.get(unit)
    stop = getattr(run, "stop", None)
    reason = stop.reason if stop is not None else None
    done = asked is not None and done_count >= asked
    run.write_json("progress.json", {
        "epochs_run": None if epochs is None else int(epochs), "steps_run": int(steps),
        f"{unit}_requested": asked, "finished": bool(done), "stopped_by": None if done else reason,
    })


_discover()
