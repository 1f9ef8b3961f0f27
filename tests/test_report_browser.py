"""The compare report's HTML page in a real headless browser: it loads with no console errors
and its screenshot is a real page. Skipped where Debian's chromium is not installed."""

import shutil
import subprocess

import pytest

from probgen.report import PARZEN_NOTE, write_reports


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def check_page(html_path, screenshot_path, chromium=None) -> str:
    """Load the page headless; return the browser's console log. Raises on console errors."""
    chromium = chromium or _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--enable-logging=stderr", "--v=0", "--window-size=1200,1600"]
    proc = subprocess.run([chromium, *flags, f"--screenshot={screenshot_path}", f"file://{html_path}"],
                          capture_output=True, text=True, timeout=120)
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    errors = [line for line in console if "ERROR" in line.upper() or "Uncaught" in line]
    assert not errors, "console errors:\n" + "\n".join(errors)
    return "\n".join(console)


@pytest.fixture
def small_report(tmp_path):
    import torch

    from probgen.comparison import COLUMNS
    from probgen.data import load_dataset

    class Toy:
        def __init__(self, data):
            self.data = data

        def sample(self, n):
            return self.data.density.sample(n)

    data = load_dataset("ring8")
    results = {
        "data": "ring8", "split": "test",
        "models": {"gmm": {"metrics": {"log_likelihood": {"value": -1.5, "stderr": 0.01, "unit": "nats"},
                                       "elbo": {"value": None, "stderr": None, "unit": "nats",
                                                "reason": "no latent-variable bound"},
                                       "parzen": {"value": -2.0, "stderr": 0.1, "unit": "nats"}}}},
        "runs": {"gmm": "runs/gmm"}, "data_options": {"gmm": {"binarize": "none"}},
        "vae_vs_gan": {"gmm": {"likelihood": "log_likelihood", "reconstruction_mse": None,
                               "reconstruction_reason": "no encode"}},
        "paired_differences": [], "model_choice": None,
    }
    (tmp_path / "figures").mkdir()
    rows = {"gmm": {"model": Toy(data), "data": data}}
    torch.manual_seed(0)
    md, page = write_reports(results, rows, tmp_path, columns=COLUMNS)
    return md, page


def test_report_lists_table_reasons_and_warning(small_report):
    md, page = small_report
    text = md.read_text()
    assert "| gmm | -1.5 ± 0.01 |" in text
    assert "no latent-variable bound" in text
    assert PARZEN_NOTE in text
    html = page.read_text()
    assert "<table id='results'>" in html and "data:image/png;base64," in html
    assert "<script" not in html and "http" not in html.split("<body>")[1]


def test_table_names_k_and_the_reason_for_every_blank():
    from probgen.comparison import COLUMNS, REFERENCE_ROW
    from probgen.report import table_rows

    nats = lambda v: {"value": v, "stderr": 0.1, "unit": "nats"}  # noqa: E731
    results = {"models": {"gmm": {"metrics": {"log_likelihood": nats(-1.0)}},
                          "vae": {"metrics": {"iwae": {**nats(-2.0), "extra": {"k": 500}}}},
                          REFERENCE_ROW: {"metrics": {"frechet_distance": {"value": 9.3, "stderr": None}}}}}
    header, rows, notes = table_rows(results, COLUMNS)
    assert header == ["model", "exact log-lik", "IWAE-k (k=500)", "Frechet"]  # k from the model that has it
    assert rows[0] == ["gmm", "-1 ± 0.1", "— [1]", "— [2]"]
    assert notes[0] == "gmm / IWAE-k: the model has no importance-weighted bound (no iwae_bound)"
    assert f"{REFERENCE_ROW} / IWAE-k: reference row: real validation examples, not a model" in notes


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed")
def test_report_loads_in_headless_chromium(small_report, tmp_path):
    _, page = small_report
    shot = tmp_path / "shot.png"
    check_page(page, shot)
    assert shot.exists() and shot.stat().st_size > 10_000


@pytest.fixture
def demo_pages(tmp_path, small_report):
    """The demo's index over a real (smoke, one-problem) KL demo page and a compare report."""
    from probgen.demo import write_index, write_kl_page
    from probgen.kl_demo import run_kl_demo

    kl = run_kl_demo(tmp_path / "kl", smoke=True, problems=["1d"])
    kl_page = write_kl_page(kl, tmp_path / "kl")
    _, compare_page = small_report
    index = write_index(tmp_path, [("KL", kl_page), ("compare", compare_page)])
    return index, kl, kl_page


