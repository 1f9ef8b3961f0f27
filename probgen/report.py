"""The report a person reads: ``report.md`` and a standalone ``report.html``.

The HTML page embeds its figures as data URIs, so it can be mailed or opened anywhere; it
loads no script and no outside resource.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

__all__ = ["write_reports", "format_metric", "table_rows", "headline_rows", "HEADLINE_METRICS",
           "thumbnail_uri"]

REFERENCE_ROW_NAME = "validation data (reference)"  # probgen.comparison.REFERENCE_ROW

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
                    "class_histogram")


def headline_rows(results: dict, columns) -> tuple[list[str], list[list[str]]]:
    """The headline columns of a comparison's table (those of :data:`HEADLINE_METRICS` that
    some model has): header and rows, blanks as "—" (the report gives their reasons)."""
    cols = [c for c in columns if c[0] in HEADLINE_METRICS]
    header, rows, _ = table_rows(results, cols)
    return header, [[c if not c.startswith("— [") else "—" for c in r] for r in rows]


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


def _figures(results: dict, rows: dict, out: Path) -> list[tuple[str, Path]]:
    """Figures for the report: samples of every model, and the comparison figures."""
    from probgen import plots

    figs = []
    for name, r in rows.items():
        import torch

        with torch.no_grad():
            x = r["model"].sample(256 if r["data"].kind != "image" else 64).detach().cpu()
        p = plots.samples_figure(x, r["data"].to("cpu"), out / "figures" / f"samples_{name}.png")
        figs.append((f"Samples: {name}", p))
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


def write_reports(results: dict, rows: dict, out: Path, *, columns) -> tuple[Path, Path]:
    out = Path(out)
    header, body, notes = table_rows(results, columns)
    figs = _figures(results, rows, out)
    md = [f"# probgen compare: {results['data']}", "",
          "Every model below was scored by the same evaluation code on the same test split. "
          "Likelihoods are mean nats per test example, ± the standard error over examples. "
          "Bounds are bounds: ELBO <= IWAE-k <= log p(x); AIS is a stochastic lower bound. "
          "Each likelihood of images names its representation in brackets: [binary] is the "
          "probability of the 0/1 image; [dequantized-8bit] a lower bound on the probability of "
          "the 8-bit image (with bits per dimension, lower is better); [raw-pixels] a density of "
          "grey values, not a probability of images. Numbers on different representations are "
          "not comparable, even in one column; the data options of each run are listed below.", ""]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in body]
    if notes:
        md += ["", "Blanks:", ""] + [f"{i + 1}. {n}" for i, n in enumerate(notes)]
    ref_text = _reference_text(results)
    if ref_text:
        md += ["", ref_text]
    if any("parzen" in ev["metrics"] for ev in results["models"].values()):
        md += ["", f"> {PARZEN_NOTE}"]
    md += ["", "## Data options per run", ""]
    md += [f"- **{n}**: `{o}` ({results['runs'][n]})" for n, o in results["data_options"].items()]
    t = results.get("time")
    if t:
        md += ["", "## Time", "",
               f"Training budget {t['budget_s']:.0f} s; training took {t['train_total_s']:.0f} s and "
               f"scoring {t['score_total_s']:.0f} s ({t['note']}).", ""]
        md += [f"- **{n}**: share {t['share_s'][n]:.0f} s, trained {t['train_s'][n]:.1f} s, scored "
               f"{t['score_s'].get(n, 0):.1f} s" for n in t["share_s"]]
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
    mc = results.get("model_choice")
    if mc and "per_k" in mc:
        loo = f"PSIS-LOO chooses K = {mc['loo_choice']}" if mc.get("loo_choice") else mc.get("loo_reason", "")
        md += ["", "## Number of mixture components", "",
               f"BIC chooses K = {mc['bic_choice']}; {loo}"
               + (f" (true K = {mc['true_k']})." if mc.get("true_k") else "."), "",
               "| K | BIC | elpd_loo | max Pareto k | max R-hat | min ESS |", "|---|---|---|---|---|---|"]
        num = lambda v, f: "—" if v is None else format(v, f)  # noqa: E731
        for row in mc["per_k"]:
            se = f" ± {row['elpd_loo_se']:.1f}" if row.get("elpd_loo_se") is not None else ""
            md.append(f"| {row['k']} | {row['bic']:.1f} | {num(row.get('elpd_loo'), '.1f')}{se} | "
                      f"{num(row.get('pareto_k_max'), '.2f')} | {num(row.get('r_hat_max'), '.3f')} | "
                      f"{num(row.get('ess_min'), '.0f')} |")
    elif mc and "reason" in mc:
        md += ["", "## Number of mixture components", "", mc["reason"]]
    md += ["", "## Figures", ""] + [f"![{t}](figures/{p.name})" for t, p in figs]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md) + "\n")

    html_path = out / "report.html"
    html_path.write_text(_html(results, header, body, notes, figs, md, ref_text))
    print(f"wrote {out / 'results.json'}, {md_path} and {html_path}")
    return md_path, html_path


def _html(results, header, body, notes, figs, md_lines, ref_text=None) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>probgen compare: {esc(results['data'])}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#eee}"
             "figure{display:inline-block;margin:8px;vertical-align:top}img{max-width:480px}"
             "blockquote{color:#555;border-left:3px solid #ccc;margin:1em 0;padding-left:1em}</style>",
             "</head><body>", f"<h1>probgen compare: {esc(results['data'])}</h1>",
             "<p>Every model was scored by the same evaluation code on the same test split. "
             "Likelihoods are mean nats per test example ± standard error over examples.</p>",
             "<table id='results'><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) +
             "</tr></thead><tbody>"]
    for r in body:
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
    parts.append("</tbody></table>")
    if notes:
        parts.append("<ol class='notes'>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ol>")
    if ref_text:
        parts.append(f"<p class='reference'>{esc(ref_text).replace('`', '')}</p>")
    # the remaining sections, rendered from the markdown tables
    in_table = False
    for line in md_lines[md_lines.index("## Data options per run"):]:
        if line.startswith("## Figures"):
            break
        if line.startswith("## "):
            parts.append(f"<h2>{esc(line[3:])}</h2>")
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not in_table:
                parts.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in cells) + "</tr>")
                in_table = True
            else:
                parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
        else:
            if in_table:
                parts.append("</table>")
                in_table = False
            if line.startswith("> "):
                parts.append(f"<blockquote>{esc(line[2:])}</blockquote>")
            elif line.startswith("- "):
                parts.append(f"<p>{esc(line[2:]).replace('**', '').replace('`', '')}</p>")
            elif line:
                parts.append(f"<p>{esc(line)}</p>")
    if in_table:
        parts.append("</table>")
    parts.append("<h2>Figures</h2>")
    for title, path in figs:
        data = base64.b64encode(Path(path).read_bytes()).decode()
        parts.append(f"<figure><img alt='{esc(title)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{esc(title)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
