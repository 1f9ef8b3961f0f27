"""Training, reloading and scoring runs from Python: what ``probgen train``, ``eval``,
``sample`` and ``compare`` call.

>>> import probgen
>>> trained = probgen.train("gmm", "grid25", "runs/gmm")           # doctest: +SKIP
>>> result = probgen.evaluate("runs/gmm")                           # doctest: +SKIP
>>> result["metrics"]["log_likelihood"], result["per_example"]["log_likelihood"].shape  # doctest: +SKIP

``train`` takes a built-in model's name (``"vae"``, ``"gmm"``, ...), a user program as
``"path/to/file.py:Name"``, or the program's class itself; the model's options as keyword
arguments (the command line's flags with ``_`` for ``-``: ``latent_dim=2``), checked as the
command line checks them. It writes the same run folder as ``probgen train`` and returns the
trained model with its run and data (:class:`Trained`).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probgen import __version__
from probgen.errors import ConfigError, suggest

__all__ = ["train", "evaluate", "check_eval_out", "load_run", "load_run_data", "Trained", "recipe_options",
           "data_config", "describe_data", "deterministic_algorithms", "model_spec",
           "run_data_loader"]

# train()'s own keywords: everything else is an option of the model's recipe
COMMON_DEFAULTS: dict[str, Any] = dict(
    seed=0, device="auto", resume=False, overwrite=False, binarize=None, value_range=None,
    dequantize=None, bin_width=None, limit=None, time_budget=None, deterministic=False,
    figures=True, data_root=None, download=False, allow_changed_model=False,
    allow_changed_data=False, progress=True, argv=None, compare_signature=None, explicit=None,
)
# of those, what config.json records beside the model's options
_RECORDED = ("seed", "limit", "time_budget", "deterministic", "data_root")


@dataclass
class Trained:
    """What :func:`train` returns."""

    model: Any                 # the fitted model (for a user program: a probgen.programs.Program)
    run: Any                   # the probgen.runs.Run of the run folder
    data: Any                  # the probgen.data.Dataset it was trained on
    seconds: float             # training time of this call (a resumed run adds the earlier time)
    stopped_by: str | None = None   # the signal that stopped it early, if one did
    figures: list = field(default_factory=list)

    @property
    def config(self) -> dict:
        return self.run.config


class _OptionParser(argparse.ArgumentParser):
    """A recipe's flags for Python callers: errors are exceptions, not exits."""

    def error(self, message):  # noqa: D401 - argparse API
        raise ConfigError(f"{self.prog}: {message}")


def _recipe_parser(name: str, recipe) -> _OptionParser:
    from probgen.recipes import add_recipe_arguments

    p = _OptionParser(prog=f"probgen train {name}", add_help=False, allow_abbrev=False)
    add_recipe_arguments(p, recipe)
    return p


def recipe_options(name: str, options: dict | None = None) -> dict:
    """The options of model ``name`` (its defaults, then ``options``), checked by the same
    types and choices as ``probgen train NAME --...``."""
    from probgen.recipes import get_recipe

    parser = _recipe_parser(name, get_recipe(name))
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    argv: list[str] = []
    for key, value in (options or {}).items():
        dest = key.replace("-", "_")
        if dest not in actions:
            raise ConfigError(f"{name} has no option {key!r}.{suggest(dest, actions)} Its options: "
                              f"{', '.join(sorted(actions))}.")
        action, flag = actions[dest], actions[dest].option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            if value in (True, "true", "True", "1", "yes"):
                argv.append(flag)
            elif value not in (False, None, "false", "False", "0", "no"):
                raise ConfigError(f"{name}: option {key!r} is on or off (True/False); got {value!r}.")
        elif value is not None:
            if isinstance(value, list | tuple):
                value = ",".join(str(v) for v in value)
            argv += [flag, str(value)]
    return vars(parser.parse_args(argv))


def model_spec(model) -> tuple[str, dict]:
    """``(recipe name, extra options)`` of what :func:`train` was given: a built-in model's
    name, ``"path/to/file.py:Name"``, or a program class/function defined in a file."""
    from probgen.programs import is_program_spec

    if isinstance(model, str | Path):
        text = str(model)
        if is_program_spec(text):
            return "program", {"program": text}
        return text, {}
    if callable(getattr(model, "model", None)) or inspect.isclass(model) or inspect.isfunction(model):
        try:
            path = inspect.getsourcefile(model if inspect.isclass(model) or inspect.isfunction(model)
                                        else type(model))
        except TypeError:
            path = None
        name = getattr(model, "__qualname__", None) or type(model).__qualname__
        if not path or "." in name or "<" in name:
            raise ConfigError(
                f"{model!r} is not defined at the top level of a Python file, so a run could not "
                "reload it. Define the class in a file and pass it (or 'path/to/file.py:Name')."
            )
        return "program", {"program": f"{path}:{name}"}
    raise ConfigError(f"model must be a model name (e.g. 'vae'), 'path/to/file.py:Name' or a "
                      f"program class; got {model!r}.")


