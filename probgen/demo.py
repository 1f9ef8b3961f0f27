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
import contextlib
import html
import time
from pathlib import Path

from probgen.errors import ConfigError, ProbgenError

__all__ = ["run_demo", "DEMO_PARTS", "write_kl_page", "write_index"]

# (folder, data set, models, share of the budget, per-model training options, torch threads
# or None for torch's default). Both parts train on one thread: on a loaded 2-core machine
# two threads made a step 20-30 times slower than one (a toy GAN step 1.8-2.2 s against
# 70-100 ms), so that the GANs' shares ran out after 13-14 steps; on a quiet machine a second
# thread saves at most about 40% on the convolutions and nothing on the 2-D networks.
# The GANs get what they need to train in their share on a CPU: on ring8 3,000 steps of the
# toy recipe (R1 penalty 1; 9.3 ms of CPU per step against 6.8 without it), which its
# schedule (constant, then linear decay to 0) completes in about 30 s of one core, well
# within the share (the recipe's 6,000 steps covered 8 of 8 modes on every seed tried,
# examples/gan_toy.py); on mnist-5k a DCGAN pair 16 channels wide (1/16 of the default's
# convolution work per step, so thousands of steps instead of about a hundred) judging pairs
# of images (PacGAN). Its class histogram stays at 0.85-0.88 of the reference's normalised
# entropy from 1,000 to 3,000 steps (precision 0.58-0.63); packing 4 images, a linear decay
# of the learning rates (over 1,200 steps: 0.85) and the minimax loss did no better at 500-2,000
# steps, nor a moving average of G's weights alone (--ema; 0.854 against 0.844 at 1,500 steps).
# A spectrally normalised discriminator (--norm spectral, no BatchNorm; 1.2 times the CPU per
# step) trades the other metrics for the histogram: at 1,200 steps class entropy 0.912
# against 0.840, but precision 0.49 against 0.63, recall 0.26 against 0.39, Frechet distance
# 400 against 263; at 600 steps worse on all (0.763, recall 0.01); in a demo beside two other
# jobs (849 steps in its share) 0.871, so it is not used (means of three draws of 500 samples,
# the demo's count, one training seed).
DEMO_PARTS = [
    ("toy-ring8", "ring8", ["gmm", "gan"], 0.6, {"gan": {"steps": 3000}}, 1),
    ("mnist-5k", "mnist-5k", ["vae", "ppca", "gmm", "gan"], 1.1,
     {"vae": {"latent_dim": 10},
      "gan": {"arch": "dcgan", "width": 16, "pack": 2, "steps": 7000, "lr": 1e-3, "weight": 1.5}}, 1),
]
# The GAN's step costs more on some CPUs than on others: where an 80 s share ran 6,835 steps
# at lr 2e-4 (coverage 0.508, class entropy 0.915, precision 0.564; reference 0.98, 0.995,
# 0.894), a slower 2-core machine ran 1,600-2,000 (coverage 0.36-0.39, class entropy
# 0.85: flagged). There, in 75 s beside another job, lr 5e-4 gave coverage 0.45 and class
# entropy 0.873 (1,572 steps), lr 1e-3 0.502 and 0.923 (1,580 steps; with seed 1, 1,134
# steps: 0.47 and 0.953), lr 2e-3 0.466 and 0.912 (1,125 steps); batch 32 at 5e-4 0.49 and
# 0.88 (2,549 steps). Hence lr 1e-3, and weight 1.5: the GAN gets one and a half times the
# VAE's share of the image part's budget, which 1.1 x --budget makes about 115 s for the GAN
# and 77 s for the VAE (whose class entropy passes from about 110 epochs, below).
# The VAE on 5,000 digits draws from the prior a class histogram whose normalised entropy
# grows with the epochs and falls with the latent size (500 samples, Bernoulli draws; the
# reference row 0.995): 50 latents 0.873 after 112 epochs, 0.884 after 160, 0.899 after 250;
# 20 latents 0.883, 0.886, 0.894; 10 latents 0.897 after 112 and 0.906 after 250 epochs, with
# IWAE-10 bounds 7-8 nats per image below the 50-latent model's. 10 latents keep the demo's VAE
# above 0.9 x the reference at the epochs its share allows.
# The last part trains in this process; the KL demo and the other parts run meanwhile in a
# second process, one thread each, so that a 2-core machine gives the image comparison most
# of the demo's minutes instead of a share of them. A part's share is of --budget, per part.
# The toy part runs beside the image part, so its share costs no wall time where it finishes
# early; it is large enough that its GAN ends its learning-rate decay on a loaded machine (in
# a 62 s share beside two other jobs it ran 2,593 of its 3,000 steps and covered 4 of 8 modes).


