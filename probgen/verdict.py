"""What a comparison says, in words: the best likelihood per representation, the best samples,
where the two rankings disagree, and which models were not trained well enough to be ranked.

Everything here but :func:`run_effort` is a pure function of ``results.json``'s dict (as
:func:`probgen.comparison.compare` writes it), so that the report's first paragraph and its
flags can be checked on a dict written by hand, without training anything.

Likelihoods
    :func:`model_likelihoods` gives a row's likelihood on each representation it was scored
    on: the row's own ``likelihoods`` entry where results.json has one, else derived from its
    metrics with the preference exact > AIS > IWAE-k (largest k) > ELBO.
Ties
    Two estimates tie when their difference is within two standard errors: the standard error
    of the paired difference over the same test points where ``paired_differences`` holds it,
    else ``sqrt(se_a**2 + se_b**2)``. A value without a standard error ties only with itself.
Flags
    :func:`flag_model` compares a row's sample metrics with the reference row's (real
    validation examples in the place of samples) by the thresholds below.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["model_likelihoods", "likelihood_label", "format_likelihood", "representations",
           "flag_model", "compute_flags", "budget_bound", "run_effort", "effort_text", "settings_text",
           "verdict", "sample_ranking_metrics", "short_effort", "metric_entry", "REFERENCE_ROW_NAME", "PRECISION_FRACTION",
           "COVERAGE_FRACTION", "CLASS_ENTROPY_FRACTION", "HQ_FRACTION", "TIE_SE",
           "LIKELIHOOD_PREFERENCE", "SAMPLE_METRICS"]

REFERENCE_ROW_NAME = "validation data (reference)"  # probgen.comparison.REFERENCE_ROW

TIE_SE = 2.0                  # estimates within this many standard errors tie
PRECISION_FRACTION = 0.5      # flag: precision below this fraction of the reference's
COVERAGE_FRACTION = 0.5       # flag: coverage below this fraction of the reference's
CLASS_ENTROPY_FRACTION = 0.9  # flag: normalised class entropy below this fraction of the reference's
HQ_FRACTION = 0.5             # flag: high-quality fraction below this fraction of the reference's
MODES_FRACTION = 7 / 8        # flag: fewer toy modes than this fraction of the reference's (7 of 8)

# metric names of results.json, most preferred first, for a row's likelihood
# the likelihood estimates a row is ranked by, the most trusted first: the table of metrics'
# preference (probgen.eval.registry) without its last resorts (Parzen windows: not bounds)
LIKELIHOOD_PREFERENCE = ("log_likelihood", "ais", "decoder_ais", "iwae", "elbo")

# sample metrics: (name in results.json, words, better)
SAMPLE_METRICS = (
    ("frechet_distance", "Frechet distance", "lower"),
    ("modes_covered", "modes covered", "higher"),
    ("high_quality_fraction", "high-quality fraction", "higher"),
    ("reverse_kl", "reverse KL over modes", "lower"),
    ("energy_distance", "energy distance", "lower"),
    ("mmd", "MMD", "lower"),
    ("kernel_distance", "kernel distance", "lower"),
    ("precision", "precision", "higher"),
    ("recall", "recall", "higher"),
    ("coverage", "coverage", "higher"),
    ("class_histogram", "class entropy", "higher"),
)
_BETTER = {k: b for k, _, b in SAMPLE_METRICS}
_WORDS = {k: w for k, w, _ in SAMPLE_METRICS}
# the metrics that rank samples, in order of preference: the first group some row has is used
# (the second metric of a group breaks ties of the first)
_SAMPLE_RANKING = (("frechet_distance",), ("modes_covered", "high_quality_fraction"),
                   ("energy_distance",), ("mmd",), ("kernel_distance",))
# the metrics the verdict quotes beside the ranking one, where the data has them
_QUOTED = ("precision", "recall", "coverage", "high_quality_fraction", "reverse_kl")

_REP_ORDER = ("binary", "dequantized-8bit", "dequantized", "continuous", "raw-pixels")


# ------------------------------------------------------------------------------ likelihoods
def _iwae_keys(metrics: dict) -> list[str]:
    """The IWAE bounds of a row: ``iwae`` (its k in ``extra``) and, in results of older
    versions, ``iwae_K``; the smallest k first."""
    def k_of(key):
        if key == "iwae":
            return int(((metrics[key] or {}).get("extra") or {}).get("k") or 0)
        return int(key[5:])
    keys = [k for k in metrics if k == "iwae" or (k.startswith("iwae_") and k[5:].isdigit())]
    return sorted(keys, key=k_of)


def _value(m: dict | None) -> float | None:
    if not m:
        return None
    v = m.get("value")
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return float(v)


def metric_entry(key: str, m: dict, default_rep: str) -> dict:
    return {"metric": key, "value": float(m["value"]), "stderr": m.get("stderr"),
            "unit": m.get("unit") or "nats", "representation": m.get("representation") or default_rep,
            "bits_per_dim": m.get("bits_per_dim"), "bits_per_dim_stderr": m.get("bits_per_dim_stderr"),
            "estimator": m.get("estimator") or _estimator_of(key), "inner_estimator": m.get("inner_estimator"),
            **({"given": m["extra"]["given"]} if (m.get("extra") or {}).get("given") else {})}


def _estimator_of(key: str) -> str:
    if key.startswith("iwae_"):
        return f"iwae-{key[5:]}"
    return {"log_likelihood": "exact"}.get(key, key)


def model_likelihoods(ev: dict) -> dict[str, dict]:
    """A row's likelihood on each representation it was scored on: ``{representation:
    {"metric", "value", "stderr", "unit", "bits_per_dim", "bits_per_dim_stderr", "estimator",
    "inner_estimator"}}``.

    The row's own ``likelihoods`` entry when it has one; else derived from its ``metrics``,
    taking the first estimate that has a value in the order exact > AIS > IWAE-k (the largest
    k) > ELBO (Parzen windows are never taken: they are not bounds). A row without a
    representation on its metrics (results.json of older versions) is put under the row's
    ``representation``, else ``"continuous"``. The data's true density
    (``true_log_likelihood``) is not a model's likelihood and is never taken.
    """
    if isinstance(ev.get("likelihoods"), dict):
        return {rep: {"representation": rep, **e} for rep, e in ev["likelihoods"].items()
                if _value(e) is not None}
    metrics = ev.get("metrics", {})
    default_rep = ev.get("representation") or "continuous"
    out: dict[str, dict] = {}
    for pref in LIKELIHOOD_PREFERENCE:
        keys = list(reversed(_iwae_keys(metrics))) if pref == "iwae" else [pref]
        for key in keys:
            m = metrics.get(key)
            if _value(m) is None:
                continue
            rep = m.get("representation") or default_rep
            if rep not in out:
                out[rep] = metric_entry(key, m, default_rep)
    return out


def _kind(entry: dict) -> str:
    """The estimate behind ``entry``: "exact", "ais", "iwae-K", "elbo", ... (on dequantized
    data the estimate inside the dequantization bound)."""
    est = entry.get("estimator") or ""
    return (entry.get("inner_estimator") or "") if est == "dequantization bound" else est


def _paired_key(entry: dict) -> str:
    """The estimate's key as ``paired_differences`` names it (``a_estimate``/``b_estimate``)."""
    key = entry.get("metric", "")
    return "iwae" if key.startswith("iwae_") else key


