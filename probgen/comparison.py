"""``probgen compare``: explicit against implicit density estimators on the same data.

Each model is trained into its own run folder (or an existing run is reused), kept in memory,
and scored by the same evaluation code on the same test split. Built-in models and the
user's own programs (``path/to/file.py:Name``) sit in the same table; each takes its options
in parentheses (``vae(likelihood=gaussian,latent_dim=2)``) and otherwise the defaults of its
data. The result is one table with a
row per model and a column per metric, each cell a value with its standard error or a blank
with the reason; the lecture's VAE-against-GAN comparison filled with measured values; paired
differences of per-example log-likelihoods; and a report a person reads
(``results.json``, ``report.md``, ``report.html`` with its figures).

The columns, the estimators that fill them and their options are the tables of
:mod:`probgen.eval.registry`; ``compare(..., k=200, decoder_ais_images=50)`` and the flags of
``probgen compare`` set the options (``results.json``'s ``estimator_options``).

One likelihood per representation
---------------------------------
``results["models"][NAME]["likelihoods"]`` holds, for each representation the row was scored
on, its most trusted likelihood there (:func:`likelihoods`)::

    {"binary" | "dequantized-8bit" | "continuous" | "raw-pixels" | ...: {
        "metric": key in results["models"][NAME]["metrics"] ("log_likelihood", "ais", "iwae",
                  "elbo", "decoder_ais", "parzen"),
        "value", "stderr": mean nats per example and its standard error over examples,
        "unit": "nats",
        "bits_per_dim", "bits_per_dim_stderr": -value / (D ln 2) (binary and dequantized; else None),
        "estimator": "exact" | "ais" | "iwae-K" | "elbo" | "parzen" (the estimate of log p; on
                     dequantized data the estimate inside the dequantization bound),
        "inner_estimator", "bound": on dequantized data, the estimate again and
                     "dequantization bound",
        "n": test examples scored,
        "scored": {"split", "n", "sha256", "bin_width", "value_range"}: which values were scored,
        "last_resort": true for a Parzen estimate (only when the row has nothing else),
        "observation_model", "caveat", "bdmc": for the AIS of a decoder with a Gaussian
                     observation model (the GAN's likelihood), what was scored and its BDMC gap}}

The preference is the metric table's (:func:`probgen.eval.registry.likelihood_preference`):
exact > AIS > IWAE-k > ELBO > AIS of the decoder with a Gaussian observation model (a density
built from the decoder, not the model's own likelihood) > Parzen. ``paired_differences``
pairs every two rows with an entry on the same representation that scored the same test
values (:func:`_paired`), each with the entry above; ``estimator_costs[NAME][metric]`` records
what an expensive estimate cost (seconds, steps, chains, examples).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from probgen.errors import ConfigError, DataError
from probgen.report import REFERENCE_ROW_NAME, figure_sample_count, scoring_samples

# and COLUMNS, read from the table of metrics when asked for
__all__ = ["compare", "columns", "likelihoods", "likelihood_preference", "CompareSpec", "parse_models",
           "parse_model_item", "training_order"]


def __getattr__(name: str):
    # COLUMNS is read from the table of metrics when asked for, so that a metric registered
    # after this module was imported is a column too
    if name == "COLUMNS":
        return columns()
    raise AttributeError(f"module 'probgen.comparison' has no attribute {name!r}")


def columns() -> list[tuple[str, str, str | None]]:
    """The table's columns, in order: ``(metric key in eval.json, column title, better)``, from
    :func:`probgen.eval.registry.columns`."""
    from probgen.eval import registry

    return registry.columns()


@dataclass(init=False)
class CompareSpec:
    """What to compare: one data set, several models, a training budget.

    ``models`` holds model names (``"vae"``), user programs (``"path/to/file.py:Name"``) or
    program classes, each optionally with its options in parentheses (``"vae(likelihood=
    gaussian,latent_dim=2)"``; see :func:`parse_models`); ``model_options`` maps a row's name
    to more options (Python values). ``runs`` maps a row's name to a trained run folder to
    score instead of training.

    Every other keyword is an estimator's option (:mod:`probgen.eval.registry`: ``k=200``,
    ``ais=True``, ``decoder_ais_images=50``, ...); ``options`` holds them all, unset ones at
    compare's defaults.
    """

    data: str
    models: list
    out: Path
    budget_minutes: float = 5.0
    runs: dict[str, Path] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    data_root: str | None = None
    limit: int | None = None
    eval_limit: int | None = None
    # the data's quantisation, for the rows that model values (not those that binarise them):
    # as `probgen train --dequantize/--bin-width`
    dequantize: str | None = None
    bin_width: float | None = None
    model_options: dict[str, dict] = field(default_factory=dict)
    overwrite: bool = False
    allow_changed_model: bool = False
    allow_changed_data: bool = False
    quiet: bool = False  # no progress bars (they are drawn on a terminal only)
    model_choice: bool = True  # choose the number of mixture components beside a "gmm" row
    options: dict = field(default_factory=dict)

    def __init__(self, data: str, models, out, **kwargs):
        from dataclasses import MISSING, fields

        from probgen.eval import registry

        for f in fields(self)[3:]:
            if f.name in kwargs:
                setattr(self, f.name, kwargs.pop(f.name))
            else:
                setattr(self, f.name, f.default if f.default is not MISSING else f.default_factory())
        self.data, self.models, self.out = data, models, Path(out)
        self.options = registry.resolve_options({**self.options, **kwargs}, "compare")


@dataclass
class ModelEntry:
    """One row of a comparison: its name in the table, the model and its options."""

    name: str
    model: object          # a recipe name, "file.py:Name", or a program class
    options: dict
    weight: float = 1.0    # its part of the training budget, relative to the other rows


def _budget_weight(row: str, value) -> float:
    """The ``weight=W`` of a row: a positive number."""
    try:
        w = float(value)
    except (TypeError, ValueError):
        w = math.nan
    if not (math.isfinite(w) and w > 0):
        raise ConfigError(f"{row}(weight={value}): a row's weight is its part of the training "
                          "budget relative to the others (default 1), a positive number, e.g. "
                          "gan(weight=2) for twice the share of a row of weight 1.")
    return w


def _split_top(text: str, sep: str = ",") -> list[str]:
    """``text`` split at ``sep`` outside parentheses and brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced parentheses in {text!r}.")
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth:
        raise ConfigError(f"unbalanced parentheses in {text!r}.")
    return [*parts, cur]