# --smoke trains on 500 examples for seconds: batches that fit, a few steps
SMOKE_ARGS = {"gan": {"batch_size": 100, "steps": 200}}


def _part_spec(part, out: Path, *, budget_minutes: float, smoke: bool, seed: int, device: str,
               quiet: bool):
    from probgen.comparison import CompareSpec
    from probgen.recipes import RECIPES

    folder, data, models, share, model_args, _ = part
    models = [m for m in models if m in RECIPES]
    return CompareSpec(
        data=data, models=models, out=out / folder, budget_minutes=budget_minutes * share,
        seed=seed, device=device, overwrite=True,
        limit=500 if smoke else None, eval_limit=200 if smoke else 1000,
        k=20 if smoke else 200, quiet=quiet,
        model_options={m: {**a, **(SMOKE_ARGS.get(m, {}) if smoke else {})}
                       for m, a in model_args.items() if m in models},
    )


def _run_parts(parts, out: Path, kl: bool, settings: dict) -> None:
    """The KL demo (``kl``) and the comparisons of ``parts``, one after the other."""
    from probgen.comparison import compare
    from probgen.kl_demo import run_kl_demo

    if kl:
        result = run_kl_demo(out / "kl", seed=settings["seed"], smoke=settings["smoke"])
        write_kl_page(result, out / "kl")
    for part in parts:
        print(f"[demo] compare {','.join(part[2])} on {part[1]}", flush=True)
        with _torch_threads(part[5]):
            compare(_part_spec(part, out, **settings))


def _prepare_feature_network(data_name: str, settings: dict) -> None:
    """Train (or find in the cache) the feature network of ``data_name``'s sample metrics, on
    one thread, so that the process scoring that data set finds it ready (it waits for it
    rather than train a second one). A failure here is only reported: the scoring process then
    trains the network itself."""
    from probgen.data import load_dataset
    from probgen.eval.features import feature_network

    t0 = time.perf_counter()
    try:
        with _torch_threads(1):
            data = load_dataset(data_name, seed=settings["seed"],
                                limit=500 if settings["smoke"] else None)
            if data.kind != "image" or data.train_labels is None:
                return
            fn = feature_network(data)
    except Exception as e:  # noqa: BLE001 - a head start only: the other parts must still run
        print(f"[demo] the feature network of {data_name} was not prepared here "
              f"({type(e).__name__}: {e}); its scoring trains it", flush=True)
        return
    print(f"[demo] feature network of {data_name} ready in {time.perf_counter() - t0:.0f} s "
          f"(test accuracy {fn.accuracy:.3f}; cached in {fn.path})", flush=True)