def likelihood_label(entry: dict) -> str:
    """What kind of estimate ``entry`` is, in words: "exact", "IWAE-100 bound", "ELBO",
    "AIS estimate", "IWAE-100 dequantization bound", "exact density, dequantization bound";
    with ", given the guide's mean of mu" where a program's global latents were held fixed."""
    label = _estimate_words(entry)
    return f"{label}, given {entry['given']}" if entry.get("given") else label


def _blurred(entry: dict) -> bool:
    """Whether ``entry`` is the AIS of a decoder with a Gaussian observation model (Wu et al.
    2017): a density of the decoder with noise added, not of the model itself."""
    return entry.get("metric") == "decoder_ais"


def _estimate_words(entry: dict) -> str:
    est, inner = entry.get("estimator") or "", entry.get("inner_estimator") or ""
    deq = "dequantization bound" in (est, inner)
    kind = inner if est == "dequantization bound" else est
    if kind == "dequantization bound":
        kind = ""
    words = {"exact": "exact", "elbo": "ELBO", "ais": "decoder AIS" if _blurred(entry) else "AIS",
             "parzen": "Parzen window"}.get(kind)
    if words is None and kind.startswith("iwae-"):
        words = f"IWAE-{kind[5:]}"
    words = words or kind
    if deq:
        return "exact density, dequantization bound" if kind == "exact" else \
            f"{words} dequantization bound".strip()
    if kind == "exact":
        return "exact"
    if kind.startswith("iwae-"):
        return f"{words} bound"
    if kind == "ais":
        return f"{words} estimate"
    return words