def parse_model_item(text: str) -> tuple[str, dict]:
    """``"vae(likelihood=gaussian,latent_dim=2)"`` -> ``("vae", {"likelihood": "gaussian",
    "latent_dim": "2"})``; a list value goes in brackets: ``hidden=[512,256]``."""
    text = text.strip()
    if "(" not in text:
        return text, {}
    if not text.endswith(")"):
        raise ConfigError(f"model {text!r}: options go in parentheses at the end, e.g. "
                          "vae(latent_dim=2,likelihood=gaussian).")
    head, inner = text.split("(", 1)
    opts = {}
    for item in _split_top(inner[:-1]):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"model {text!r}: each option is NAME=VALUE; got {item!r}.")
        k, v = item.split("=", 1)
        v = v.strip()
        if v.startswith("[") and v.endswith("]"):
            v = v[1:-1]
        opts[k.strip().replace("-", "_")] = v
    return head.strip(), opts


def parse_models(models) -> list[ModelEntry]:
    """Rows from ``--models`` (a comma-separated string) or a list of names, specs and classes."""
    from probgen.programs import is_program_spec, parse_program_spec
    from probgen.recipes import RECIPES

    items = _split_top(models) if isinstance(models, str) else list(models)
    entries: list[ModelEntry] = []
    for item in items:
        if isinstance(item, str):
            if not item.strip():
                continue
            head, opts = parse_model_item(item)
            if is_program_spec(head):
                name = parse_program_spec(head).name
            elif head in RECIPES and head != "program":
                name = head
            else:
                from probgen.errors import suggest

                known = [m for m in RECIPES if m != "program"]
                raise ConfigError(
                    f"unknown model(s) {head!r}.{suggest(head, known)} Known models: "
                    f"{', '.join(known)}; or your own program as path/to/file.py:Name."
                )
            model = head
        else:
            from probgen.training import model_spec

            model, opts = item, {}
            name = parse_program_spec(model_spec(item)[1]["program"]).name
        # rows differing only in case ("vae" and a program class "VAE") get names apart as
        # well: their run folders would be one folder on a case-insensitive file system
        base, i = name, 2
        while any(e.name.casefold() == name.casefold() for e in entries):
            name, i = f"{base}-{i}", i + 1
        entries.append(ModelEntry(name, model, opts))
    if not entries:
        raise ConfigError("--models names no model: give a comma-separated list, e.g. vae,gmm,gan.")
    return entries


# Which models get a length without end, so that their share of the budget is what stops them
# (FILLS_BUDGET), and which converge well inside any share and train first, so that the time
# they leave goes to the models after them (QUICK): fields of each recipe's contract
# (probgen.recipes).


def _recipe_of(entry: ModelEntry):
    from probgen.recipes import RECIPES
    from probgen.training import model_spec

    return RECIPES[model_spec(entry.model)[0]]


def _completed(run_dir: Path) -> bool:
    """A run folder whose training ended by its own budget (``config.json``'s ``completed``:
    not stopped by a signal, an error or a kill, nor resumed since)."""
    cfg = Path(run_dir) / "config.json"
    try:
        return bool(json.loads(cfg.read_text()).get("completed"))
    except (OSError, json.JSONDecodeError):
        return False


def _signature(e: ModelEntry, spec: CompareSpec) -> dict:
    """What a comparison's own run of row ``e`` was trained for: a completed run with the same
    signature in the same folder is reused instead of trained again."""
    sig = {"row": e.name, "model": str(e.model), "options": {k: str(v) for k, v in e.options.items()},
           "data": spec.data, "seed": spec.seed, "limit": spec.limit,
           "budget_minutes": spec.budget_minutes, "models": _model_items(spec.models)}
    if e.weight != 1.0:
        sig["weight"] = e.weight
    if spec.dequantize is not None or spec.bin_width is not None:
        sig["quantisation"] = {"dequantize": spec.dequantize, "bin_width": spec.bin_width}
    return sig


