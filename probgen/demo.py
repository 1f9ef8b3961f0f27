"""``probgen demo``: the quick tour, offline, on bundled data, in a few CPU minutes.

1. forward against reverse KL (mode covering and mode seeking), fitted for real;
2. explicit against implicit on a toy density whose exact log-likelihood is known
   (``ring8``: a Gaussian mixture fitted by EM and a GAN);
3. explicit against implicit on 5,000 bundled MNIST digits (``mnist-5k``: a VAE, PPCA, a
   Gaussian mixture and a GAN), scored by the same evaluation code.

Everything lands in one folder with an ``index.html`` that links the reports.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

__all__ = ["run_demo", "DEMO_PARTS"]

# (folder, data set, models, share of the budget, extra model args)
DEMO_PARTS = [
    ("toy-ring8", "ring8", ["gmm", "gan"], 0.35),
    ("mnist-5k", "mnist-5k", ["vae", "ppca", "gmm", "gan"], 0.65),
]


def run_demo(out: Path, *, budget_minutes: float = 3.0, smoke: bool = False, seed: int = 0,
             device: str = "auto") -> Path:
    from probgen.compare import CompareSpec, compare
    from probgen.kl_demo import run_kl_demo
    from probgen.recipes import RECIPES

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print("[demo] 1/3 forward vs reverse KL", flush=True)
    run_kl_demo(out / "kl", seed=seed, smoke=smoke)
    sections = [("Forward against reverse KL", out / "kl")]
    for i, (folder, data, models, share) in enumerate(DEMO_PARTS, start=2):
        models = [m for m in models if m in RECIPES]
        print(f"[demo] {i}/3 compare {','.join(models)} on {data}", flush=True)
        spec = CompareSpec(
            data=data, models=models, out=out / folder, budget_minutes=budget_minutes * share,
            seed=seed, device=device, overwrite=True,
            limit=500 if smoke else None, eval_limit=200 if smoke else 1000,
            k=20 if smoke else 200,
        )
        compare(spec)
        sections.append((f"Explicit against implicit on {data}", out / folder))
    index = out / "index.html"
    links = "".join(
        f"<li><a href='{html.escape(p.relative_to(out).as_posix())}/"
        f"{'report.html' if (p / 'report.html').exists() else ''}'>{html.escape(t)}</a></li>"
        for t, p in sections
    )
    index.write_text("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>probgen demo"
                     f"</title></head><body><h1>probgen demo</h1><ul>{links}</ul></body></html>\n")
    print(f"[demo] done in {time.perf_counter() - t0:.0f} s. Open {index} ; figures and reports are "
          f"in {out}/*/ (report.md, report.html, results.json).")
    return index