def _is_image_rep(rep: str) -> bool:
    return rep == "binary" or rep.startswith("dequantized")


def _num(v: float, se: float | None, digits: str = ".4g") -> str:
    s = format(v, digits)
    if se is not None and math.isfinite(se):
        s += f" ± {se:.2g}"
    return s


def format_likelihood(entry: dict, *, label: str | None = None) -> str:
    """One table cell: "1.92 ± 0.01 bits/dim (-1044 nats; IWAE-100 dequantization bound)" on
    images, "-2.123 ± 0.0012 nats (IWAE-100 bound)" on continuous data."""
    label = label if label is not None else likelihood_label(entry)
    rep = entry.get("representation") or ""
    bpd = entry.get("bits_per_dim")
    if _is_image_rep(rep) and bpd is not None:
        return (f"{_num(bpd, entry.get('bits_per_dim_stderr'), '.4g')} bits/dim "
                f"({entry['value']:.5g} nats; {label})")
    return f"{_num(entry['value'], entry.get('stderr'))} nats ({label})"


def _rep_key(rep: str):
    return (_REP_ORDER.index(rep) if rep in _REP_ORDER else len(_REP_ORDER), rep)


def representations(results: dict) -> list[str]:
    """The representations some model row has a likelihood on, in a fixed order (binary,
    dequantized, continuous, raw pixels, then any other)."""
    reps = set()
    for name, ev in results["models"].items():
        if name != REFERENCE_ROW_NAME:
            reps |= set(model_likelihoods(ev))
    return sorted(reps, key=_rep_key)


def _diff_se(results: dict, a: str, ea: dict, b: str, eb: dict) -> tuple[float, bool]:
    """Standard error of value(a) - value(b): paired where results.json holds the pair (on
    the same estimates), else from the two standard errors. Returns (se, paired)."""
    for p in results.get("paired_differences") or []:
        if p.get("value") is None or p.get("stderr") is None:
            continue
        if {p["a"], p["b"]} == {a, b} and p.get("representation") in (None, ea.get("representation")):
            est = {p["a"]: p.get("a_estimate"), p["b"]: p.get("b_estimate")}
            if est[a] == _paired_key(ea) and est[b] == _paired_key(eb):
                return float(p["stderr"]), True
    sa, sb = ea.get("stderr") or 0.0, eb.get("stderr") or 0.0
    return math.sqrt(sa * sa + sb * sb), False


def _likelihood_ranking(results: dict, rep: str) -> list[tuple[str, dict]]:
    rows = [(n, model_likelihoods(ev).get(rep)) for n, ev in results["models"].items()
            if n != REFERENCE_ROW_NAME]
    return sorted([(n, e) for n, e in rows if e is not None], key=lambda t: -t[1]["value"])


def _likelihood_tie(results, a, ea, b, eb) -> bool:
    se, _ = _diff_se(results, a, ea, b, eb)
    return abs(ea["value"] - eb["value"]) <= TIE_SE * se


# ------------------------------------------------------------------------------ samples
def _metric(ev: dict, key: str) -> dict | None:
    m = ev.get("metrics", {}).get(key)
    return m if _value(m) is not None else None