def _check_quantisation(entries: list[ModelEntry], spec: CompareSpec) -> None:
    """Load the data with the data options of each row that takes the comparison's
    ``dequantize``/``bin_width`` (once per distinct set), so that a bin width the data refuse
    stops the comparison before any model trains."""
    from probgen.training import load_run_data

    seen = []
    for e in entries:
        recipe_name, opts = _train_options(e)
        q = _quantisation(recipe_name, opts, spec)
        if not q:
            continue
        options = _data_options(recipe_name, opts, spec, **q)
        if options in seen:
            continue
        seen.append(options)
        config = {"data": spec.data, "seed": spec.seed, "limit": spec.limit, "data_options": options}
        try:
            load_run_data(config, data_root=spec.data_root)
        except DataError as err:
            raise ConfigError(f"--dequantize/--bin-width, for row {e.name}: {err}") from err


def _data_options(recipe_name: str, opts: dict, spec: CompareSpec, **quantisation) -> dict:
    """The data options row ``recipe_name``/``opts`` trains with: its model's defaults on this
    data (the VAE's likelihood is Bernoulli on images, Gaussian on vectors), then
    ``quantisation``."""
    from probgen.recipes import get_recipe
    from probgen.training import data_config, defaults_from_data, recipe_options

    recipe = get_recipe(recipe_name)
    full = recipe_options(recipe_name, opts)
    defaults_from_data(recipe_name, recipe, full, spec.data, {"data_root": spec.data_root})
    if hasattr(recipe, "prepare_config"):  # a program's options come from its file
        full = recipe.prepare_config(full)
    return data_config(full, recipe, data=spec.data, **quantisation)


def _quantisation(recipe_name: str, opts: dict, spec: CompareSpec) -> dict:
    """The ``dequantize``/``bin_width`` options a row trains with: the comparison's, for every
    row that models the values as they are. A row that binarises its data (a probability of
    0/1 pixels already) or rescales pixels to another range (the GAN's [-1, 1], whose
    decoder's AIS scores the dequantized pixels on its own) keeps its representation."""
    if spec.dequantize is None and spec.bin_width is None:
        return {}
    from probgen.training import describe_data

    options = _data_options(recipe_name, opts, spec)
    if options["binarize"] != "none":
        return {}
    kind, _ = describe_data(spec.data, data_root=spec.data_root)
    if kind == "image" and options.get("value_range") not in (None, [0.0, 1.0]):
        return {}
    return {"dequantize": spec.dequantize, "bin_width": spec.bin_width}


def _model_items(models) -> list[str]:
    """The rows of ``--models`` as written, one string each, whether given as one string
    (the command line) or as a list (Python)."""
    items = _split_top(models) if isinstance(models, str) else list(models)
    return [str(m).strip() for m in items]


def _same_signature(old, signature: dict, spec: CompareSpec) -> bool:
    """Whether a run's recorded ``compare`` signature is ``signature``. Runs written before
    the rows were recorded one string each hold ``--models`` as a list of its characters."""
    if old == signature:
        return True
    if not isinstance(old, dict) or not isinstance(spec.models, str):
        return False
    return {**old, "models": signature["models"]} == signature and old.get("models") == list(spec.models)


