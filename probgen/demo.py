"""``probgen demo``: the quick tour, offline, on bundled data, in a few CPU minutes.

1. forward against reverse KL (mode covering and mode seeking), fitted for real;
2. explicit against implicit on a toy density whose exact log-likelihood is known
   (``ring8``: a Gaussian mixture fitted by EM and a GAN);
3. explicit against implicit on 5,000 bundled MNIST digits (``mnist-5k``: a VAE, PPCA, a
   Gaussian mixture and a GAN), scored by the same evaluation code.

Everything lands in one folder with an ``index.html`` that links a page per part: the KL
demo's ``kl/report.html`` (its divergences and figures) and each comparison's ``report.html``.
Every page is standalone: figures are embedded as data URIs, no script, no outside resource.
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

from probgen.errors import ConfigError

__all__ = ["run_demo", "DEMO_PARTS", "write_kl_page", "write_index"]

# (folder, data set, models, share of the budget, extra model args)
DEMO_PARTS = [
    ("toy-ring8", "ring8", ["gmm", "gan"], 0.35),
    ("mnist-5k", "mnist-5k", ["vae", "ppca", "gmm", "gan"], 0.65),
]


def run_demo(out: Path, *, budget_minutes: float = 3.0, smoke: bool = False, seed: int = 0,
             device: str = "auto", quiet: bool = False) -> Path:
    from probgen.comparison import CompareSpec, compare
    from probgen.kl_demo import run_kl_demo
    from probgen.recipes import RECIPES

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print("[demo] 1/3 forward vs reverse KL", flush=True)
    kl = run_kl_demo(out / "kl", seed=seed, smoke=smoke)
    sections = [("Forward against reverse KL: mode covering and mode seeking",
                 write_kl_page(kl, out / "kl"))]
    for i, (folder, data, models, share) in enumerate(DEMO_PARTS, start=2):
        models = [m for m in models if m in RECIPES]
        print(f"[demo] {i}/3 compare {','.join(models)} on {data}", flush=True)
        spec = CompareSpec(
            data=data, models=models, out=out / folder, budget_minutes=budget_minutes * share,
            seed=seed, device=device, overwrite=True,
            limit=500 if smoke else None, eval_limit=200 if smoke else 1000,
            k=20 if smoke else 200, quiet=quiet,
        )
        compare(spec)
        sections.append((f"Explicit against implicit on {data}", out / folder / "report.html"))
    index = write_index(out, sections)
    print(f"[demo] done in {time.perf_counter() - t0:.0f} s. Open {index} ; figures and reports are "
          f"in {out}/*/ (report.md, report.html, results.json; kl/kl.json).")
    return index


_STYLE = ("<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;"
          "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#eee}"
          "figure{display:inline-block;margin:8px;vertical-align:top}img{max-width:520px}</style>")


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title>{_STYLE}</head><body>"
            f"<h1>{html.escape(title)}</h1>" + "\n".join(body) + "</body></html>\n")


def write_kl_page(result: dict, folder: Path) -> Path:
    """``folder/report.html``: the KL demo's divergences (Monte Carlo ± standard error) and its
    figures, from what :func:`probgen.kl_demo.run_kl_demo` returned (``kl.json``)."""
    esc = html.escape
    folder = Path(folder)
    body = ["<p>q, a simple family, is fitted to a multimodal p twice: by forward KL(p||q) "
            "(maximum likelihood on samples of p, EM), which covers every mode, and by reverse "
            "KL(q||p) (SVI on log p), which seeks modes. Both divergences of both fits are "
            "estimated by Monte Carlo in float64, ± the standard error; <code>kl.json</code> "
            "holds every number.</p>",
            "<table id='kl'><thead><tr><th>problem</th><th>q fitted by</th><th>KL(p||q), nats</th>"
            "<th>KL(q||p), nats</th></tr></thead><tbody>"]
    figures = []
    for name, prob in result["problems"].items():
        for which in ("forward", "reverse"):
            f = prob[which]
            body.append(f"<tr><td>{esc(name)}: {esc(prob['p']['description'])}</td><td>{which} KL</td>"
                        f"<td>{f['kl_p_q']:.4f} ± {f['kl_p_q_stderr']:.2g}</td>"
                        f"<td>{f['kl_q_p']:.4f} ± {f['kl_q_p_stderr']:.2g}</td></tr>")
        fig = folder / prob["figure"]
        if fig.exists():
            data = base64.b64encode(fig.read_bytes()).decode()
            figures.append(f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{data}'>"
                           f"<figcaption>{esc(name)}</figcaption></figure>")
    body.append("</tbody></table>")
    body += ["<h2>Figures</h2>", *figures]
    path = folder / "report.html"
    path.write_text(_page("Forward against reverse KL", body))
    return path


def write_index(out: Path, sections: list[tuple[str, Path]]) -> Path:
    """``out/index.html`` linking each section's page (a path inside ``out`` that must exist)."""
    out = Path(out)
    items = []
    for title, page in sections:
        page = Path(page)
        if not page.is_file():
            raise ConfigError(f"the demo index would link {page}, which was not written; "
                              "rerun `probgen demo` into an empty --out folder.")
        rel = page.resolve().relative_to(out.resolve()).as_posix()
        items.append(f"<li><a href='{html.escape(rel)}'>{html.escape(title)}</a></li>")
    index = out / "index.html"
    index.write_text(_page("probgen demo", ["<ul>" + "".join(items) + "</ul>"]))
    return index
