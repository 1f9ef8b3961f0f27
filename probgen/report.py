"""The report a person reads: ``report.md`` and a standalone ``report.html``.

The report opens with a verdict (:func:`probgen.verdict.verdict`: the best likelihood on each
representation, the best samples, where the two rankings disagree, the models flagged as not
trained well enough), then one table with a likelihood column per representation (bits/dim on
images, nats on continuous data; each cell names its kind of estimate) beside the sample
metrics, a glossary of its columns, what each row is (its n, training effort and settings),
every likelihood estimate, and the figures. ``report.html`` is rendered from the same lines
as ``report.md`` (:func:`markdown_to_html`), so that the two say the same thing.

The HTML page embeds its figures as data URIs, so it can be mailed or opened anywhere; it
loads no script and no outside resource.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from probgen import verdict as vd
from probgen.verdict import REFERENCE_ROW_NAME

__all__ = ["write_reports", "sample_figures", "figure_sample_count", "scoring_samples", "format_metric", "table_rows", "headline_rows", "HEADLINE_METRICS",
           "thumbnail_uri", "comparison_table", "glossary", "GLOSSARY", "LIKELIHOOD_KEYS",
           "markdown_to_html", "REFERENCE_ROW_NAME"]

PARZEN_NOTE = (
    "Parzen-window estimates are shown for comparison with the older literature only: Theis, "
    "van den Oord and Bethge (2016) show they can rank a k-means model above real data."
)


def _metric_for(metrics: dict, name: str) -> tuple[str, dict | None]:
    return name, metrics.get(name)


def _iwae_k(models: dict) -> str:
    """The k of the IWAE column, from the models that have the bound ("" when none has)."""
    ks = sorted({((ev["metrics"].get("iwae") or {}).get("extra") or {}).get("k")
                 for ev in models.values()} - {None})
    return "/".join(map(str, ks))


def blank_reason(key: str) -> str:
    """Why a column is blank when a model's evaluation has no entry for it at all (the table
    of metrics, :func:`probgen.eval.registry.blank_reason`)."""
    from probgen.eval import registry

    return registry.blank_reason(key)


def format_metric(m: dict | None) -> str:
    if m is None:
        return ""
    v = m.get("value")
    if v is None:
        return ""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan"
    s = f"{v:.4g}" if isinstance(v, float) else str(v)
    if m.get("stderr") is not None:
        s += f" ± {m['stderr']:.2g}"
    outside = (m.get("extra") or {}).get("outside_support")
    if outside:  # a sample log-density is a mean over the samples where the density is positive
        s += f" ({100 * outside:.3g}% of samples outside the support)"
    rep = m.get("representation")
    if rep and rep != "continuous":  # a likelihood of images says of which representation
        bpd = m.get("bits_per_dim")
        s += f" [{rep}" + (f"; {bpd:.3g} bits/dim" if bpd is not None else "") + "]"
    return s


def table_rows(results: dict, columns) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows (a cell per column) and footnotes (the reasons for blanks)."""
    models = results["models"]
    used = [c for c in columns if any(_metric_for(ev["metrics"], c[0])[1] is not None for ev in models.values())]
    header = ["model"] + [c[1] + (f" (k={_iwae_k(models)})" if c[0] == "iwae" else "") for c in used]
    rows, notes = [], []
    for name, ev in models.items():
        row = [name]
        for col, title, _ in used:
            key, m = _metric_for(ev["metrics"], col)
            cell = format_metric(m)
            if not cell:
                reason = (m or {}).get("reason")
                if reason is None and name == REFERENCE_ROW_NAME:
                    reason = "reference row: real validation examples, not a model"
                reason = reason or blank_reason(col)
                notes.append(f"{name} / {title}: {reason}")
                cell = f"— [{len(notes)}]"
            row.append(cell)
        rows.append(row)
    return header, rows, notes


# the columns a summary (the demo's index) shows for each comparison, when a model has them
HEADLINE_METRICS = ("log_likelihood", "elbo", "iwae", "true_log_likelihood", "modes_covered",
                    "high_quality_fraction", "reverse_kl", "frechet_distance", "precision", "recall",
                    "coverage", "class_histogram")