def compare(spec: CompareSpec | str | None = None, models=None, out=None, *, budget: float | None = None,
            **kwargs) -> dict:
    """Train (or reuse), evaluate and report every model; returns results.json's dict with,
    added, ``"trained"`` (row name -> the model, kept in memory) and ``"per_example"`` (row
    name -> per-example log-likelihoods and bounds, tensors).

    Call it with a :class:`CompareSpec`, or as ``compare(data, models, out, budget=MINUTES,
    **CompareSpec fields)``: ``probgen.compare("grid25", ["gmm", "vae(latent_dim=2)"], "cmp",
    budget=2)``.
    """
    from probgen.programs import refuse_while_importing

    refuse_while_importing("probgen.compare")
    if not isinstance(spec, CompareSpec):
        if spec is None or models is None or out is None:
            raise ConfigError("compare(data, models, out, budget=MINUTES, ...): give the data, the "
                              "models and the output folder (or one CompareSpec).")
        if budget is not None:
            kwargs["budget_minutes"] = budget
        from probgen.training import data_name

        spec = data_name(spec)
        try:
            spec = CompareSpec(spec, models, Path(out), **kwargs)
        except TypeError as e:
            raise ConfigError(f"compare: {e}") from e
    from probgen.checks import check_positive_float, check_positive_int
    from probgen.progress import write
    from probgen.training import recipe_options

    check_positive_float("budget (minutes)", spec.budget_minutes)
    for name in ("limit", "eval_limit"):
        if getattr(spec, name, None) is not None:
            check_positive_int(name, getattr(spec, name))
    out = Path(spec.out)
    entries = parse_models(spec.models)
    unknown_runs = set(spec.runs) - {e.name for e in entries}
    if unknown_runs:
        raise ConfigError(f"--runs names {', '.join(sorted(unknown_runs))}, which --models does not "
                          f"list (rows: {', '.join(e.name for e in entries)}).")
    for e in entries:  # every option is checked before anything trains
        e.options = {**e.options, **spec.model_options.get(e.name, {})}
        if "weight" in e.options:  # the row's part of the budget, not an option of its model
            e.weight = _budget_weight(e.name, e.options.pop("weight"))
        recipe_options(*_train_options(e))
        given = spec.runs.get(e.name)
        if given is not None and not (Path(given) / "config.json").exists():
            raise ConfigError(f"--runs {e.name}={given}: that folder holds no run (no config.json).")
        if given is not None:
            _check_given_data(e.name, Path(given), spec.data)
        if given is not None and not _completed(given) and \
                not (Path(given) / "checkpoints" / "latest.pt").exists():
            raise ConfigError(f"--runs {e.name}={given}: that run has not finished training and "
                              "has no checkpoint to resume from; train it again, or leave it out "
                              "of --runs to train it here.")
    if (out / "results.json").exists() and not spec.overwrite:
        raise ConfigError(f"{out} already holds a comparison (results.json). Pass --overwrite to "
                          "replace it, or choose another --out.")
    budget_s = 60.0 * spec.budget_minutes
    to_train = [e for e in entries if e.name not in spec.runs]
    order = training_order(to_train)
    from probgen.recipes import get_recipe
    from probgen.training import defaults_from_data

    for e in to_train:  # what a model refuses on this data, before any model trains
        recipe_name, opts = _train_options(e)
        defaults_from_data(recipe_name, get_recipe(recipe_name), recipe_options(recipe_name, opts),
                            spec.data, {"data_root": spec.data_root})
    _check_quantisation(to_train, spec)
    for e in order:  # a program is checked before any model trains or --out is written
        if _recipe_of(e).name == "program":
            _check_program_entry(e, spec)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)

    from probgen.progress import bar as progress_bar

    # the model-choice step (K of a mixture, beside a "gmm" row) runs right after the gmm row
    # trains (the quick ones train first) and takes a share of what is left of the budget like
    # one more model, so that the time it leaves goes to the models after it
    choice_pending = spec.model_choice and any(e.name == "gmm" for e in entries)
    choice = None
    # one bar over the stages: each model's training and scoring, the model choice, then the
    # reference row
    stages = progress_bar(len(order) + len(entries) + 1 + choice_pending, desc="compare",
                          unit="stage", progress=not spec.quiet)
    trained: dict[str, dict] = {}
    training: dict[str, str] = {}  # row -> what was done to have its run: trained, reused, resumed
    spent = 0.0
    timing = {"budget_s": budget_s, "train_s": {}, "share_s": {}, "score_s": {}}
    if any(e.weight != 1.0 for e in entries):
        timing["weights"] = {e.name: e.weight for e in entries}
    for i, e in enumerate(order):
        # what is left of the budget, split among the rows still to train by their weights
        share = max(1.0, (budget_s - spent) * e.weight / sum(r.weight for r in order[i:]))
        try:
            trained[e.name] = _train_entry(e, spec, out / "runs" / e.name, share)
            training[e.name] = trained[e.name]["how"]
        except BaseException:
            stages.close()
            raise
        stages.update(1)
        spent += trained[e.name]["seconds"]
        timing["share_s"][e.name] = share
        timing["train_s"][e.name] = trained[e.name]["seconds"]
        timing.setdefault("data_and_figures_s", {})[e.name] = trained[e.name]["other_seconds"]
        if choice_pending and e.name == "gmm":
            choice = _model_choice(trained[e.name]["result"].data, spec,
                                   (budget_s - spent) / (1 + sum(r.weight for r in order[i + 1:])),
                                   timing)
            spent += timing["model_choice_s"]
            choice_pending = False
            stages.update(1)

    rows: dict[str, dict] = {}
    for e in entries:
        t0 = time.perf_counter()
        if e.name in trained:
            write(f"[compare] scoring {e.name}")
            rows[e.name] = _evaluate_model(e.name, trained[e.name], spec)
        else:
            training[e.name] = _finish_given(e.name, Path(spec.runs[e.name]), spec)
            write(f"[compare] scoring {e.name} ({spec.runs[e.name]})")
            rows[e.name] = _evaluate_run(Path(spec.runs[e.name]), spec, name=e.name)
        timing["score_s"][e.name] = time.perf_counter() - t0
        stages.update(1)
        write(f"[compare] scored {e.name} in {timing['score_s'][e.name]:.0f} s")

    results = {
        "data": spec.data,
        "split": "test",
        "models": {n: r["eval"] for n, r in rows.items()},
        "runs": {n: str(r["run"]) for n, r in rows.items()},
        "data_options": {n: r["data_options"] for n, r in rows.items()},
        "training": training,
    }
    if rows:
        write("[compare] scoring the reference row (validation data as samples)")
        t0 = time.perf_counter()
        first, row = next(iter(rows.items()))
        results["models"][REFERENCE_ROW] = _reference(row["data"], spec)
        results["reference"] = {"representation_of": first, "data_options": row["data_options"],
                                "n": sample_count(row["data"])}
        few = row["data"].few_valued_note()
        if few:  # said beside the likelihoods of continuous data (probgen.verdict)
            results["data_caveats"] = {"continuous": few}
        timing["score_s"][REFERENCE_ROW] = time.perf_counter() - t0
    stages.update(1)
    stages.close()
    results["estimator_options"] = spec.options
    results["estimator_costs"] = {n: {k: m["extra"]["cost"] for k, m in r["eval"]["metrics"].items()
                                      if isinstance(m.get("extra"), dict) and "cost" in m["extra"]}
                                  for n, r in rows.items()}
    results["paired_differences"] = _paired(rows, out)
    results["vae_vs_gan"] = _lecture_table(rows, spec)
    if choice_pending:  # the gmm row came from --runs: the step gets what training left
        choice = _model_choice(rows["gmm"]["data"], spec, budget_s - spent, timing)
        spent += timing["model_choice_s"]
    if choice is None and "gmm" in rows and not spec.model_choice:
        from probgen.model_choice.record import skipped

        choice = skipped("--no-model-choice was given")
    results["model_choice"] = choice
    timing["train_total_s"] = sum(timing["train_s"].values())
    timing["score_total_s"] = sum(timing["score_s"].values())
    timing["note"] = ("the budget bounds training and the choice of the number of mixture "
                      "components: each model trains for at most its share, the budget left "
                      "over divided among the models still to train and that choice (the quick "
                      "ones first, those that train until their share is spent last); loading "
                      "data, drawing each run's figures and scoring are not counted in it")
    results["time"] = timing
    from probgen import report, verdict

    # each row's training effort and settings, and the flags of the rows whose samples are
    # far from the reference row's: computed once here, rendered by the report
    for n, r in rows.items():
        results["models"][n]["training"] = verdict.run_effort(
            r["run"], share_s=timing["share_s"].get(n), how=training.get(n),
            # a reused run trained before this comparison: its own recorded training time
            seconds=(r["eval"]["metrics"]["train_time"].get("value")
                     if str(training.get(n, "")).startswith("reused") or n not in timing["train_s"]
                     else timing["train_s"][n]))
    kind = next(iter(rows.values()))["data"].kind if rows else ""
    for n, flags in verdict.compute_flags(results, data_kind=kind).items():
        results["models"][n]["flags"] = flags

    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    report.write_reports(results, rows, out, columns=columns())
    write(f"[compare] training {timing['train_total_s']:.0f} s of a {budget_s:.0f} s budget; "
          f"scoring {timing['score_total_s']:.0f} s (not in the budget)")
    results["trained"] = {n: r["model"] for n, r in rows.items()}
    results["per_example"] = {n: r["per_example"] for n, r in rows.items()}
    return results


