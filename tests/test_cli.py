"""The command line: fast help, one clear message per error, suggestions for typos."""

import subprocess
import sys
import time

import pytest

from probgen.cli import main
from probgen.recipes import RECIPES


def test_help_is_fast_and_imports_no_torch():
    code = (
        "import sys, time; t=time.perf_counter(); from probgen.cli import build_parser; "
        "build_parser().format_help(); print(time.perf_counter()-t, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, torch_loaded = out.stdout.split()
    assert torch_loaded == "False", "building the parser imported torch"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "probgen", "--help"], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0 and "train" in proc.stdout and "eval" in proc.stdout
    assert elapsed < 2.0, f"probgen --help took {elapsed:.2f} s"


def test_unknown_model_suggests_the_nearest(capsys):
    if not RECIPES:
        pytest.skip("no models registered")
    name = next(iter(RECIPES))
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")
    assert main(["train", typo, "--data", "grid25", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert f"unknown model {typo!r}" in err and "Known models:" in err


def test_unknown_option_suggests_the_nearest(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["kl-demo", "--out", str(tmp_path), "--smok"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --smok" in err and "Did you mean '--smoke'" in err


def test_unknown_train_option_suggests(capsys, tmp_path):
    if not RECIPES:
        pytest.skip("no models registered")
    name = next(iter(RECIPES))
    with pytest.raises(SystemExit):
        main(["train", name, "--data", "grid25", "--out", str(tmp_path / "r"), "--sed", "1"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --sed" in err and "Did you mean '--seed'" in err


def test_errors_are_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "probgen", "eval", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("probgen: error:") and "not a run folder" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "probgen", "eval", str(tmp_path), "--debug"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_train_eval_sample_round_trip(tmp_path):
    import json

    import torch

    run = tmp_path / "gmm"
    assert main(["train", "gmm", "--data", "bimodal1d", "--out", str(run), "--no-figures"]) == 0
    assert main(["eval", str(run)]) == 0
    ev = json.loads((run / "eval.json").read_text())
    assert set(ev) == {"model", "dataset", "split", "n", "metrics"}
    ll, true = ev["metrics"]["log_likelihood"], ev["metrics"]["true_log_likelihood"]
    assert set(ll) >= {"value", "stderr", "unit"} and abs(ll["value"] - true["value"]) < 0.05
    assert main(["sample", str(run), "-n", "7"]) == 0
    assert torch.load(run / "samples.pt", weights_only=True).shape == (7, 1)
    assert main(["sample", str(run), "-n", "0"]) == 2
    assert main(["train", "gmm", "--data", "bimodal1d", "--out", str(run)]) == 2  # refuses to clobber