def headline_rows(results: dict, columns) -> tuple[list[str], list[list[str]]]:
    """The headline columns of a comparison's table: a likelihood column per representation
    and the sample metrics of :data:`HEADLINE_METRICS` that some model has; header and rows,
    blanks as "—" (the report gives their reasons)."""
    cols = [c for c in columns if c[0] in HEADLINE_METRICS]
    header, rows, _ = comparison_table(results, cols, details=False)
    return header, [[c if not c.startswith("— [") else "—" for c in r] for r in rows]


# the metrics that are likelihoods: in the table they become one column per representation
LIKELIHOOD_KEYS = ("log_likelihood", "elbo", "iwae", "ais", "parzen", "true_log_likelihood")

# one line per column: (unit, definition); the likelihood columns are described per representation
GLOSSARY = {
    "n": ("test examples", "how many test examples each likelihood is averaged over"),
    "training": ("epochs, steps or EM iterations",
                 "the training the row's model actually ran within its share of the budget"),
    "modes_covered": ("modes", "modes of the toy mixture that received at least 0.2 x their "
                      "expected count of high-quality samples (higher is better)"),
    "high_quality_fraction": ("fraction", "share of samples within 3 sigma of their nearest "
                              "mode (higher is better)"),
    "reverse_kl": ("nats", "KL(histogram of the samples over their nearest modes || the true "
                   "mixture weights) (lower is better)"),
    "frechet_distance": ("squared feature units", "Frechet distance between Gaussians fitted to "
                         "the feature network's features of samples and of test examples "
                         "(a local classifier, not Inception: not comparable with published "
                         "FID; lower is better), ± its bootstrap standard error over 50 "
                         "resamples; the reference row's value is what sampling noise alone "
                         "gives at this n"),
    "kernel_distance": ("squared feature units", "unbiased polynomial-kernel MMD^2 (KID) in the "
                        "same features, mean ± std over 100 subsets (lower is better)"),
    "energy_distance": ("data units", "energy distance between samples and test points (lower "
                        "is better)"),
    "mmd": ("squared kernel units", "maximum mean discrepancy between samples and test points "
            "(lower is better)"),
    "precision": ("fraction", "share of samples inside the 3-nearest-neighbour balls of test "
                  "examples, among the feature network's features on images and in the training "
                  "data's standard units on your own vectors (Kynkaanniemi et al. 2019; "
                  "fidelity, higher is better)"),
    "recall": ("fraction", "share of test examples inside the 3-nearest-neighbour balls of "
               "samples, in the same space (diversity, higher is better)"),
    "density": ("ratio", "mean number of test examples' 5-NN balls holding each sample, over 5 "
                "(Naeem et al. 2020; about 1 for real data)"),
    "coverage": ("fraction", "share of test examples whose 5-NN ball holds at least one sample "
                 "(Naeem et al. 2020; higher is better)"),
    "class_histogram": ("normalised entropy", "entropy of the feature network's class "
                        "predictions on the samples over log(classes): 1 = spread evenly, 0 = "
                        "one class (higher is better)"),
    "train_time": ("s", "seconds the training itself took (wall clock)"),
    "flag": ("", "why the model is flagged as not trained well enough at its budget (see "
             "Flagged models)"),
}

_REP_GLOSSARY = {
    "binary": ("bits/dim, nats per image beside", "log P of the 0/1 image under a model of "
               "binary pixels, as -log P / (D ln 2) bits per pixel; lower is better"),
    "dequantized-8bit": ("bits/dim, nats per image beside", "a lower bound on log P of the 8-bit "
                         "image, E_u log p((k + u)/256) - D log 256 (uniform dequantization), "
                         "in bits per dimension; lower is better"),
    "continuous": ("nats per example", "log p(x) of the test points, a density; higher is better"),
    "raw-pixels": ("nats per image", "a density of grey values on [0, 1]: not a probability of "
                   "images, unbounded on pixels that are always 0, and not comparable with any "
                   "other column"),
}