def training_order(entries: list) -> list:
    """The order in which ``compare`` trains its rows: the quick ones first, then those of a
    fixed length, then those that train until their share is spent, each group in the order
    given. What a row leaves of its share goes to the rows after it, and the last rows can use
    all of it; a fixed-length row's share is the same wherever it stands among the others."""
    return sorted(entries, key=lambda e: (not _recipe_of(e).quick, _fills_share(e)))


def _fills_share(e: ModelEntry) -> bool:
    """Whether a row trains until its share of the budget is spent: its recipe fills a budget
    and the row gives no length of its own."""
    recipe = _recipe_of(e)
    return recipe.fills_budget and recipe.trains_by not in _train_options(e)[1]


def _train_options(e: ModelEntry) -> tuple[str, dict]:
    from probgen.training import model_spec

    recipe, extra = model_spec(e.model)
    return recipe, {**extra, **e.options}


def _check_program_entry(e: ModelEntry, spec: CompareSpec) -> None:
    """A user program is run once on a few examples before anything trains (its errors name
    the site and the fix); nothing is written."""
    from probgen.recipes import get_recipe
    from probgen.runs import resolve_device
    from probgen.training import data_config, load_run_data, recipe_options

    recipe_name, opts = _train_options(e)
    recipe = get_recipe(recipe_name)
    opts = recipe.prepare_config(recipe_options(recipe_name, opts))
    config = {"data": spec.data, "seed": spec.seed, "limit": spec.limit, "data_root": spec.data_root,
              "data_options": data_config(opts, recipe, data=spec.data,
                                          **_quantisation(recipe_name, _train_options(e)[1], spec)),
              **opts}
    device = resolve_device(spec.device)
    recipe.check(config, load_run_data(config, device=device, data_root=spec.data_root), device)