def data_name(data) -> str:
    """``data`` as a run records it: a data set name or a path, as text. An array in memory is
    refused with what to do, since a run folder must be able to read its data again
    (``eval``, ``sample``, ``--resume``)."""
    if isinstance(data, str):
        return data
    if isinstance(data, os.PathLike):
        return os.fspath(data)
    shape = getattr(data, "shape", None)
    what = f"{type(data).__module__}.{type(data).__name__}" + (f" of shape {tuple(shape)}" if shape is not None else "")
    raise ConfigError(
        f"data must be the name of a data set (`probgen datasets`) or the path of a file or folder "
        f"of data; got a {what}. Save an array first (numpy.save('x.npy', x), or torch.save) and "
        f"pass its path: the run records the path, so that eval, sample and --resume read the "
        f"same data.")


def describe_data(name: str, *, data_root=None, download: bool = False) -> tuple[str, tuple[int, ...]]:
    """``(kind, per-example shape)`` of a data set: from the registry for a named one, by
    loading it for the user's own."""
    from probgen.data import list_datasets, load_dataset

    for info in list_datasets():
        if info.name == name:
            return info.kind, tuple(info.shape)
    ds = load_dataset(name, root=data_root, download=download, limit=10)
    return ds.kind, tuple(ds.shape)


def data_config(options: dict, recipe, *, data: str | None = None, binarize: str | None = None,
                value_range=None, dequantize: str | None = None,
                bin_width: float | None = None) -> dict:
    """The data options of a run: the model's defaults, then the caller's explicit ones."""
    opts = {"binarize": "none", "value_range": None}
    opts.update(recipe.data_options(argparse.Namespace(data=data, **options)))
    if binarize is not None:
        opts["binarize"] = binarize
    if value_range is not None:
        if isinstance(value_range, str):
            value_range = value_range.split(",")
        opts["value_range"] = [float(v) for v in value_range]
    if binarize not in (None, "none") and dequantize is None:
        opts["dequantize"] = "none"  # asking for binary data means not the dequantized ones
    if dequantize is not None:
        opts["dequantize"] = dequantize
    if bin_width is not None:
        opts["bin_width"] = bin_width
    return opts


def load_run_data(config: dict, *, device="cpu", data_root=None, download=False):
    """The data set a run was trained on, with the same options and seed."""
    from probgen.data import load_dataset

    d = config["data_options"]
    return load_dataset(
        config["data"], root=data_root or config.get("data_root"), device=device,
        seed=config.get("seed", 0), value_range=d.get("value_range"), binarize=d["binarize"],
        limit=config.get("limit"), download=download, dequantize=d.get("dequantize", "none"),
        bin_width=d.get("bin_width"),
    )


def run_data_loader(config: dict, *, device="cpu", data_root=None):
    """``data options -> Dataset``: the data of a run loaded with other data options (the
    same data set, seed and limit), for estimators that score another representation."""
    def load(data_options: dict):
        return load_run_data({**config, "data_options": data_options}, device=device,
                             data_root=data_root)
    return load


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True):
    """Deterministic kernels only, inside the block (``probgen train --deterministic``).

    On the CPU probgen's training is already bit-for-bit reproducible for a seed; on CUDA
    some kernels (atomic adds in scatter/index and convolution backward passes, cuBLAS
    workspaces) are not, and this trades their speed for reproducibility. The previous
    settings come back on exit.
    """
    if not enabled:
        yield
        return
    import os

    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
              torch.backends.cudnn.deterministic)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[1:]