def _rep_glossary(rep: str) -> tuple[str, str]:
    """(unit, definition) of the likelihood column of representation ``rep``."""
    if rep in _REP_GLOSSARY:
        return _REP_GLOSSARY[rep]
    if rep.startswith("dequantized"):  # "dequantized-L-level", or "dequantized" for a user's bin width
        levels = rep[len("dequantized-"):-len("-level")] if rep.endswith("-level") else None
        what = f"the image of {levels} levels per value" if levels else "the discrete values"
        per = "image" if levels else "example"  # a user's bin width: vectors as well as images
        return (f"bits/dim, nats per {per} beside", f"a lower bound on log P of {what}, E_u log "
                "p(x + u w) + D log w with w the width of a level (uniform dequantization), in "
                "bits per dimension; lower is better")
    return ("nats", "the log-likelihood on this representation")


def _rep_title(rep: str) -> str:
    if rep == "binary" or rep.startswith("dequantized"):
        return f"log-lik {rep} (bits/dim)"
    if rep == "raw-pixels":
        return "density of raw pixels (nats)"
    return f"log-lik {rep} (nats)"


# the flag column's words for each reason (the Flagged models section gives the numbers)
_FLAG_WORDS = {"precision": "low precision", "coverage": "low coverage",
               "class_histogram": "collapsed classes", "modes_covered": "missing modes",
               "high_quality_fraction": "low HQ frac"}


def comparison_table(results: dict, columns, *, details: bool = True):
    """The report's table: header, rows and footnotes (the reasons for blanks).

    Columns: the model; with ``details`` its n (test examples scored) and training effort;
    one likelihood column per representation some model has a likelihood on
    (:func:`probgen.verdict.model_likelihoods`; binary and dequantized never share one), each
    cell naming its kind of estimate with its ± (the reference row holds the data's true
    log-likelihood where it is known); then every column of ``columns`` that is not a
    likelihood; a ``flag`` column when some model is flagged.
    """
    models = results["models"]
    reps = vd.representations(results)
    sample_cols = [c for c in columns if c[0] not in LIKELIHOOD_KEYS
                   and any(_metric_for(ev["metrics"], c[0])[1] is not None for ev in models.values())]
    flagged = any(ev.get("flags") for ev in models.values())
    header = ["model"] + (["n", "training"] if details else []) + [_rep_title(r) for r in reps] \
        + [c[1] for c in sample_cols] + (["flag"] if flagged else [])
    rows, notes = [], []

    def blank(name, title, reason):
        notes.append(f"{name} / {title}: {reason}")
        return f"— [{len(notes)}]"

    for name, ev in models.items():
        is_ref = name == REFERENCE_ROW_NAME
        row = [name]
        if details:
            row.append(str(ev.get("n", "")))
            row.append("reference" if is_ref else (vd.short_effort(ev.get("training")) or "—"))
        liks = {} if is_ref else vd.model_likelihoods(ev)
        true_ll = ev["metrics"].get("true_log_likelihood") if is_ref else None
        for rep in reps:
            if rep in liks:
                cell = vd.format_likelihood(liks[rep])
                caveat = liks[rep].get("caveat") or liks[rep].get("note")
                if caveat:  # e.g. the observation model behind a GAN's AIS likelihood
                    notes.append(f"{name} / {_rep_title(rep)}: {caveat}")
                    cell += f" [{len(notes)}]"
                row.append(cell)
            elif true_ll is not None and true_ll.get("value") is not None and \
                    (true_ll.get("representation") or "continuous") == rep:
                row.append(vd.format_likelihood(vd.metric_entry("true_log_likelihood", true_ll, rep),
                                                label="the data's true density"))
            elif is_ref:
                row.append(blank(name, _rep_title(rep),
                                 "reference row: real validation examples, not a model"))
            elif liks:
                row.append(blank(name, _rep_title(rep), f"scored on {', '.join(liks)} data only "
                                 "(the representation its run was trained on)"))
            else:
                reasons = [m.get("reason") for k, m in ev["metrics"].items()
                           if k in ("log_likelihood", "elbo", "ais") and m.get("reason")]
                reason = "; ".join(dict.fromkeys(reasons)) or "no likelihood on this representation"
                row.append(blank(name, _rep_title(rep), reason))
        for col, title, _ in sample_cols:
            _, m = _metric_for(ev["metrics"], col)
            cell = format_metric(m)
            if not cell:
                reason = (m or {}).get("reason")
                if reason is None and is_ref:
                    reason = "reference row: real validation examples, not a model"
                cell = blank(name, title, reason or blank_reason(col))
            row.append(cell)
        if flagged:
            row.append(", ".join(_FLAG_WORDS.get(f["metric"], f["metric"]) for f in ev.get("flags") or []))
        rows.append(row)
    return header, rows, notes