def _train_entry(e: ModelEntry, spec: CompareSpec, run_dir: Path, share: float) -> dict:
    """Train row ``e`` into ``run_dir`` within ``share`` seconds, or reuse the completed run a
    previous comparison with the same rows, data and budget left there (one that failed
    later, say); an unfinished one is trained again, since its share cannot be split."""
    from probgen.progress import write
    from probgen.recipes import RECIPES, fill_budget
    from probgen.training import load_run, train

    signature = _signature(e, spec)
    cfg = run_dir / "config.json"
    note = ""
    if cfg.exists() and not spec.overwrite:
        try:
            old = json.loads(cfg.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        same = _same_signature(old.get("compare"), signature, spec)
        if same and old.get("completed"):
            write(f"[compare] reusing {e.name}: the run in {run_dir} completed "
                  f"({old['completed'].get('stopped_by')})")
            t0 = time.perf_counter()
            run, data, model = load_run(run_dir, device=spec.device, data_root=spec.data_root,
                                        allow_changed_model=spec.allow_changed_model,
                                        allow_changed_data=spec.allow_changed_data,
                                        action="compare")
            from probgen.training import Trained

            result = Trained(model=model, run=run, data=data, seconds=0.0)
            return {"result": result, "seconds": 0.0, "other_seconds": time.perf_counter() - t0,
                    "how": f"reused: the run in {run_dir} completed"}
        if same:
            note = f"; the run in {run_dir} did not complete, so it is trained again"
    recipe, opts = _train_options(e)
    if RECIPES[recipe].trains_by not in opts:
        fill_budget(recipe, opts)
    write(f"[compare] training {e.name} on {spec.data} (budget {share:.0f} s{note})")
    t0 = time.perf_counter()
    result = train(e.model if recipe == "program" else recipe, spec.data, run_dir, seed=spec.seed,
                   device=spec.device, overwrite=True, limit=spec.limit, time_budget=share,
                   data_root=spec.data_root, progress=not spec.quiet, compare_signature=signature,
                   **_quantisation(recipe, opts, spec), **{k: v for k, v in opts.items() if k != "program"})
    if result.stopped_by:
        raise KeyboardInterrupt
    # the budget counts the training itself; loading the data and drawing the run's figures
    # are recorded apart
    return {"result": result, "seconds": result.seconds,
            "other_seconds": time.perf_counter() - t0 - result.seconds, "how": f"trained{note}"}


def _check_given_data(name: str, run_dir: Path, data: str) -> None:
    """Refuse a ``--runs`` run trained on other data than the comparison's: it would be scored
    on its own data and sit in the comparison's columns beside rows scored on another test
    split. The same data: the same name (a data set, or a path as given), or a file of the
    same bytes as one the run read (a file that moved or is named another way)."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return  # the run's own loading says what is wrong with it
    fp = config.get("data_fingerprint") or {}
    trained_on = str(config.get("data") or fp.get("name") or "")
    if not trained_on or trained_on == str(data) or fp.get("name") == str(data):
        return
    path = Path(data).expanduser()
    if path.exists():
        if Path(trained_on).expanduser().exists() and \
                Path(trained_on).expanduser().resolve() == path.resolve():
            return
        if path.is_file() and fp.get("files"):
            from probgen.programs import file_sha256

            if file_sha256(path) in {f.get("sha256") for f in fp["files"]}:
                return
    raise ConfigError(
        f"--runs {name}={run_dir}: that run was trained on {trained_on!r}, and this comparison "
        f"is on {str(data)!r}. A row is scored on the data its run was trained on, so it would "
        "stand in the same columns as rows scored on other test examples. Leave it out of "
        f"--runs to train {name} here, or compare on {trained_on!r}.")


def _finish_given(name: str, run_dir: Path, spec: CompareSpec) -> str:
    """A run given by ``--runs``: used as it is when it completed; resumed from its checkpoint
    (as ``probgen train ... --resume`` would) when it did not. Returns what was done."""
    from probgen.progress import write

    if _completed(run_dir):
        return f"given: the run in {run_dir} completed"
    from probgen.runs import Run
    from probgen.training import resume

    run = Run.open(run_dir, writer=False)
    if not run.checkpoint_path.exists():
        raise ConfigError(f"--runs {name}={run_dir}: that run did not complete and has no "
                          "checkpoint to resume from; train it again, or leave it out of --runs "
                          "to train it here.")
    write(f"[compare] resuming {name}: the run in {run_dir} did not complete")
    resume(run_dir, device=spec.device, data_root=spec.data_root, progress=not spec.quiet,
           allow_changed_model=spec.allow_changed_model, allow_changed_data=spec.allow_changed_data)
    return f"resumed: the run in {run_dir} did not complete"


REFERENCE_ROW = REFERENCE_ROW_NAME  # the row of real validation data, named in report.py


class _HeldOut:
    """Real held-out examples posing as a model's samples: the sample metrics of real data
    against real data, the floor that every model's sample metrics are read against."""

    def __init__(self, data):
        self.data = data

    def sample(self, n: int):
        return self.data.val[:n]


def sample_count(data) -> int:
    """Samples drawn per model for the sample metrics, compared with as many test examples:
    the size of the validation split (at most 10,000), so that the reference row, which can
    offer no more real examples than that, is scored with the same count as every model (the
    Frechet distance between finite sets is biased upwards by about 1/n)."""
    return min(10_000, data.val.shape[0], data.test.shape[0])


def _reference(data, spec: CompareSpec) -> dict:
    from probgen.eval import evaluate

    ev = evaluate(_HeldOut(data), data, "test", limit=spec.eval_limit, model_name=REFERENCE_ROW,
                  n_samples=sample_count(data))
    for m in ev["metrics"].values():
        if m.get("value") is None:
            m["reason"] = "reference row: real validation examples, not a model"
    ev["metrics"]["train_time"] = {"value": None, "stderr": None, "unit": "s",
                                   "reason": "reference row: real validation examples, not a model"}
    return ev


@contextlib.contextmanager
def recording_samples(model, keep: int):
    """Within the block, ``model.sample(n)`` also keeps (on the CPU) the first ``keep`` values
    it returns, in order; yields the list they go into. The report's figures show these draws
    of the scoring instead of sampling the model again (minutes for an autoregressive flow).
    A model without ``sample``, or one whose attributes cannot be set, is left as it is and
    the list stays empty."""
    drawn: list = []
    draw = getattr(model, "sample", None)
    own = "sample" in getattr(model, "__dict__", {})
    patched = False
    if callable(draw):
        def sample(n, *args, **kwargs):
            out = draw(n, *args, **kwargs)
            have = sum(int(t.shape[0]) for t in drawn)
            if have < keep and hasattr(out, "detach"):
                drawn.append(out[:keep - have].detach().cpu())
            return out

        try:
            model.sample = sample
            patched = True
        except AttributeError:  # a tuple, slots, a read-only property
            pass
    try:
        yield drawn
    finally:
        if patched and own:
            model.sample = draw
        elif patched:
            del model.sample


def _score(name: str, run, model, data, spec: CompareSpec) -> dict:
    import torch

    from probgen.eval import evaluate
    from probgen.runs import seed_everything

    per_example: dict[str, torch.Tensor] = {}
    seed_everything(spec.seed)  # the same samples and Monte Carlo draws on every rescoring
    t0 = time.perf_counter()
    from probgen.programs import own_params

    with own_params(model), recording_samples(model, figure_sample_count(data)) as drawn:
        ev = evaluate(model, data, "test", limit=spec.eval_limit, model_name=name,
                      per_example=per_example, n_samples=sample_count(data),
                      progress=not spec.quiet, reload=_reloader(run, data, spec), **spec.options)
    ev["eval_seconds"] = time.perf_counter() - t0
    train = run.path / "train.json"
    seconds = json.loads(train.read_text()).get("seconds") if train.exists() else None
    ev["metrics"]["train_time"] = {"value": seconds, "stderr": None, "unit": "s"} if seconds is not None \
        else {"value": None, "stderr": None, "unit": "s", "reason": "run has no train.json"}
    ev["likelihoods"] = likelihoods(ev["metrics"])
    run.write_json("eval.json", ev)
    # the scoring's own draws, for the report's figures and the sharpness measure
    samples = torch.cat(drawn) if drawn else None
    return {"run": run.path, "eval": ev, "model": model, "data": data,
            "data_options": run.config.get("data_options"), "per_example": per_example,
            "samples": samples}


def _reloader(run, data, spec: CompareSpec):
    """The run's data with other data options, for estimators that score another
    representation (the decoder's AIS on dequantized images of a binarised run)."""
    from probgen.training import run_data_loader

    return run_data_loader(run.config, device=data.test.device, data_root=spec.data_root)


def likelihoods(metrics: dict) -> dict[str, dict]:
    """The row's most trusted likelihood on each representation it was scored on (see the
    module docstring): ``{representation: {"metric", "value", "stderr", "unit",
    "bits_per_dim", "bits_per_dim_stderr", "estimator", ...}}``."""
    from probgen.eval import registry

    out: dict[str, dict] = {}
    for key in registry.likelihood_preference():
        m = metrics.get(key)
        if not m or m.get("value") is None or not m.get("representation"):
            continue
        rep = m["representation"]
        if rep in out or not _finite(m["value"]):
            continue
        extra = m.get("extra") or {}
        entry = {"metric": key, "value": m["value"], "stderr": m.get("stderr"),
                 "unit": m.get("unit", "nats"), "bits_per_dim": m.get("bits_per_dim"),
                 "bits_per_dim_stderr": m.get("bits_per_dim_stderr"),
                 "estimator": m.get("inner_estimator") or m.get("estimator"),
                 "n": extra.get("n")}
        if m.get("inner_estimator"):
            entry["inner_estimator"] = m["inner_estimator"]
            entry["bound"] = m.get("estimator")
        if registry.METRICS[key].last_resort:
            entry["last_resort"] = True
        for field_name in ("caveat", "observation_model", "bdmc", "given"):
            if field_name in extra:
                entry[field_name] = extra[field_name]
        if "scored" in extra:
            entry["scored"] = extra["scored"]
        out[rep] = entry
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _evaluate_model(name: str, trained: dict, spec: CompareSpec) -> dict:
    """Score a model trained in this comparison, as it is in memory."""
    r = trained["result"]
    return _score(name, r.run, r.model, r.data, spec)


def _evaluate_run(run_dir: Path, spec: CompareSpec, name: str | None = None) -> dict:
    """Score a trained run folder (``--runs``), its model reloaded from the checkpoint."""
    from probgen.training import load_run

    run, data, model = load_run(run_dir, device=spec.device, data_root=spec.data_root,
                                allow_changed_model=spec.allow_changed_model,
                                allow_changed_data=spec.allow_changed_data, lock=True,
                                action="compare")
    return _score(name or run.config["model"], run, model, data, spec)


def _paired(rows: dict, out: Path) -> list[dict]:
    """Mean paired difference of per-example log-likelihoods for every pair of models scored on
    the same representation of the same test points, with each row's most trusted estimate
    on that representation (:func:`likelihoods`).

    Two rows pair on a representation when both have a likelihood on it and their scored
    examples are the same values: the same ``sha256`` of the test split and the same bin
    width (``extra["scored"]``, :func:`probgen.eval.evaluate.scored_data`), compared over the
    first ``min(n)`` examples. Option strings play no part: a GAN told ``value_range -1,1`` and
    a mixture told nothing pair on toy data, where both score the same points; a binary and
    a dequantized likelihood never pair. A pair of rows with no representation in common is
    listed with the reason."""
    from probgen.eval.paired import paired_difference, plot_per_example

    pairs, figure = [], None
    names = list(rows)
    shared_any: set[tuple[str, str]] = set()
    reps = sorted({rep for r in rows.values() for rep in r["eval"].get("likelihoods", {})})
    for rep in reps:
        have = [n for n in names if rep in rows[n]["eval"].get("likelihoods", {})
                and rows[n]["eval"]["likelihoods"][rep]["metric"] in rows[n]["per_example"]]
        rep_panels = {f"{n} ({rows[n]['eval']['likelihoods'][rep]['metric']})":
                      rows[n]["per_example"][rows[n]["eval"]["likelihoods"][rep]["metric"]]
                      for n in have}
        for i, a in enumerate(have):
            for b in have[i + 1:]:
                la, lb = (rows[x]["eval"]["likelihoods"][rep] for x in (a, b))
                shared_any.add((a, b))
                sa, sb = la.get("scored", {}), lb.get("scored", {})
                if (sa.get("sha256"), sa.get("bin_width")) != (sb.get("sha256"), sb.get("bin_width")):
                    pairs.append({"a": a, "b": b, "representation": rep, "value": None,
                                  "reason": f"both {rep}, but scored on different test values "
                                            f"(value range {sa.get('value_range')} vs "
                                            f"{sb.get('value_range')}, bin width "
                                            f"{sa.get('bin_width')} vs {sb.get('bin_width')}): "
                                            "their likelihoods are not comparable"})
                    continue
                va, vb = rows[a]["per_example"][la["metric"]], rows[b]["per_example"][lb["metric"]]
                n = min(len(va), len(vb))
                d = paired_difference(va[:n], vb[:n])
                pairs.append({"a": a, "b": b, "representation": rep, "a_estimate": la["metric"],
                              "b_estimate": lb["metric"], "n": n, "value": d.value,
                              "stderr": d.stderr, "unit": "nats",
                              **({"bits_per_dim": -d.value / (_dim(rows[a]) * 0.6931471805599453),
                                  "bits_per_dim_stderr": d.stderr / (_dim(rows[a]) * 0.6931471805599453)}
                                 if rep == "binary" or rep.startswith("dequantized") else {})})
                rep_panels[f"{a} - {b}"] = va[:n] - vb[:n]
        # the figure shows the representation with the most rows, on the examples all share
        if rep_panels and (figure is None or len(have) > len(figure[0])):
            figure = (have, rep, rep_panels)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if (a, b) in shared_any:
                continue
            ra = sorted(rows[a]["eval"].get("likelihoods", {})) or ["none"]
            rb = sorted(rows[b]["eval"].get("likelihoods", {})) or ["none"]
            pairs.append({"a": a, "b": b, "value": None,
                          "reason": f"no likelihood on a common representation ({a}: "
                                    f"{', '.join(ra)}; {b}: {', '.join(rb)}): not comparable"})
    if figure is not None:
        _, rep, rep_panels = figure
        n = min(len(v) for v in rep_panels.values())
        plot_per_example({f"{k} [{rep}, first {n}]" if not i else k: v[:n]
                          for i, (k, v) in enumerate(rep_panels.items())},
                         out / "figures" / "per_example_loglik.png", differences=False)
    return pairs


def _dim(row: dict) -> int:
    return int(row["data"].dim)


def _lecture_table(rows: dict, spec: CompareSpec) -> dict:
    """VAE against GAN, measured: reconstruction of given x, sharpness, likelihood available."""
    import torch

    table = {}
    for name, r in rows.items():
        model, data = r["model"], r["data"]
        entry = {}
        metrics = r["eval"]["metrics"]
        entry["likelihood"] = ", ".join(
            k for k in likelihood_preference() if metrics.get(k, {}).get("value") is not None
        ) or "none"
        if callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None)):
            x = data.test[:64]
            t0 = time.perf_counter()
            with torch.enable_grad():
                z = model.encode(x)
            xhat = model.decode(z).detach().reshape(x.shape)
            entry["reconstruction_mse"] = float(((xhat - x) ** 2).mean())
            entry["reconstruction_seconds_per_image"] = (time.perf_counter() - t0) / x.shape[0]
        else:
            entry["reconstruction_mse"] = None
            entry["reconstruction_reason"] = "the model has no encode/decode"
        if data.kind == "image":
            s = scoring_samples(r, 64)
            if s is None:
                with torch.no_grad():
                    s = model.sample(64).detach()
            s = data.as_values(s.reshape(-1, *data.shape))  # as the data hold their values
            entry["sharpness"] = _sharpness(s)
            entry["sharpness_of_data"] = _sharpness(data.test[:64].reshape(-1, *data.shape))
        table[name] = entry
    return table