def train(model, data: str, out, *, seed: int = 0, device: str = "auto", resume: bool = False,
          overwrite: bool = False, binarize: str | None = None, value_range=None,
          dequantize: str | None = None, bin_width: float | None = None,
          limit: int | None = None, time_budget: float | None = None, deterministic: bool = False,
          figures: bool = True, data_root: str | None = None, download: bool = False,
          allow_changed_model: bool = False, allow_changed_data: bool = False,
          progress: bool = True, compare_signature: dict | None = None, **options) -> Trained:
    """Train ``model`` on ``data`` into the run folder ``out``, as ``probgen train`` does.

    Parameters
    ----------
    model : str or class
        ``"vae"``, ``"gmm"``, ... (see ``probgen train --help``), ``"path/to/file.py:Name"``,
        or a program class (with ``model`` and ``guide``) defined at the top level of a file.
    data : str or path
        A data set name or a path to the user's data (an array in memory is refused: save it
        and give its path, which the run records).
    out : path
        The run folder.
    **options
        The model's options, named as its flags with ``_`` for ``-`` (``epochs=5``,
        ``latent_dim=2``); unset ones take their defaults, which follow the data where the
        model says so.

    The other keywords are ``probgen train``'s flags (``progress=False`` is ``--quiet``). A program is checked before anything is
    written (its file, its name, its data plate and observed site, its guide's latents).
    """
    from probgen.programs import refuse_while_importing

    refuse_while_importing("probgen.train")
    name, extra = model_spec(model)
    data = data_name(data)
    from probgen.recipes import get_recipe

    get_recipe(name)  # an unknown name fails here
    opts = recipe_options(name, {**extra, **options})
    common = dict(seed=seed, device=device, resume=resume, overwrite=overwrite, binarize=binarize,
                  value_range=value_range, dequantize=dequantize, bin_width=bin_width, limit=limit,
                  time_budget=time_budget, deterministic=deterministic, figures=figures,
                  data_root=data_root, download=download, allow_changed_model=allow_changed_model,
                  allow_changed_data=allow_changed_data, progress=progress,
                  compare_signature=compare_signature, explicit=set(extra) | set(options))
    return train_with_options(name, data, out, common, opts)


def resume(run_dir, *, device: str = "auto", data_root: str | None = None, progress: bool = True,
           allow_changed_model: bool = False, allow_changed_data: bool = False) -> Trained:
    """Continue the run in ``run_dir`` from its checkpoint with the options it was started
    with, as ``probgen train MODEL ... --resume`` does."""
    from probgen.runs import Run

    cfg = Run.open(run_dir, writer=False).config
    name = cfg["model"]
    known = recipe_options(name)
    options = {k: cfg[k] for k in known if k in cfg}
    if isinstance(cfg.get("program"), dict):  # a user program: its file and name
        options["program"] = f"{cfg['program']['file']}:{cfg['program']['name']}"
    d = cfg.get("data_options", {})
    common = dict(seed=cfg.get("seed", 0), device=device, resume=True, limit=cfg.get("limit"),
                  time_budget=cfg.get("time_budget"), deterministic=cfg.get("deterministic", False),
                  data_root=data_root or cfg.get("data_root"), binarize=d.get("binarize"),
                  value_range=d.get("value_range"), dequantize=d.get("dequantize"),
                  bin_width=d.get("bin_width"), allow_changed_model=allow_changed_model,
                  allow_changed_data=allow_changed_data, progress=progress,
                  compare_signature=cfg.get("compare"))
    return train_with_options(name, cfg["data"], run_dir, common, options)


def explicit_options(name: str, argv) -> set[str]:
    """The options of model ``name`` that the command line ``argv`` sets by a flag."""
    from probgen.recipes import get_recipe

    config = get_recipe(name).Config
    flags = {}
    for field_name, opt in config.options().items():
        for flag in (config.flags()[field_name], *opt.aliases):
            flags[flag] = field_name
    return {flags[t.split("=", 1)[0]] for t in argv if t.split("=", 1)[0] in flags}


# options a resumed run takes from the command that resumes it, when that command sets them
_RESUMABLE = ("on_nan",)
_RESUMABLE_BY_EPOCH = ("lr",)  # the epoch recipes' optimisers take a new rate