def glossary(results: dict, columns) -> list[str]:
    """One line per column of :func:`comparison_table`: its title, unit and definition."""
    header, _, _ = comparison_table(results, columns)
    keys = {c[1]: c[0] for c in columns}
    reps = {_rep_title(r): r for r in vd.representations(results)}
    lines = []
    for title in header[1:]:
        key = keys.get(title, title)
        if title in reps:
            unit, text = _rep_glossary(reps[title])
            lines.append(f"- **{title}** ({unit}): {text}. Each cell names its estimate: exact; "
                         "ELBO <= IWAE-k <= log p (bounds); AIS (a stochastic lower bound); on "
                         "dequantized data the dequantization bound of that estimate.")
        elif key in GLOSSARY:
            unit, text = GLOSSARY[key]
            lines.append(f"- **{title}**" + (f" ({unit})" if unit else "") + f": {text}.")
    return lines


def thumbnail_uri(path, width: int = 240) -> str:
    """A PNG data URI of the figure at ``path``, scaled down to ``width`` pixels wide."""
    import io

    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, max(1, round(im.height * width / im.width))), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def figure_sample_count(data) -> int:
    """Samples the report shows of each model: 64 images, or 256 points."""
    return 64 if data.kind == "image" else 256


def scoring_samples(row: dict, n: int):
    """The first ``n`` samples that scoring row ``row`` drew
    (:func:`probgen.comparison.recording_samples`), or None where it drew fewer."""
    s = row.get("samples")
    return s[:n] if s is not None and s.shape[0] >= n else None


def sample_figures(rows: dict, out: Path) -> list[tuple[str, Path]]:
    """One figure of samples per row, ``out/figures/samples_NAME.png``: the samples its scoring
    drew (``rows[NAME]["samples"]``, :func:`probgen.comparison.recording_samples`), drawn here
    only for a row whose scoring drew fewer (a model without sample metrics)."""
    import torch

    from probgen import plots

    figs = []
    for name, r in rows.items():
        x = scoring_samples(r, figure_sample_count(r["data"]))
        if x is None:
            with torch.no_grad():
                x = r["model"].sample(figure_sample_count(r["data"])).detach().cpu()
        p = plots.samples_figure(x, r["data"].to("cpu"), out / "figures" / f"samples_{name}.png",
                                 title=f"samples: {name}")
        figs.append((f"Samples: {name}", p))
    return figs


def _figures(results: dict, rows: dict, out: Path) -> list[tuple[str, Path]]:
    """Figures for the report: samples of every model, and the comparison figures."""
    from probgen import plots

    figs = []
    fig = plots.likelihood_vs_samples(results, out / "figures" / "likelihood_vs_samples.png")
    if fig is not None:
        figs.append(("Likelihood against sample quality", fig))
    figs += sample_figures(rows, out)
    for title, fname in (("Per-example log-likelihoods", "per_example_loglik.png"),
                         ("Number of mixture components: BIC and PSIS-LOO", "model_choice.png")):
        if (out / "figures" / fname).exists():
            figs.append((title, out / "figures" / fname))
    return figs


