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


def test_every_compare_option_has_help_and_its_default():
    from probgen.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    compare = sub.choices["compare"]
    for action in compare._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, action.option_strings
        assert "default" in action.help or "required" in action.help, action.option_strings


def test_ppca_and_vae_defaults_follow_two_dimensional_data(tmp_path):
    import json

    run = tmp_path / "ppca"
    assert main(["train", "ppca", "--data", "ring8", "--latent-dim", "1", "--out", str(run)]) == 0
    assert (run / "figures" / "latent.png").exists()  # one latent dimension draws its scatter
    run = tmp_path / "ppca2"
    assert main(["train", "ppca", "--data", "ring8", "--out", str(run), "--no-figures"]) == 0
    assert json.loads((run / "config.json").read_text())["latent_dim"] == 1
    run = tmp_path / "vae"
    assert main(["train", "vae", "--data", "ring8", "--epochs", "1", "--limit", "200", "--out", str(run),
                 "--no-figures"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["likelihood"], cfg["latent_dim"], cfg["data_options"]["binarize"]) == ("gaussian", 2, "none")
    run = tmp_path / "vae_img"
    assert main(["train", "vae", "--data", "digits", "--epochs", "1", "--limit", "100", "--out", str(run),
                 "--no-figures"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["likelihood"], cfg["latent_dim"], cfg["data_options"]["binarize"]) == ("bernoulli", 50, "dynamic")


def test_train_from_python_checks_options_like_the_command_line(tmp_path):
    import pytest

    import probgen
    from probgen.errors import ConfigError

    with pytest.raises(ConfigError, match="must be a positive integer"):
        probgen.train("vae", "ring8", tmp_path / "v", epochs=0)
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        probgen.train("vae", "ring8", tmp_path / "v", epoch=3)
    assert not (tmp_path / "v").exists()
    t = probgen.train("gmm", "bimodal1d", tmp_path / "g", components=2, figures=False)
    assert t.config["components"] == 2 and t.model.log_prob(t.data.test[:5]).shape == (5,)