def resume_changes(name: str, recipe, old: dict, config: dict, explicit, out) -> dict:
    """The options that a command resuming the run ``old`` sets (``explicit``) to other values
    than the run's: ``{name: (old value, new value)}`` for those a resumed run takes (the NaN
    policy; the learning rate of an epoch recipe); a ConfigError naming the others, which a
    checkpoint cannot follow (an architecture, a likelihood, a batch size: the run keeps what
    it was trained with)."""
    skip = ("epochs", "steps", "program", "allow_changed_model")
    differ = {}
    for key in sorted(explicit):
        if key in skip or key not in config:
            continue
        new = json.loads(json.dumps(config[key]))
        if new != old.get(key):
            differ[key] = (old.get(key), config[key])
    allowed = set(_RESUMABLE) | (set(_RESUMABLE_BY_EPOCH)
                                 if getattr(recipe, "TRAINS_BY", None) == "epochs" else set())
    refused = {k: v for k, v in differ.items() if k not in allowed}
    if refused:
        asked = ", ".join(f"{k}={v[1]!r}" for k, v in refused.items())
        had = ", ".join(f"{k}={v[0]!r}" for k, v in refused.items())
        takes = ", ".join(["--epochs/--steps", "--time-budget"] + [
            "--" + k.replace("_", "-") for k in sorted(allowed) if k in config])
        raise ConfigError(
            f"cannot resume {out} with {asked}: the run was trained with {had}, and its "
            f"checkpoint holds a model and optimiser made that way. A resumed run takes {takes} "
            f"from the command; drop the others, or start a new run (another --out, or "
            f"--overwrite).")
    return differ


def defaults_from_data(name: str, recipe, options: dict, data: str, common: dict) -> dict:
    """Fill the options a recipe lets follow the data; return what was chosen and why."""
    hook = getattr(recipe, "defaults_for_data", None)
    if hook is None:
        return {}
    kind, shape = describe_data(data, data_root=common.get("data_root"), download=common.get("download", False))
    notes = hook(options, kind, shape) or {}
    return {k: {**v, "data": f"{kind} data of shape {tuple(shape)}"} for k, v in notes.items()}