def _reference_text(results: dict) -> str | None:
    """How the sample metrics were computed and how to read them against the reference row."""
    ref = results.get("reference")
    if not ref or not any("frechet_distance" in ev["metrics"] for ev in results["models"].values()):
        return None
    net = next((ev["metrics"] for ev in results["models"].values() if "frechet_distance" in ev["metrics"]), {})
    name = net["frechet_distance"].get("extra", {}).get("feature_network", "a classifier")
    acc = (net.get("feature_net_accuracy") or {}).get("value")
    acc_text = f", test accuracy {acc:.2%}" if acc is not None else ""
    return (f"Sample metrics (Frechet, kernel, precision, recall, density, coverage) put "
            f"{ref['n']} samples of each model against as many test examples, in the feature "
            f"space of {name} (a classifier trained on the training split{acc_text}); each model is scored against "
            "the test split in its own representation (binarised or grey), the one its samples "
            "are drawn in. The reference row puts as many real examples of the validation split "
            f"(in the representation of the {ref['representation_of']} run: "
            f"`{ref['data_options']}`) in the place of samples: it is what a perfect model would "
            "score, not zero, and every model's row is read against it.")


def _costs_section(results: dict) -> list[str]:
    """What the costly estimators (the AIS of a decoder) took at this comparison's settings:
    seconds, CPU seconds, threads, test images, transitions, chains, and the BDMC images."""
    from probgen.eval import registry

    lines = []
    for name, costs in (results.get("estimator_costs") or {}).items():
        for key, c in costs.items():
            title = registry.METRICS[key].title if key in registry.METRICS else key
            bdmc = (f", BDMC on {c['n_bdmc_images']} simulated images ({c['bdmc_seconds']:.0f} s)"
                    if c.get("n_bdmc_images") else "")
            lines.append(
                f"- **{name}**, {title}: {c['seconds']:.0f} s ({c['cpu_seconds']:.0f} CPU s on "
                f"{c['threads']} thread{'s' if c['threads'] != 1 else ''}) for "
                f"{c['n_images']} test examples, {c['n_steps']} transitions of "
                f"{c['n_leapfrog']} leapfrog steps, {c['n_chains']} chains; choosing sigma on "
                f"{c['n_val_images']} validation examples {c['sigma_seconds']:.0f} s{bdmc}")
    if not lines:
        return []
    opts = ", ".join(f"{k}={v}" for k, v in (results.get("estimator_options") or {}).items()
                     if k.startswith(("decoder_ais", "bdmc")))
    return ["", "What the likelihood of the models without a density cost at this comparison's "
            f"settings ({opts}; scoring is not counted in the training budget):", "", *lines]


def write_reports(results: dict, rows: dict, out: Path, *, columns) -> tuple[Path, Path]:
    out = Path(out)
    figs = _figures(results, rows, out)
    md = [f"# probgen compare: {results['data']}", "", vd.verdict(results), ""]
    md += _main_section(results, columns)
    md += _rows_section(results)
    md += _estimates_section(results, columns)
    md += ["", "## Data options per run", ""]
    md += [f"- **{n}**: `{o}` ({results['runs'][n]})" for n, o in results["data_options"].items()]
    t = results.get("time")
    if t:
        md += ["", "## Time", "",
               f"Training budget {t['budget_s']:.0f} s; training took {t['train_total_s']:.0f} s and "
               f"scoring {t['score_total_s']:.0f} s ({t['note']}).", ""]
        for n in t["share_s"]:
            how = str(((results["models"].get(n) or {}).get("training") or {}).get("how") or "")
            trained = (f"trained {t['train_s'][n]:.1f} s" if not how.startswith("reused") else
                       f"{how} (its training took "
                       f"{results['models'][n]['training'].get('seconds') or 0:.1f} s then)")
            md.append(f"- **{n}**: share {t['share_s'][n]:.0f} s, {trained}, scored "
                      f"{t['score_s'].get(n, 0):.1f} s")
    md += _costs_section(results)
    md += ["", "## VAE against GAN, measured", "",
           "| model | likelihood available | reconstruction MSE of a given x | seconds per image | sharpness (data) |",
           "|---|---|---|---|---|"]
    for n, e in results["vae_vs_gan"].items():
        mse = e.get("reconstruction_mse")
        mse_cell = f"{mse:.4g}" if mse is not None else f"— ({e.get('reconstruction_reason', '')})"
        secs = e.get("reconstruction_seconds_per_image")
        secs_cell = f"{secs:.3g}" if secs is not None else "—"
        sharp = e.get("sharpness")
        sharp_cell = f"{sharp:.3g} ({e['sharpness_of_data']:.3g})" if sharp is not None else "—"
        md.append(f"| {n} | {e['likelihood']} | {mse_cell} | {secs_cell} | {sharp_cell} |")
    if results.get("paired_differences"):
        md += ["", "## Paired differences of per-example log-likelihoods (a - b)", "",
               "| a | b | mean difference | note |", "|---|---|---|---|"]
        for p in results["paired_differences"]:
            if p.get("value") is None:
                md.append(f"| {p['a']} | {p['b']} | — | {p['reason']} |")
            else:
                md.append(f"| {p['a']} ({p['a_estimate']}) | {p['b']} ({p['b_estimate']}) | "
                          f"{p['value']:.4g} ± {p['stderr']:.2g} nats | paired over the same test points |")
    from probgen.model_choice.record import markdown as model_choice_section

    md += model_choice_section(results.get("model_choice"))
    md += ["", "## Figures", ""] + [f"![{t}](figures/{p.name})" for t, p in figs]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md) + "\n")

    html_path = out / "report.html"
    html_path.write_text(markdown_to_html(md, out, title=f"probgen compare: {results['data']}"))
    print(f"wrote {out / 'results.json'}, {md_path} and {html_path}")
    return md_path, html_path