def test_demo_index_links_every_part_including_the_kl_page(demo_pages, tmp_path):
    import re

    index, kl, kl_page = demo_pages
    links = re.findall(r"href='([^']+)'", index.read_text())
    assert links == ["kl/report.html", "report.html"]
    assert all((tmp_path / link).is_file() for link in links)
    page = kl_page.read_text()
    f = kl["problems"]["1d"]["forward"]
    assert f"{f['kl_p_q']:.4f}" in page and "data:image/png;base64," in page
    assert "<script" not in page and "http" not in page.split("<body>")[1]


def test_demo_index_refuses_a_missing_page(tmp_path):
    from probgen.demo import write_index
    from probgen.errors import ConfigError

    with pytest.raises(ConfigError, match="would link .*missing.html, which was not written"):
        write_index(tmp_path, [("gone", tmp_path / "missing.html")])


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed")
def test_demo_pages_load_in_headless_chromium(demo_pages, tmp_path):
    index, _, kl_page = demo_pages
    for i, page in enumerate((index, kl_page)):
        shot = tmp_path / f"shot{i}.png"
        check_page(page, shot)
        assert shot.exists() and shot.stat().st_size > 5_000


def test_demo_index_shows_each_parts_headline_numbers_and_figure_thumbnails(tmp_path, small_report):
    import json

    from PIL import Image

    from probgen.demo import write_index, write_kl_page
    from probgen.kl_demo import run_kl_demo

    kl = run_kl_demo(tmp_path / "kl", smoke=True, problems=["1d"])
    kl_page = write_kl_page(kl, tmp_path / "kl")
    _, compare_page = small_report
    results = {"data": "ring8", "models": {
        "gmm": {"metrics": {"log_likelihood": {"value": -1.5, "stderr": 0.01},
                            "modes_covered": {"value": 8, "stderr": None},
                            "kernel_distance": {"value": 0.123456, "stderr": None}}},
        "gan": {"metrics": {"modes_covered": {"value": 7, "stderr": None}}}}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    index = write_index(tmp_path, [("KL", kl_page), ("compare", compare_page)])
    page = index.read_text()
    f, r = kl["problems"]["1d"]["forward"], kl["problems"]["1d"]["reverse"]
    assert f"<td>{f['kl_p_q']:.3f}</td>" in page and f"<td>{r['kl_q_p']:.3f}</td>" in page
    # the compare part: its verdict, its headline columns (a likelihood column per
    # representation), every model's row, a blank as a dash
    assert "<p class='verdict'>On the continuous data, only gmm has a likelihood" in page
    assert "By modes covered, gmm has the best samples" in page
    assert "<th>log-lik continuous (nats)</th><th>modes</th>" in page and "0.1235" not in page
    assert "<td>gmm</td><td>-1.5 ± 0.01 nats (exact)</td><td>8</td>" in page
    assert "<td>gan</td><td>—</td><td>7</td>" in page
    # a thumbnail per figure of each part (the KL figure, the compare report's samples)
    thumbs = page.count("<figure class='thumb'>")
    assert thumbs == 1 + len(list((tmp_path / "figures").glob("*.png"))) and thumbs >= 2
    import base64
    import io

    uri = page.split("<figure class='thumb'><img alt='")[1].split("src='data:image/png;base64,")[1].split("'")[0]
    assert Image.open(io.BytesIO(base64.b64decode(uri))).width == 240
    assert "<script" not in page and "http" not in page.split("<body>")[1]


def test_demo_says_which_part_failed_and_keeps_the_others(tmp_path, monkeypatch):
    """A part that fails in the second process is named, with its log, and the index still
    links the parts that were written."""
    import probgen.demo as demo
    from probgen.errors import ProbgenError

    monkeypatch.setattr(demo, "DEMO_PARTS", [
        ("broken", "no-such-data", ["gmm"], 0.1, {}, 1),
        ("toy-ring8", "ring8", ["gmm"], 0.1, {}, 1),
    ])
    with pytest.raises(ProbgenError, match="demo-side.log"):
        demo.run_demo(tmp_path, smoke=True, quiet=True)
    log = (tmp_path / "demo-side.log").read_text()
    assert "no-such-data" in log
    index = (tmp_path / "index.html").read_text()
    assert "toy-ring8/report.html" in index and "broken/report.html" in index
    failed = (tmp_path / "broken" / "report.html").read_text()
    assert "failed" in failed and "no-such-data" in failed
    assert (tmp_path / "toy-ring8" / "results.json").is_file()
    assert (tmp_path / "kl" / "report.html").is_file()  # the KL demo ran before the failure