def train_with_options(name: str, data: str, out, common: dict, options: dict, *, device=None,
                       quiet: bool = False) -> Trained:
    """:func:`train` once the options are parsed (the command line enters here)."""
    from probgen import distributed as pdist
    from probgen.errors import DivergedError
    from probgen.recipes import get_recipe
    from probgen.runs import Run, StopControl, elastic_restart, resolve_device, seed_everything

    common = {**COMMON_DEFAULTS, **common}
    if common["time_budget"] is not None:
        from probgen.checks import check_positive_float

        check_positive_float("time_budget (seconds)", common["time_budget"])
    recipe = get_recipe(name)
    options = dict(options)
    options.pop("allow_changed_model", None)
    device = device if device is not None else resolve_device(common["device"])
    out = Path(out)
    notes = defaults_from_data(name, recipe, options, data, common)
    prepare = getattr(recipe, "prepare_config", None)
    if prepare is not None:
        options = prepare(options)
    dist = pdist.info()
    config = {
        "model": name,
        "data": data,
        "data_options": data_config(options, recipe, data=data, binarize=common["binarize"],
                                    value_range=common["value_range"],
                                    dequantize=common["dequantize"], bin_width=common["bin_width"]),
        **{k: common[k] for k in _RECORDED},
        **options,
        "world_size": dist.world_size,
        "probgen_version": __version__,
    }
    if common["argv"] is not None:
        config["argv"] = list(common["argv"])
    if common["compare_signature"] is not None:
        config["compare"] = common["compare_signature"]
    if notes:
        config["defaults_from_data"] = notes
    if elastic_restart(out):  # torchrun restarted the group: continue from the checkpoint
        common["resume"], common["overwrite"] = True, False
    old_cfg = out / "config.json"
    changes = {}
    explicit = common.get("explicit")
    if explicit is None and common["argv"] is not None:
        explicit = explicit_options(name, common["argv"])
    if common["resume"] and old_cfg.exists() and explicit:
        try:
            old = json.loads(old_cfg.read_text())
        except (OSError, json.JSONDecodeError):
            old = None  # Run.create says what is wrong with the file
        if isinstance(old, dict) and old.get("model") == name:
            changes = resume_changes(name, recipe, old, config, explicit, out)
            if changes:
                config["_resume_changes"] = sorted(changes)
    if common["resume"] and old_cfg.exists() and "program" in config:
        from probgen.programs import check_unchanged

        with contextlib.suppress(json.JSONDecodeError):
            check_unchanged(json.loads(old_cfg.read_text()), allow_changed=common["allow_changed_model"])
    data_obj = None
    if hasattr(recipe, "check") and not (common["resume"] and old_cfg.exists()):
        # everything a program would be refused for, before the run folder is written
        data_obj = load_run_data(config, device=device, data_root=common["data_root"],
                                 download=common["download"])
        recipe.check(config, data_obj, device)
    # rank 0 creates (or checks) the folder; the others read it and write nothing
    run = pdist.share_outcome(Run.create, out, config, resume=common["resume"],
                              overwrite=common["overwrite"])
    if run is None:
        run = Run.open(out, writer=False, resumed_with=config if common["resume"] else None)
    run.progress = dist.is_main and common["progress"]  # the recipes' progress bars
    if "lr" in changes and changes["lr"][0]:
        run.lr_scale_on_resume = float(changes["lr"][1]) / float(changes["lr"][0])
    if changes and run.writer and not quiet:
        print(f"{name}: resuming with " + ", ".join(f"{k}={v[1]!r} (was {v[0]!r})"
                                                    for k, v in changes.items()), flush=True)
    if notes and run.writer and not quiet:
        chosen = "; ".join(f"{k}={v['value']} ({v['why']})" for k, v in notes.items())
        print(f"{name}: defaults for {next(iter(notes.values()))['data']}: {chosen}", flush=True)
    seed_everything(run.config["seed"])
    same = ("data", "data_options", "seed", "limit")
    if data_obj is None or any(run.config.get(k) != config.get(k) for k in same):
        data_obj = load_run_data(run.config, device=device, data_root=common["data_root"],
                                 download=common["download"])
    pdist.share_outcome(run.check_data, data_obj, allow_changed=common["allow_changed_data"],
                        action="train")
    few = data_obj.few_valued_note() if run.writer and not quiet else None
    if few:
        print(f"{name}: note: {few}.", flush=True)

    t0 = time.perf_counter()
    with StopControl(common["time_budget"]) as run.stop, deterministic_algorithms(common["deterministic"]):
        try:
            model = recipe.train(run, data_obj, run.config, device)
        except DivergedError as e:
            ckpt = run.checkpoint_path
            lower = (" (and, say, a lower --lr)" if getattr(recipe, "TRAINS_BY", None) == "epochs"
                     else "")
            last = (f"The last good checkpoint is {ckpt}: continue from it with --resume{lower}."
                    if ckpt.exists() else
                    "No checkpoint was written before it: start again with a lower --lr.")
            raise DivergedError(f"{e} {last} On the command line, --on-nan skip skips such "
                                "batches.") from e
    seconds = time.perf_counter() - t0
    result = Trained(model=model, run=run, data=data_obj, seconds=seconds, stopped_by=run.stop.signal_name)
    if run.stop.signal_name:
        if dist.is_main:
            print(f"stopped cleanly on {run.stop.signal_name}; the checkpoint in "
                  f"{run.checkpoint_path} holds the last step. Continue with --resume.", file=sys.stderr)
        return result
    if not dist.is_main:
        return result
    previous = run.path / "train.json"
    total = seconds
    if common["resume"] and previous.exists():
        total += json.loads(previous.read_text()).get("seconds", 0.0)
    run.write_json("train.json", {"seconds": total, "device": str(device),
                                  "processes": dist.world_size})
    run.mark_completed({k: run.config.get(k) for k in ("epochs", "steps", "max_iter", "time_budget")},
                       stopped_by=run.stop.reason)
    where = f" in {dist.world_size} processes" if dist.distributed else ""
    if not quiet:
        label = f"{run.config['program']['name']} (program)" if "program" in run.config else name
        print(f"trained {label} on {data}{where} in {seconds:.1f} s -> {run.path}")
    if common["figures"] and hasattr(recipe, "figures"):
        result.figures = list(recipe.figures(model, data_obj, run) or [])
        if result.figures and not quiet:
            print(f"figures: {run.figures_dir}")
    return result


def load_run(run_dir, *, device="auto", data_root=None, download: bool = False,
             allow_changed_model: bool = False, allow_changed_data: bool = False,
             lock: bool = False, action: str = "eval"):
    """``(run, data, model)`` of a trained run folder, the model rebuilt from its checkpoint.

    ``lock`` takes the folder's writer lock (for a caller that writes into it); the data are
    checked against the run's fingerprint (a change is refused unless ``allow_changed_data``,
    and then recorded under ``action``)."""
    from probgen.recipes import RECIPES, get_recipe
    from probgen.runs import Run, resolve_device

    run = Run.open(run_dir, lock=lock)
    if run.config.get("model") not in RECIPES:
        raise ConfigError(f"{run_dir} holds a {run.config.get('model')!r} run, which this "
                          f"probgen does not know (known: {', '.join(RECIPES)}).")
    if "program" in run.config:
        from probgen.programs import check_unchanged

        check_unchanged(run.config, allow_changed=allow_changed_model)
    recipe = get_recipe(run.config["model"])
    device = resolve_device(device) if not hasattr(device, "type") else device
    data = load_run_data(run.config, device=device, data_root=data_root, download=download)
    run.data_changes = run.check_data(data, allow_changed=allow_changed_data, action=action)
    model = recipe.load(run, data, device)
    return run, data, model