def sample_ranking_metrics(results: dict) -> tuple[str, ...]:
    """The metrics that rank samples on this data: the Frechet distance on images, modes
    covered then the high-quality fraction on toy mixtures, else the energy distance, MMD or
    kernel distance; () when no model row has any."""
    rows = [ev for n, ev in results["models"].items() if n != REFERENCE_ROW_NAME]
    for group in _SAMPLE_RANKING:
        if any(_metric(ev, group[0]) for ev in rows):
            return tuple(k for k in group if any(_metric(ev, k) for ev in rows))
    return ()


def _better(key: str, a: float, b: float) -> bool:
    return a < b if _BETTER.get(key, "higher") == "lower" else a > b


def _sample_compare(ea: dict, eb: dict, keys) -> int:
    """+1 when a's samples are better than b's by ``keys`` (lexicographic), -1 when worse, 0 on
    a tie: values within two standard errors (a value without one ties only when equal)."""
    for key in keys:
        ma, mb = _metric(ea, key), _metric(eb, key)
        if ma is None or mb is None:
            return 0
        va, vb = float(ma["value"]), float(mb["value"])
        se = math.sqrt((ma.get("stderr") or 0.0) ** 2 + (mb.get("stderr") or 0.0) ** 2)
        if abs(va - vb) <= TIE_SE * se or va == vb:
            continue
        return 1 if _better(key, va, vb) else -1
    return 0


def _fmt_metric(key: str, m: dict) -> str:
    v = float(m["value"])
    if key == "modes_covered":
        n = (m.get("extra") or {}).get("n_modes")
        return f"{v:.0f}" + (f"/{n}" if n else "")
    return f"{v:.3g}" if key != "frechet_distance" else f"{v:.4g}"


# ------------------------------------------------------------------------------ flags
def _recipe_advice(recipe: str | None, data_kind: str) -> str:
    """The option that most often helps a model of ``recipe`` whose samples are poor."""
    advice = {
        "gan": ("on images a narrower network trains more steps per second (gan(width=16)) and "
                "packing (gan(pack=2)) counters mode collapse" if data_kind == "image" else
                "packing (gan(pack=2)) counters mode collapse"),
        "vae": "a wider network (vae(hidden=[256,256])) or a tighter objective "
               "(vae(objective=iwae,particles=5))",
        "flow": "more layers (flow(transforms=8))",
        "gmm": "more components (gmm(components=K)) or restarts (gmm(n_init=5))",
        "bmm": "more components (bmm(components=K))",
        "ppca": "a larger latent size (ppca(latent_dim=N))",
    }
    return advice.get(recipe or "", "")


def flag_model(ev: dict, reference: dict | None, *, effort: dict | None = None,
               budget_s: float | None = None, data_kind: str = "") -> list[dict]:
    """Why a row's samples are far from the reference row's, one dict per reason (``[]`` when
    none): ``{"metric", "value", "reference", "threshold", "rule", "message", "advice"}``.

    Reasons, each against the reference row (real validation examples as samples):
    precision below ``PRECISION_FRACTION`` of the reference's; coverage below
    ``COVERAGE_FRACTION`` of it; normalised class entropy below ``CLASS_ENTROPY_FRACTION`` of
    it (a collapsed class histogram); fewer toy modes covered than ``MODES_FRACTION`` of the
    reference's (one missing mode of ring8's eight is not flagged); a high-quality fraction below
    ``HQ_FRACTION`` of it. ``effort`` (:func:`run_effort`) and ``budget_s`` (the comparison's
    budget) go into the advice.
    """
    if not reference:
        return []
    rules = (
        ("precision", PRECISION_FRACTION, "precision below {f:g} x the reference's"),
        ("coverage", COVERAGE_FRACTION, "coverage below {f:g} x the reference's"),
        ("class_histogram", CLASS_ENTROPY_FRACTION,
         "normalised class entropy below {f:g} x the reference's (a collapsed class histogram)"),
        ("modes_covered", MODES_FRACTION,
         "fewer modes covered than {f:.3g} x the reference's (7 of ring8's 8, 22 of grid25's 25)"),
        ("high_quality_fraction", HQ_FRACTION, "high-quality fraction below {f:g} x the reference's"),
    )
    flags = []
    for key, frac, rule in rules:
        m, r = _metric(ev, key), _metric(reference, key)
        if m is None or r is None:
            continue
        v, rv = float(m["value"]), float(r["value"])
        threshold = frac * rv
        if v < threshold:
            flags.append({"metric": key, "value": v, "reference": rv, "threshold": threshold,
                          "rule": rule.format(f=frac),
                          "message": f"{_WORDS[key]} {_fmt_metric(key, m)} against the "
                                     f"reference's {_fmt_metric(key, r)}"})
    if flags:
        recipe = (effort or {}).get("recipe")
        bound = budget_bound(effort)
        if bound:
            more = "more training: a larger --budget"
            if effort and effort.get("share_s") is not None:
                more += f" (its share was {effort['share_s']:.0f} s"
                more += f" of {budget_s:.0f} s)" if budget_s else ")"
        elif recipe in _CONVERGES:
            more = (f"not more time: its training ended by itself ({effort['stopped_by']}), so "
                    "the model's settings are what limit it")
        else:
            unit = "epochs" if effort.get("epochs") is not None else "steps"
            more = (f"more {unit} ({recipe or 'the model'}({unit}=N), with the --budget for "
                    f"them): it stopped at the {unit} it was given ({effort['stopped_by']})")
        extra = _recipe_advice(recipe, data_kind)
        advice = more + (f"; {extra}" if extra else "")
        for f in flags:
            f["advice"] = advice
            f["budget_bound"] = bound
    return flags