def _side_process(parts, out: Path, settings: dict, log: Path, prepare: str | None = None) -> None:
    """The body of the second process: first the feature network of the data set ``prepare``
    (the main process's, whose scoring comes last), then the KL demo and ``parts``; its output
    goes to ``log``; a failure exits non-zero with the traceback there."""
    import os
    import sys
    import traceback

    with open(log, "w", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        sys.stdout = sys.stderr = f
        try:
            if prepare is not None:
                _prepare_feature_network(prepare, settings)
            _run_parts(parts, out, True, settings)
        except BaseException:  # noqa: BLE001 - reported in the log and by the exit code
            traceback.print_exc()
            f.flush()
            os._exit(1)


def run_demo(out: Path, *, budget_minutes: float = 3.0, smoke: bool = False, seed: int = 0,
             device: str = "auto", quiet: bool = False) -> Path:
    import multiprocessing

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if smoke:  # seconds, not minutes: the models that fill their share would fill minutes
        budget_minutes = min(budget_minutes, 0.25)
    settings = dict(budget_minutes=budget_minutes, smoke=smoke, seed=seed, device=device, quiet=quiet)
    *side, main_part = DEMO_PARTS
    log = out / "demo-side.log"
    print(f"[demo] forward vs reverse KL and {', '.join(p[1] for p in side)} run in a second "
          f"process (its output: {log}); {main_part[1]} here", flush=True)
    proc = multiprocessing.get_context("spawn").Process(
        target=_side_process, args=(side, out, settings, log, main_part[1]), name="probgen-demo-side")
    proc.start()
    try:
        _run_parts([main_part], out, False, settings)
    finally:
        proc.join()
    titles = [("Forward against reverse KL: mode covering and mode seeking", out / "kl")]
    titles += [(f"Explicit against implicit on {p[1]}", out / p[0]) for p in (*side, main_part)]
    sections, failed = [], proc.exitcode != 0
    for title, folder in titles:
        page = folder / "report.html"
        if failed and not page.is_file():
            page = _failure_page(folder, title, log)
        sections.append((title, page))
    index = write_index(out, sections)
    if failed:
        print(f"[demo] the second process failed (exit code {proc.exitcode}); its log: {log}",
              flush=True)
    print(f"[demo] done in {time.perf_counter() - t0:.0f} s. Open {index} ; figures and reports are "
          f"in {out}/*/ (report.md, report.html, results.json; kl/kl.json).")
    if failed:
        raise ProbgenError(f"part of the demo failed: see {log} (the index links what was written).")
    return index


def _failure_page(folder: Path, title: str, log: Path) -> Path:
    """A page that says the part ``title`` failed, with the end of its log."""
    folder.mkdir(parents=True, exist_ok=True)
    tail = log.read_text(errors="replace").splitlines()[-30:] if log.is_file() else []
    page = folder / "report.html"
    page.write_text(_page(f"{title}: failed", [
        f"<p class='verdict'>This part failed; nothing of it is reported. The end of {html.escape(log.name)}:</p>",
        "<pre>" + html.escape("\n".join(tail)) + "</pre>"]))
    return page


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """torch's intra-op thread count set to ``n`` inside the block (unchanged for None)."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_STYLE = ("<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;"
          "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#eee}"
          "figure{display:inline-block;margin:8px;vertical-align:top}img{max-width:520px}"
          "figure.thumb img{max-width:480px}figure.thumb figcaption{font-size:small}"
          "p.verdict{background:#f4f6fa;border-left:4px solid #4a6fa5;padding:.6em 1em}</style>")


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


def _headline(page: Path) -> list[str]:
    """The headline numbers and figure thumbnails of one part, from the files beside its page:
    a comparison's ``results.json`` (its verdict, a likelihood column per representation and
    the headline sample metrics) and ``figures/``, or the KL demo's ``kl.json``."""
    import json

    from probgen.report import headline_rows, thumbnail_uri

    esc = html.escape
    folder = page.parent
    header, rows, figures, summary = [], [], [], None
    if (folder / "results.json").is_file():
        from probgen.comparison import COLUMNS
        from probgen.verdict import verdict

        results = json.loads((folder / "results.json").read_text())
        header, rows = headline_rows(results, COLUMNS)
        summary = verdict(results)
        # the likelihood-against-samples figure first, then the samples, then the rest
        figures = sorted((folder / "figures").glob("*.png"),
                         key=lambda p: (p.stem != "likelihood_vs_samples", not p.stem.startswith("samples"),
                                        p.stem))
    elif (folder / "kl.json").is_file():
        kl = json.loads((folder / "kl.json").read_text())
        header = ["problem", "forward-KL fit: KL(p||q)", "reverse-KL fit: KL(p||q)",
                  "forward-KL fit: KL(q||p)", "reverse-KL fit: KL(q||p)"]
        for name, prob in kl["problems"].items():
            f, r = prob["forward"], prob["reverse"]
            rows.append([name, f"{f['kl_p_q']:.3f}", f"{r['kl_p_q']:.3f}", f"{f['kl_q_p']:.3f}",
                         f"{r['kl_q_p']:.3f}"])
            figures.append(folder / prob["figure"])
    out = [f"<p class='verdict'>{esc(summary)}</p>"] if summary else []
    if rows:
        out.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>"
                   + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
                   + "</tbody></table>")
    # the likelihood-against-samples figure has a panel per metric: twice as wide
    thumbs = [f"<figure class='thumb'><img alt='{esc(p.stem)}' "
              f"src='{thumbnail_uri(p, 480 if p.stem == 'likelihood_vs_samples' else 240)}'>"
              f"<figcaption>{esc(p.stem.replace('_', ' '))}</figcaption></figure>"
              for p in figures if p.is_file()]
    if thumbs:
        out.append("<div>" + "".join(thumbs) + "</div>")
    return out


def write_index(out: Path, sections: list[tuple[str, Path]]) -> Path:
    """``out/index.html``: for each section, a link to its page (a path inside ``out`` that
    must exist), its headline numbers and thumbnails of its figures."""
    out = Path(out)
    body = ["<p>Each part below links its full report; the tables show the headline numbers "
            "(the reports give every metric, its standard error and the reason for each blank).</p>"]
    for title, page in sections:
        page = Path(page)
        if not page.is_file():
            raise ConfigError(f"the demo index would link {page}, which was not written; "
                              "rerun `probgen demo` into an empty --out folder.")
        rel = page.resolve().relative_to(out.resolve()).as_posix()
        body.append(f"<h2><a href='{html.escape(rel)}'>{html.escape(title)}</a></h2>")
        body += _headline(page)
    index = out / "index.html"
    index.write_text(_page("probgen demo", body))
    return index