def check_eval_out(path: Path, overwrite: bool, *, explicit: bool) -> None:
    """Refuse, before any work, to replace an evaluation or to write where it cannot."""
    if explicit and path.is_dir():
        raise ConfigError(f"--out {path} is a folder; give a file name, e.g. {path / 'eval.json'}.")
    if explicit and not path.parent.is_dir():
        raise ConfigError(f"the folder of --out {path} does not exist; create it first.")
    if path.is_file() and not overwrite:
        raise ConfigError(f"{path} already holds an evaluation; pass --overwrite to replace it, "
                          "or --out FILE to write the new one elsewhere.")


def evaluate(target, data=None, *, split: str = "test", n_samples: int | None = None,
             limit: int | None = None, device="auto", data_root=None,
             seed: int | None = 0, allow_changed_model: bool = False,
             allow_changed_data: bool = False, write: bool = True, out=None,
             model_name: str | None = None, progress: bool = False,
             announce: bool = False, **options) -> dict:
    """Score a run folder (``target`` a path; writes its eval.json) or a model object on
    ``data`` (a Dataset or a data set name), with every metric the model allows.

    ``options`` are the estimators' options (:mod:`probgen.eval.registry`: ``k=5000``,
    ``ais=True``, ``ais_steps=500``, ``parzen=True``, ...; ``probgen eval``'s flags).

    ``seed`` seeds the Monte Carlo draws and samples (``None``: leave the RNGs as they are);
    ``write`` writes a run's results to ``out`` (default RUN_DIR/eval.json, under the folder's
    writer lock; elsewhere the run folder is only read); ``progress``
    draws bars on a terminal; ``announce`` prints what is evaluated first.

    Returns eval.json's dict with ``"per_example"`` added: the per-example values (tensors)
    of the likelihoods and bounds, for paired comparisons.
    """
    from probgen.programs import refuse_while_importing

    refuse_while_importing("probgen.evaluate")
    from probgen.eval import evaluate as eval_model
    from probgen.runs import seed_everything

    run = reload = None
    if isinstance(target, str | Path):
        run, data_obj, model = load_run(target, device=device, data_root=data_root,
                                        allow_changed_model=allow_changed_model,
                                        allow_changed_data=allow_changed_data,
                                        lock=write and out is None)
        reload = run_data_loader(run.config, device=data_obj.test.device, data_root=data_root)
        model_name = model_name or run.config["model"]
        if run.config["model"] == "program":
            model_name = run.config["program"]["name"]
    else:
        model, data_obj = target, data
        if data_obj is None:
            raise ConfigError("evaluate(model, data): give the data to score the model on (a "
                              "Dataset or a data set name).")
        if isinstance(data_obj, str):
            from probgen.data import load_dataset

            data_obj = load_dataset(data_obj, root=data_root)
    if announce:
        n = data_obj.split(split).shape[0]
        n = n if limit is None else min(n, limit)
        where = f" ({run.path})" if run is not None else ""
        print(f"evaluating {model_name or type(model).__name__}{where} on {data_obj.name}, {split} "
              f"split, n={n}, seed {seed}", flush=True)
    if seed is not None:
        seed_everything(seed)  # the same Monte Carlo draws and samples on every evaluation
    per_example: dict = {}
    t0 = time.perf_counter()
    from probgen.programs import own_params

    with own_params(model):
        result = eval_model(model, data_obj, split=split, n_samples=n_samples, limit=limit,
                            model_name=model_name, per_example=per_example, progress=progress,
                            reload=reload, **options)
    seconds = time.perf_counter() - t0
    if seed is not None:
        result["seed"] = seed
    if run is not None and getattr(run, "data_changes", None):
        result["data_changes"] = run.data_changes
    if run is not None and write:
        from probgen.runs import atomic_write_json

        if out is None:
            run.write_json("eval.json", result)
        else:
            atomic_write_json(Path(out), result)
    return {**result, "per_example": per_example, "eval_seconds": seconds}