# models whose training ends by itself (EM converges, a closed form): more time does not help
_CONVERGES = {"gmm", "bmm", "ppca"}


def budget_bound(effort: dict | None) -> bool:
    """Whether a row's training was stopped by its time budget (True when the run does not
    say): a flagged model that was is "not trained well enough at its budget"; one whose
    training ended by itself (EM converged, a schedule ran to its end) is limited by its
    settings instead."""
    stopped = (effort or {}).get("stopped_by")
    return stopped is None or "budget" in str(stopped)


def compute_flags(results: dict, efforts: dict | None = None, *, data_kind: str = "") -> dict[str, list]:
    """:func:`flag_model` for every model row of ``results`` against its reference row:
    ``{row: [flag, ...]}`` (the reference row itself is not flagged). ``efforts`` maps a row
    to its :func:`run_effort` (default: each row's ``training`` entry)."""
    ref = results["models"].get(REFERENCE_ROW_NAME)
    budget = (results.get("time") or {}).get("budget_s")
    out = {}
    for name, ev in results["models"].items():
        if name == REFERENCE_ROW_NAME:
            continue
        effort = (efforts or {}).get(name) or ev.get("training")
        out[name] = flag_model(ev, ref, effort=effort, budget_s=budget, data_kind=data_kind)
    return out


def _flags_of(results: dict, name: str) -> list[dict]:
    ev = results["models"].get(name, {})
    return ev.get("flags") or []


# ------------------------------------------------------------------------------ effort
# what a row's settings are, among the keys of its config.json, in this order
_SETTINGS = ("latent_dim", "likelihood", "preprocess", "components", "covariance_type", "objective", "particles",
             "stochastic_layers", "flow", "transforms", "arch", "hidden", "width", "depth", "pack",
             "loss", "fit", "batch_size", "lr")


