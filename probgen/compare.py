"""``probgen compare``: explicit against implicit density estimators on the same data.

Each model is trained into its own run folder (or an existing run is reused), then every run
is scored by the same evaluation code on the same test split. The result is one table with a
row per model and a column per metric, each cell a value with its standard error or a blank
with the reason; the lecture's VAE-against-GAN comparison filled with measured values; paired
differences of per-example log-likelihoods; and a report a person reads
(``results.json``, ``report.md``, ``report.html`` with its figures).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from probgen.errors import ConfigError
from probgen.report import REFERENCE_ROW_NAME

__all__ = ["compare", "COLUMNS", "CompareSpec"]

# (metric name in eval.json, column title, better) -- the table's columns, in order
COLUMNS: list[tuple[str, str, str]] = [
    ("log_likelihood", "exact log-lik", "higher"),
    ("elbo", "ELBO", "higher"),
    ("iwae", "IWAE-k", "higher"),
    ("ais", "AIS", "higher"),
    ("parzen", "Parzen", "higher"),
    ("true_log_likelihood", "true log-lik", "higher"),
    ("modes_covered", "modes", "higher"),
    ("high_quality_fraction", "HQ frac", "higher"),
    ("reverse_kl", "reverse KL", "lower"),
    ("frechet_distance", "Frechet", "lower"),
    ("kernel_distance", "kernel", "lower"),
    ("precision", "precision", "higher"),
    ("recall", "recall", "higher"),
    ("density", "density", "higher"),
    ("coverage", "coverage", "higher"),
    ("class_histogram", "classes", "higher"),
    ("train_time", "train s", "lower"),
]


@dataclass
class CompareSpec:
    """What to compare: one data set, several models, a training budget."""

    data: str
    models: list[str]
    out: Path
    budget_minutes: float = 5.0
    runs: dict[str, Path] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    data_root: str | None = None
    k: int | None = None
    ais: bool = False
    ais_steps: int = 200
    parzen: bool = False
    limit: int | None = None
    eval_limit: int | None = None
    model_args: dict[str, list[str]] = field(default_factory=dict)
    overwrite: bool = False
    quiet: bool = False  # no progress bars (they are drawn on a terminal only)
    allow_changed_data: bool = False


def compare(spec: CompareSpec) -> dict:
    """Train (or reuse), evaluate and report every model of ``spec``; returns results.json's dict."""
    from probgen.progress import bar as progress_bar
    from probgen.progress import write
    from probgen.recipes import RECIPES

    out = Path(spec.out)
    unknown = [m for m in spec.models if m not in RECIPES]
    if unknown:
        from probgen.errors import suggest

        raise ConfigError(
            f"unknown model(s) {', '.join(map(repr, unknown))}.{suggest(unknown[0], RECIPES)} "
            f"Known models: {', '.join(RECIPES)}."
        )
    if (out / "results.json").exists() and not spec.overwrite:
        raise ConfigError(f"{out} already holds a comparison (results.json). Pass --overwrite to "
                          "replace it, or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    per_model_s = 60.0 * spec.budget_minutes / max(1, len([m for m in spec.models if m not in spec.runs]))
    # Neural models trained by epochs would stop at their default epoch count however much of
    # the budget is left: give them epochs without end, so that their share of the budget is
    # what stops them (as it stops the GAN). EM and PPCA converge well inside any share.
    fill = {"vae", "ae", "dae"}

    rows: dict[str, dict] = {}
    # one bar over the stages: each model's training and scoring, then the reference row
    stages = progress_bar(len([m for m in spec.models if m not in spec.runs]) + len(spec.models) + 1,
                          desc="compare", unit="stage", progress=not spec.quiet)
    done: dict[str, str] = {}  # model -> what was done to have its run: trained, reused, resumed
    for name in spec.models:
        run_dir = Path(spec.runs.get(name) or out / "runs" / name)
        if name not in spec.runs:
            argv = ["train", name, "--data", spec.data, "--out", str(run_dir), "--seed", str(spec.seed),
                    "--device", spec.device, "--time-budget", f"{per_model_s:.1f}", "--overwrite",
                    *(["--data-root", spec.data_root] if spec.data_root else []),
                    *(["--limit", str(spec.limit)] if spec.limit else []),
                    *spec.model_args.get(name, []), *(["--quiet"] if spec.quiet else [])]
            if name in fill and "--epochs" not in argv:
                argv += ["--epochs", "1000000"]
            try:
                done[name] = _train_or_reuse(name, run_dir, argv, spec, per_model_s)
            except BaseException:
                stages.close()
                raise
            stages.update(1)
        else:
            done[name] = _train_or_reuse(name, run_dir, None, spec, per_model_s)
        write(f"[compare] scoring {name} ({run_dir})")
        rows[name] = _evaluate_run(run_dir, spec)
        stages.update(1)
        write(f"[compare] scored {name} in {rows[name]['eval']['eval_seconds']:.0f} s")

    results = {
        "data": spec.data,
        "split": "test",
        "models": {n: r["eval"] for n, r in rows.items()},
        "runs": {n: str(r["run"]) for n, r in rows.items()},
        "data_options": {n: r["data_options"] for n, r in rows.items()},
        "training": done,
    }
    if rows:
        write("[compare] scoring the reference row (validation data as samples)")
        first, row = next(iter(rows.items()))
        results["models"][REFERENCE_ROW] = _reference(row["data"], spec)
        results["reference"] = {"representation_of": first, "data_options": row["data_options"],
                                "n": sample_count(row["data"])}
    stages.update(1)
    stages.close()
    results["paired_differences"] = _paired(rows, out)
    results["vae_vs_gan"] = _lecture_table(rows, spec)
    results["model_choice"] = _model_choice(rows, spec, out)
    from probgen import report

    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    report.write_reports(results, rows, out, columns=COLUMNS)
    return results


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


def _train_or_reuse(name: str, run_dir: Path, argv: list[str] | None, spec: CompareSpec,
                    seconds: float) -> str:
    """Give ``name`` a completed run in ``run_dir`` and say how: a completed run is reused;
    an unfinished one is retrained (``argv``: a run of this comparison, whose time budget
    cannot be split) or resumed (a run given by --runs, ``argv=None``). Returns what was done."""
    from probgen.cli import main as cli_main
    from probgen.progress import write
    from probgen.runs import Run, reuse_decision

    action, why = ("train", "--overwrite") if spec.overwrite and argv else reuse_decision(run_dir, argv)
    if action == "reuse":
        write(f"[compare] reusing {name}: {why}")
        return f"reused: {why}"
    if action == "train" and argv is None:  # not a run to finish: opening it says what is missing
        return "given"
    if argv is None:
        write(f"[compare] resuming {name}: {why}")
        argv, done = Run.open(run_dir).resume_argv(), f"resumed: {why}"
    else:
        note = f"; retraining it: {why}" if action == "resume" else ""
        write(f"[compare] training {name} on {spec.data} (budget {seconds:.0f} s{note})")
        done = f"trained{note}"
    code = cli_main(argv)
    if code:
        raise ConfigError(f"training {name} failed (exit {code}); see the message above.")
    return done


def _evaluate_run(run_dir: Path, spec: CompareSpec) -> dict:
    import torch

    from probgen.cli import load_run_data
    from probgen.eval import evaluate
    from probgen.recipes import get_recipe
    from probgen.runs import Run, resolve_device, seed_everything

    run = Run.open(run_dir, lock=True)  # it writes eval.json there
    device = resolve_device(spec.device)
    data = load_run_data(run.config, device=device, data_root=spec.data_root)
    run.check_data(data, allow_changed=spec.allow_changed_data, action="compare")
    model = get_recipe(run.config["model"]).load(run, data, device)
    per_example: dict[str, torch.Tensor] = {}
    seed_everything(spec.seed)  # the same samples and Monte Carlo draws on every rescoring
    t0 = time.perf_counter()
    ev = evaluate(model, data, "test", k=spec.k, limit=spec.eval_limit, ais=spec.ais,
                  ais_steps=spec.ais_steps, parzen=spec.parzen, model_name=run.config["model"],
                  per_example=per_example, n_samples=sample_count(data), progress=not spec.quiet)
    ev["eval_seconds"] = time.perf_counter() - t0
    train = run.path / "train.json"
    seconds = json.loads(train.read_text()).get("seconds") if train.exists() else None
    ev["metrics"]["train_time"] = {"value": seconds, "stderr": None, "unit": "s"} if seconds is not None \
        else {"value": None, "stderr": None, "unit": "s", "reason": "run has no train.json"}
    run.write_json("eval.json", ev)
    return {"run": run.path, "eval": ev, "model": model, "data": data,
            "data_options": run.config.get("data_options"), "per_example": per_example}


def _paired(rows: dict, out: Path) -> list[dict]:
    """Mean paired difference of per-example log-likelihoods for every pair of models scored on
    the same representation of the same test points (same binarisation and value range)."""
    from probgen.eval.paired import paired_difference, plot_per_example

    best = {}
    for name, r in rows.items():
        for key in ("log_likelihood", "ais", "iwae", "elbo"):
            if key in r["per_example"]:
                best[name] = (key, r["per_example"][key])
                break
    pairs = []
    names = sorted(best)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if rows[a]["data_options"] != rows[b]["data_options"]:
                pairs.append({"a": a, "b": b, "value": None,
                              "reason": "scored on different data representations "
                                        f"({rows[a]['data_options']} vs {rows[b]['data_options']}): "
                                        "their likelihoods are not comparable"})
                continue
            va, vb = best[a][1], best[b][1]
            n = min(len(va), len(vb))
            d = paired_difference(va[:n], vb[:n])
            pairs.append({"a": a, "b": b, "a_estimate": best[a][0], "b_estimate": best[b][0],
                          "value": d.value, "stderr": d.stderr, "unit": "nats"})
    if best:
        # each model's values, then the differences of the comparable pairs only (a difference
        # between a density of grey pixels and a probability of binary ones means nothing)
        panels = {f"{n} ({k})": v for n, (k, v) in best.items()}
        for p in pairs:
            if p["value"] is not None:
                va, vb = best[p["a"]][1], best[p["b"]][1]
                n = min(len(va), len(vb))
                panels[f"{p['a']} - {p['b']}"] = va[:n] - vb[:n]
        plot_per_example(panels, out / "figures" / "per_example_loglik.png", differences=False)
    return pairs


def _lecture_table(rows: dict, spec: CompareSpec) -> dict:
    """VAE against GAN, measured: reconstruction of given x, sharpness, likelihood available."""
    import torch

    table = {}
    for name, r in rows.items():
        model, data = r["model"], r["data"]
        entry = {}
        metrics = r["eval"]["metrics"]
        entry["likelihood"] = ", ".join(
            k for k in ("log_likelihood", "elbo", "iwae", "ais") if metrics.get(k, {}).get("value") is not None
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
            with torch.no_grad():
                s = model.sample(64).detach().reshape(-1, *data.shape)
            entry["sharpness"] = _sharpness(s)
            entry["sharpness_of_data"] = _sharpness(data.test[:64].reshape(-1, *data.shape))
        table[name] = entry
    return table


def _sharpness(x) -> float:
    """Mean variance of the Laplacian over images: blurrier images score lower."""
    import torch
    import torch.nn.functional as F

    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=x.device)
    x = x.float().mean(dim=1, keepdim=True)
    lap = F.conv2d(x, k.view(1, 1, 3, 3))
    return float(lap.flatten(1).var(dim=1).mean())


def _model_choice(rows: dict, spec: CompareSpec, out: Path) -> dict | None:
    """The number of mixture components chosen by BIC (EM) and by PSIS-LOO (NUTS), side by side,
    on low-dimensional data. NUTS runs for K <= 4 only (seconds per K on a few hundred points);
    beyond that BIC is reported alone, and the record says why."""
    if "gmm" not in rows:
        return None
    data = rows["gmm"]["data"]
    if data.dim > 2:
        return {"reason": f"model choice runs on 1-D and 2-D data only (this data set has "
                          f"{data.dim} dimensions per example)"}
    from probgen.eval.model_choice import choose_n_components

    true_k = getattr(data.density, "n_components", None)
    k_max = (true_k or 3) + 2
    with_loo = k_max <= 5
    smoke = spec.budget_minutes < 1
    mc = choose_n_components(
        data.train[:300].cpu(), k_max, loo=with_loo, n_init=2 if smoke else 4,
        num_warmup=20 if smoke else 150, num_samples=20 if smoke else 150, num_chains=2,
        seed=spec.seed,
    )
    rec = {
        "bic_choice": mc.chosen_bic, "aic_choice": mc.chosen_aic, "loo_choice": mc.chosen_loo,
        "loo_within_2se_choice": mc.chosen_loo_within_2se, "true_k": true_k, "n": mc.n,
        "per_k": [{"k": s.n_components, "bic": s.bic, "elpd_loo": s.elpd_loo,
                   "elpd_loo_se": s.elpd_loo_se, "pareto_k_max": s.max_pareto_k,
                   "r_hat_max": s.r_hat_max, "ess_min": s.ess_bulk_min} for s in mc.scores],
        "table": mc.table(), "warnings": mc.warnings,
    }
    if not with_loo:
        rec["loo_reason"] = (f"PSIS-LOO needs a NUTS fit per K; with K up to {k_max} that is beyond "
                             "this comparison's budget, so BIC and AIC are reported alone. "
                             "See examples/mixture_model_choice.py for both on a smaller K.")
    return rec