def _main_section(results: dict, columns) -> list[str]:
    """The table, its blanks, its glossary, the reference text and the flagged models."""
    header, body, notes = comparison_table(results, columns)
    md = ["Every model below was scored by the same evaluation code on the same test split. "
          "Each likelihood is the mean over the n test examples ± its standard error, on one "
          "representation of the data per column: numbers in different columns are not "
          "comparable. Bounds are bounds: ELBO <= IWAE-k <= log p(x); AIS is a stochastic lower "
          "bound." + _true_density_caption(results), ""]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in body]
    if notes:
        md += ["", "Blanks and notes:", ""] + [f"{i + 1}. {n}" for i, n in enumerate(notes)]
    md += ["", "Columns:", ""] + glossary(results, columns)
    ref_text = _reference_text(results)
    if ref_text:
        md += ["", ref_text]
    if any("parzen" in ev["metrics"] for ev in results["models"].values()):
        md += ["", f"> {PARZEN_NOTE}"]
    flagged = {n: ev["flags"] for n, ev in results["models"].items() if ev.get("flags")}
    if flagged:
        md += ["", "## Flagged models", "",
               "A model whose samples are far from the reference row's is not ranked silently: "
               f"flagged when its precision or coverage is below {vd.PRECISION_FRACTION:g} x the "
               f"reference's, its normalised class entropy below {vd.CLASS_ENTROPY_FRACTION:g} x "
               "the reference's, it covers fewer toy modes than the reference, or its "
               f"high-quality fraction is below {vd.HQ_FRACTION:g} x the reference's.", ""]
        for n, fl in flagged.items():
            effort = results["models"][n].get("training")
            what = ("not trained well enough at its budget" if vd.budget_bound(effort) else
                    "samples far from the data although its training ended by itself")
            md.append(f"- **{n}**: {what}: "
                      f"{'; '.join(f['message'] for f in fl)}. It had {vd.effort_text(effort)}. "
                      f"What would help: {fl[0]['advice']}.")
    return md


def _true_density_caption(results: dict) -> str:
    for ev in results["models"].values():
        m = ev["metrics"].get("true_log_likelihood")
        if m and m.get("value") is not None:
            se = f" ± {m['stderr']:.2g}" if m.get("stderr") is not None else ""
            return (f" The data's true density scores {m['value']:.4g}{se} nats per test example "
                    "(in the reference row): the value a perfect density model would reach.")
    return ""


def _rows_section(results: dict) -> list[str]:
    """Each row's n, training effort and settings."""
    models = results["models"]
    ref = results.get("reference") or {}
    md = ["", "## What each row is", ""]
    for name, ev in models.items():
        if name == REFERENCE_ROW_NAME:
            md.append(f"- **{name}**: {ref.get('n', ev.get('n', '?'))} real validation examples in "
                      "the place of samples; likelihoods: the data's true density where known.")
            continue
        effort = ev.get("training")
        samples = f", {ref['n']} samples for the sample metrics" if ref.get("n") else ""
        md.append(f"- **{name}**: n = {ev.get('n', '?')} test examples{samples}; trained "
                  f"{vd.effort_text(effort)}; settings: {vd.settings_text(effort)}.")
    return md