def run_effort(run_dir, *, share_s: float | None = None, seconds: float | None = None,
               how: str | None = None) -> dict:
    """What a row's training was, from its run folder: ``{"recipe", "how", "share_s",
    "seconds", "steps", "epochs", "iterations", "closed_form", "stopped_by", "settings"}``
    (``None`` where the run does not say). ``epochs`` are the epochs actually run (not the
    number asked for), from ``progress.json``; ``steps`` the optimiser steps (GAN, SVI)."""
    run_dir = Path(run_dir)

    def read(name):
        try:
            return json.loads((run_dir / name).read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    cfg, progress = read("config.json"), read("progress.json")
    done = cfg.get("completed") or {}
    recipe = cfg.get("model") if isinstance(cfg.get("model"), str) else None
    step = done.get("step")
    effort = {"recipe": recipe, "how": how, "share_s": share_s, "seconds": seconds,
              "steps": None, "epochs": None, "iterations": None, "closed_form": False,
              "stopped_by": done.get("stopped_by") or progress.get("stopped_by"),
              "settings": {k: cfg[k] for k in _SETTINGS
                           if cfg.get(k) is not None and (k, cfg[k]) != ("preprocess", "none")}}
    if recipe == "ppca" and cfg.get("fit", "closed-form") == "closed-form":
        effort["closed_form"] = True
        for k in ("batch_size", "lr"):  # options of --fit svi that the closed form does not use
            effort["settings"].pop(k, None)
    elif progress.get("epochs_run") is not None:
        effort["epochs"] = progress["epochs_run"]
        effort["steps"] = progress.get("steps_run", step)
    elif recipe in ("gmm", "bmm"):
        effort["iterations"] = step
    else:
        effort["steps"] = step
    return effort


def effort_text(effort: dict | None) -> str:
    """"24 epochs (4,800 steps) in 15.1 s of a 15 s share, stopped by: time budget ..."."""
    if not effort:
        return "training effort not recorded"
    if effort.get("epochs") is not None:
        what = _count(effort["epochs"], "epoch")
        if effort.get("steps") is not None:
            what += f" ({_count(effort['steps'], 'step')})"
    elif effort.get("iterations") is not None:
        what = f"{_count(effort['iterations'], 'EM iteration')} (best restart)"
    elif effort.get("closed_form"):
        what = "closed-form fit"
    elif effort.get("steps") is not None:
        what = _count(effort["steps"], "step")
    else:
        what = "steps not recorded"
    if effort.get("seconds") is not None:
        what += f" in {effort['seconds']:.1f} s"
        if effort.get("share_s") is not None:
            what += f" of a {effort['share_s']:.0f} s share"
    if effort.get("stopped_by"):
        what += f"; stopped by: {effort['stopped_by']}"
    return what


def settings_text(effort: dict | None) -> str:
    s = (effort or {}).get("settings") or {}
    return ", ".join(f"{k}={v}" for k, v in s.items()) or "defaults"


def short_effort(effort: dict | None) -> str:
    if not effort:
        return ""
    if effort.get("epochs") is not None:
        return _count(effort["epochs"], "epoch")
    if effort.get("iterations") is not None:
        return _count(effort["iterations"], "EM iter")
    if effort.get("closed_form"):
        return "closed form"
    if effort.get("steps") is not None:
        return _count(effort["steps"], "step")
    return ""


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


# ------------------------------------------------------------------------------ the verdict
def _names(names: list[str], results: dict) -> str:
    shown = [n + (" (flagged)" if _flags_of(results, n) else "") for n in names]
    if len(shown) <= 1:
        return "".join(shown)
    return ", ".join(shown[:-1]) + " and " + shown[-1]


def _rep_words(rep: str) -> str:
    if rep.startswith("dequantized-") and rep.endswith("-level"):
        return f"dequantized {rep[len('dequantized-'):]} data"  # "dequantized 17-level data"
    return {"binary": "binary images", "dequantized-8bit": "dequantized 8-bit images",
            "dequantized": "the dequantized data", "continuous": "the continuous data",
            "raw-pixels": "raw grey values (a density, not a likelihood of images)"}.get(rep, rep)


def _lik_short(entry: dict) -> str:
    rep = entry.get("representation") or ""
    if _is_image_rep(rep) and entry.get("bits_per_dim") is not None:
        se = entry.get("bits_per_dim_stderr")
        return f"{_num(entry['bits_per_dim'], se, '.4g')} bits/dim ({likelihood_label(entry)})"
    return f"{_num(entry['value'], entry.get('stderr'))} nats ({likelihood_label(entry)})"


def _likelihood_sentences(results: dict) -> list[str]:
    """The best likelihood on each representation, ties named, and the rows without one."""
    models = results["models"]
    names = [n for n in models if n != REFERENCE_ROW_NAME]
    sentences = []
    ref = models.get(REFERENCE_ROW_NAME) or {}
    true_ll = _metric(ref, "true_log_likelihood") or next(
        (_metric(models[n], "true_log_likelihood") for n in names if _metric(models[n], "true_log_likelihood")), None)
    for rep in representations(results):
        ranking = _likelihood_ranking(results, rep)
        best_name, best = ranking[0]
        tied = [n for n, e in ranking[1:] if _likelihood_tie(results, best_name, best, n, e)]
        where = _rep_words(rep)
        if len(ranking) == 1:
            s = f"On {where}, only {_names([best_name], results)} has a likelihood: {_lik_short(best)}"
        elif tied:
            s = (f"On {where}, {_names([best_name, *tied], results)} tie for the best likelihood "
                 f"(within two standard errors): "
                 + "; ".join(f"{n} {_lik_short(e)}" for n, e in ranking if n in [best_name, *tied]))
            rest = [(n, e) for n, e in ranking if n not in [best_name, *tied]]
            if rest:
                s += f"; then {_names([rest[0][0]], results)} with {_lik_short(rest[0][1])}"
                if rest[1:]:
                    s += f" (then {_names([n for n, _ in rest[1:]], results)})"
        else:
            runner, e2 = next((n, e) for n, e in ranking[1:])
            s = (f"On {where}, {_names([best_name], results)} has the best likelihood, "
                 f"{_lik_short(best)}, ahead of {_names([runner], results)} with {_lik_short(e2)}")
            rest = [n for n, _ in ranking[2:]]
            if rest:
                s += f" (then {_names(rest, results)})"
        if rep == "continuous" and true_ll is not None:
            s += f"; the data's true density scores {_num(true_ll['value'], true_ll.get('stderr'))} nats"
        blurred = [n for n, e in ranking if _blurred(e)]
        behind = [n for n, e in ranking[1:]
                  if n not in tied and _kind(e) != "exact" and n not in blurred]
        if behind and _kind(best) == "exact":
            s += (f" ({' and '.join(behind)}: lower bound{'s' if len(behind) > 1 else ''}, the "
                  "true value can be higher)")
        if blurred:
            one = len(blurred) == 1
            s += (f" ({' and '.join(blurred)}: the AIS of {'its decoder' if one else 'their decoders'} "
                  "with Gaussian noise added (Wu et al. 2017), a stochastic lower bound on the "
                  f"density of {'that blurred decoder' if one else 'those blurred decoders'}, not "
                  f"of the model{'' if one else 's'} themselves)".replace("model themselves",
                                                                           "model itself"))
        sentences.append(s + ".")
        caveat = (results.get("data_caveats") or {}).get(rep)
        if caveat:  # what the data themselves make of these likelihoods
            sentences.append(f"Note: {caveat[:1].upper()}{caveat[1:]}.")
    reps = representations(results)
    if "continuous" in reps and "dequantized" in reps:  # a user's bin width on some rows only
        sentences.append("The continuous and the dequantized likelihoods of these data stand "
                         "apart because the rows were trained on different representations (see "
                         "the data options per run): train every row with the same --bin-width "
                         "(or every row without one) to score them in one column.")
    no_lik = [n for n in names if not model_likelihoods(models[n])]
    if no_lik:
        sentences.append(f"{_names(no_lik, results)} {'has' if len(no_lik) == 1 else 'have'} no "
                         "likelihood in this table.")

    return sentences


def _sample_sentences(results: dict) -> list[str]:
    """The best samples, ties named, and where the sample ranking disagrees with the
    likelihood ranking on each representation."""
    models = results["models"]
    names = [n for n in models if n != REFERENCE_ROW_NAME]
    sentences = []
    ref = models.get(REFERENCE_ROW_NAME) or {}
    keys = sample_ranking_metrics(results)
    if not keys:
        return sentences
    scored = [n for n in names if _metric(models[n], keys[0])]
    order = sorted(scored, key=lambda n: tuple(
        (-1 if _BETTER[k] == "higher" else 1) * float((_metric(models[n], k) or {"value": 0})["value"])
        for k in keys))
    best = order[0]
    tied = [n for n in order[1:] if _sample_compare(models[best], models[n], keys) == 0]

    def quote(n):
        parts = [f"{_WORDS[k]} {_fmt_metric(k, _metric(models[n], k))}" for k in keys
                 if _metric(models[n], k)]
        parts += [f"{_WORDS[k]} {_fmt_metric(k, _metric(models[n], k))}" for k in _QUOTED
                  if k not in keys and _metric(models[n], k)]
        return ", ".join(parts)

    by = " then ".join(_WORDS[k] for k in keys)
    if tied:
        s = (f"By {by}, {_names([best, *tied], results)} tie for the best samples: "
             + "; ".join(f"{n} {quote(n)}" for n in [best, *tied]))
    else:
        s = f"By {by}, {_names([best], results)} has the best samples, {quote(best)}"
        if len(order) > 1:
            s += f", ahead of {_names([order[1]], results)} with {quote(order[1])}"
    if ref and all(_metric(ref, k) for k in keys):
        s += f"; real validation data score {', '.join(f'{_WORDS[k]} {_fmt_metric(k, _metric(ref, k))}' for k in keys)}"
    sentences.append(s + ".")

    # disagreements between the two rankings, pair by pair on each representation
    disagree = []
    for rep in representations(results):
        ranking = _likelihood_ranking(results, rep)
        for i, (a, ea) in enumerate(ranking):
            better_samples = [b for b, eb in ranking[i + 1:]
                              if a in scored and b in scored
                              and not _likelihood_tie(results, a, ea, b, eb)
                              and _sample_compare(models[a], models[b], keys) < 0]
            if better_samples:
                disagree.append(f"{a} has a better likelihood on {_rep_words(rep)} than "
                                f"{_names(better_samples, results)}, but worse samples")
    if disagree:
        sentences.append("The two rankings disagree: " + "; ".join(disagree) + ".")
    elif any(len(_likelihood_ranking(results, rep)) > 1 for rep in representations(results)):
        sentences.append("Where two models have likelihoods on the same representation, the "
                         "likelihood and sample rankings agree.")
    lik_best = {_likelihood_ranking(results, rep)[0][0] for rep in representations(results)}
    if best not in lik_best and not model_likelihoods(models[best]):
        sentences.append(f"The model with the best samples, {best}, has no likelihood to set "
                         "against them.")
    return sentences


def _flag_sentences(results: dict) -> list[str]:
    """The flagged rows, by what limits them: the budget or their settings."""
    models = results["models"]
    names = [n for n in models if n != REFERENCE_ROW_NAME]
    sentences = []
    flagged = [n for n in names if _flags_of(results, n)]
    undertrained = [n for n in flagged if budget_bound(models[n].get("training"))]
    limited = [n for n in flagged if n not in undertrained]

    def why(n):
        effort = short_effort(models[n].get("training"))
        secs = (models[n].get("training") or {}).get("seconds")
        effort += f" in {secs:.0f} s" if effort and secs is not None else ""
        return (f"{n} ({'; '.join(f['message'] for f in _flags_of(results, n))}"
                + (f"; {effort}" if effort else "") + ")")

    if undertrained:
        sentences.append(("Flagged as not trained well enough at its budget, so that its place in "
                          "these rankings says little about what the model can do: "
                          if len(undertrained) == 1 else
                          "Flagged as not trained well enough at their budgets, so that their "
                          "places in these rankings say little about what the models can do: ")
                         + "; ".join(why(n) for n in undertrained) + ".")
    if limited:
        sentences.append("Flagged for samples far from the data although training ended by itself "
                         "(the model's settings, not the budget, limit it): "
                         + "; ".join(why(n) for n in limited) + ".")
    if flagged:
        sentences.append("See Flagged models for what would help.")
    return sentences


def verdict(results: dict) -> str:
    """The report's first paragraph: which model has the best likelihood on each
    representation, which has the best samples, where the two rankings disagree, ties within
    two standard errors named as ties, and the flagged models named as flagged."""
    sentences = _likelihood_sentences(results) + _sample_sentences(results) + _flag_sentences(results)
    if not sentences:
        return "No model of this comparison has a likelihood or sample metrics to rank."
    return " ".join(sentences)