def likelihood_preference() -> list[str]:
    """Likelihood metrics, the most trusted first (:func:`probgen.eval.registry.likelihood_preference`)."""
    from probgen.eval import registry

    return registry.likelihood_preference()


def _sharpness(x) -> float:
    """Mean variance of the Laplacian over images: blurrier images score lower."""
    import torch
    import torch.nn.functional as F

    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=x.device)
    x = x.float().mean(dim=1, keepdim=True)
    lap = F.conv2d(x, k.view(1, 1, 3, 3))
    return float(lap.flatten(1).var(dim=1).mean())


def _model_choice(data, spec: CompareSpec, share: float, timing: dict) -> dict:
    """The number of mixture components chosen by BIC (EM) and by PSIS-LOO (NUTS), side by
    side, on low-dimensional data, within ``share`` seconds of the budget
    (:func:`probgen.model_choice.record.compare_section`); its time goes in ``timing``."""
    from probgen.model_choice.record import compare_section
    from probgen.progress import write

    share = max(1.0, share)
    write(f"[compare] choosing the number of mixture components (BIC, PSIS-LOO; budget "
          f"{share:.0f} s)")
    t0 = time.perf_counter()
    rec = compare_section(data, seed=spec.seed, smoke=spec.budget_minutes < 1, time_limit=share,
                          progress=not spec.quiet)
    timing["model_choice_share_s"] = share
    timing["model_choice_s"] = time.perf_counter() - t0
    write(f"[compare] model choice in {timing['model_choice_s']:.0f} s: {rec['statement']}")
    return rec