def _estimates_section(results: dict, columns) -> list[str]:
    """Every likelihood estimate of every row, as computed (the table shows the best one)."""
    cols = [c for c in columns if c[0] in LIKELIHOOD_KEYS and c[0] != "true_log_likelihood"]
    if not cols:
        return []
    sub = {**results, "models": {n: ev for n, ev in results["models"].items() if n != REFERENCE_ROW_NAME}}
    header, body, notes = table_rows(sub, cols)
    if len(header) < 2:
        return []
    md = ["", "## Every likelihood estimate", "",
          "The table above shows each model's best estimate per representation (exact, else AIS, "
          "else the largest IWAE-k, else the ELBO); here is every estimate computed, in nats per "
          "example, with the representation in brackets.", ""]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in body]
    if notes:
        md += ["", "Blanks:", ""] + [f"{i + 1}. {n}" for i, n in enumerate(notes)]
    return md


_CSS = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;line-height:1.4}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;"
        "text-align:right;vertical-align:top}td:first-child,th:first-child{text-align:left}"
        "th{background:#eee}figure{display:inline-block;margin:8px;vertical-align:top}"
        "img{max-width:520px}p.verdict{background:#f4f6fa;border-left:4px solid #4a6fa5;"
        "padding:.6em 1em}ul.glossary{font-size:small;color:#333}"
        "blockquote{color:#555;border-left:3px solid #ccc;margin:1em 0;padding-left:1em}")


def _inline(text: str) -> str:
    """Markdown's **bold** and `code` in escaped HTML."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def markdown_to_html(md_lines: list[str], folder: Path, *, title: str) -> str:
    """A standalone page from the report's markdown lines: headings, paragraphs (the first
    one, the verdict, set apart), tables (the first one ``id='results'``), lists, quotes, and
    figures embedded as data URIs from ``folder``."""
    import re

    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head><body>"]
    tables = 0
    block: str | None = None  # the open element: table, ul, ol

    def close():
        nonlocal block
        if block:
            parts.append(f"</{block}>")
        block = None

    paragraphs = 0
    glossary_next = False
    for line in md_lines:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if block != "table":
                close()
                ident = " id='results'" if tables == 0 else ""
                tables += 1
                parts.append(f"<table{ident}><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in cells)
                             + "</tr></thead>")
                block = "table"
            else:
                parts.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells) + "</tr>")
            continue
        m_img = re.match(r"!\[(.*)\]\((.*)\)$", line)
        m_ol = re.match(r"(\d+)\. (.*)$", line)
        if m_img:
            close()
            path = Path(folder) / m_img.group(2)
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode()
                parts.append(f"<figure><img alt='{html.escape(m_img.group(1))}' "
                             f"src='data:image/png;base64,{data}'><figcaption>"
                             f"{html.escape(m_img.group(1))}</figcaption></figure>")
        elif line.startswith("- "):
            if block != "ul":
                close()
                parts.append("<ul class='glossary'>" if glossary_next else "<ul>")
                block = "ul"
            parts.append(f"<li>{_inline(line[2:])}</li>")
        elif m_ol:
            if block != "ol":
                close()
                parts.append("<ol class='notes'>")
                block = "ol"
            parts.append(f"<li>{_inline(m_ol.group(2))}</li>")
        elif not line:
            if block in ("ul", "ol") or block == "table":
                close()
        else:
            close()
            glossary_next = line == "Columns:"
            if line.startswith("# "):
                parts.append(f"<h1>{_inline(line[2:])}</h1>")
            elif line.startswith("## "):
                parts.append(f"<h2>{_inline(line[3:])}</h2>")
            elif line.startswith("> "):
                parts.append(f"<blockquote>{_inline(line[2:])}</blockquote>")
            else:
                cls = " class='verdict'" if paragraphs == 0 else ""
                paragraphs += 1
                parts.append(f"<p{cls}>{_inline(line)}</p>")
    close()
    parts.append("</body></html>")
    return "\n".join(parts)
