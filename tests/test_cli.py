"""The command line: fast help, one clear message per error, suggestions for typos."""

import json
import subprocess
import sys

import pytest

from probgen.cli import main
from probgen.recipes import RECIPES


def test_help_imports_no_torch():
    # what keeps `probgen --help` fast; its time is measured by benchmarks/cli_help.py
    code = ("import sys; from probgen.cli import build_parser; build_parser().format_help(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"], "building the parser imported torch"
    proc = subprocess.run([sys.executable, "-m", "probgen", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout and "eval" in proc.stdout


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
    assert set(ev) == {"model", "dataset", "split", "n", "representation", "metrics", "seed", "options"}
    assert ev["options"]["k"] == 100 and ev["options"]["ais"] is False  # the estimators as run
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


# ----------------------------------------------------------------------------- --value-range
@pytest.mark.parametrize("argv", [["--value-range", "-1,1"], ["--value-range=-1,1"]])
def test_value_range_minus_one_to_one_is_read_as_a_value(argv):
    from probgen.cli import _join_negative_values, build_parser

    args = build_parser().parse_args(_join_negative_values(
        ["train", "gan", "--data", "grid25", "--out", "r", *argv, "--seed", "3"]))
    assert args.value_range == "-1,1" and args.seed == 3


def test_value_range_help_names_the_two_ranges(capsys):
    with pytest.raises(SystemExit):
        main(["train", "gan", "--help"])
    out = capsys.readouterr().out
    assert "0,1 or -1,1" in out and "{0,1,-1,1}" not in out


def test_value_range_outside_the_two_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", "gan", "--data", "grid25", "--out", "r", "--value-range", "-2,2"])
    assert "invalid choice: '-2,2'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- eval
@pytest.fixture(scope="module")
def gmm_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "gmm"
    assert main(["train", "gmm", "--data", "ring8", "--out", str(run), "--no-figures",
                 "--limit", "400", "--quiet"]) == 0
    return run


def _eval(run, *extra):
    return main(["eval", str(run), "--limit", "300", "--n-samples", "300", "--quiet", *extra])


def test_eval_prints_a_header_and_refuses_to_overwrite(gmm_run, capsys):
    (gmm_run / "eval.json").unlink(missing_ok=True)
    capsys.readouterr()
    assert _eval(gmm_run) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (f"evaluating gmm ({gmm_run}) on ring8, test split, n=300, seed 0")
    from probgen.cli import _what_it_is

    assert _what_it_is({"estimator": "dequantization bound", "inner_estimator": "iwae-50",
                        "representation": "dequantized-8bit", "bits_per_dim": 1.2345,
                        "bits_per_dim_stderr": 0.0123}) == (
        "  [dequantization bound (iwae-50 inside) on dequantized-8bit data; 1.234 ± 0.012 bits/dim]")
    assert _what_it_is({"value": 0.3, "unit": "fraction"}) == ""
    # each likelihood says what it is and of which data
    assert "  [exact on continuous data]" in next(ln for ln in out.splitlines()
                                                  if ln.strip().startswith("log_likelihood"))
    first = (gmm_run / "eval.json").read_text()
    assert json.loads(first)["seed"] == 0
    assert _eval(gmm_run, "--seed", "1") == 2
    err = capsys.readouterr().err
    assert "already holds an evaluation; pass --overwrite" in err
    assert (gmm_run / "eval.json").read_text() == first, "the refused evaluation changed the file"
    assert _eval(gmm_run, "--seed", "1", "--overwrite") == 0
    assert json.loads((gmm_run / "eval.json").read_text())["seed"] == 1


def test_eval_is_a_function_of_its_seed(gmm_run, tmp_path):
    def metrics(seed, name):
        assert _eval(gmm_run, "--seed", str(seed), "--out", str(tmp_path / name)) == 0
        return json.loads((tmp_path / name).read_text())["metrics"]

    a, b, c = metrics(0, "a.json"), metrics(0, "b.json"), metrics(5, "c.json")
    assert a == b
    # the exact log-likelihood does not depend on the seed; the sample metrics do
    assert a["log_likelihood"] == c["log_likelihood"]
    assert a["reverse_kl"] != c["reverse_kl"]


def test_eval_out_must_be_a_file_in_an_existing_folder(gmm_run, tmp_path, capsys):
    assert _eval(gmm_run, "--out", str(tmp_path)) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err
    assert _eval(gmm_run, "--out", str(tmp_path / "missing" / "e.json")) == 2
    assert "does not exist; create it first" in capsys.readouterr().err


def test_estimator_flags_come_from_the_registry_with_each_commands_defaults(tmp_path, capsys):
    from probgen.cli import build_parser
    from probgen.eval import registry

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command in ("eval", "compare"):
        group = next(g for g in sub[command]._action_groups if g.title == "estimators")
        assert {a.dest for a in group._group_actions} == set(registry.all_options())
    helps = {a.dest: a.help for a in sub["compare"]._actions}
    assert helps["decoder_ais"].endswith("(default on)") and helps["ais_steps"].endswith("(default 200)")
    helps = {a.dest: a.help for a in sub["eval"]._actions}
    assert helps["decoder_ais"].endswith("(default off)") and helps["ais_steps"].endswith("(default 500)")
    args = sub["compare"].parse_args(["--data", "d", "--models", "m", "--out", "o", "--no-decoder-ais"])
    assert args.decoder_ais is False

    run = tmp_path / "gmm"
    assert main(["train", "gmm", "--data", "bimodal1d", "--out", str(run), "--no-figures", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--k", "0"]) == 2
    assert "--k (k) must be at least 1; got 0" in capsys.readouterr().err
    assert not (run / "eval.json").exists()  # refused before anything is written


def test_sample_writes_the_format_its_suffix_names_and_leaves_training_figures_alone(tmp_path, capsys):
    """`sample --out s.npy` once wrote a torch pickle under that name (numpy read it as an
    archive), and every `sample` replaced the figure training drew in RUN_DIR/figures."""
    import numpy as np
    import torch

    run = tmp_path / "run"
    assert main(["train", "gmm", "--data", "ring8", "--limit", "400", "--out", str(run)]) == 0
    trained_fig = (run / "figures" / "samples.png").read_bytes()
    assert main(["sample", str(run), "-n", "5", "--out", str(tmp_path / "s.npy")]) == 0
    a = np.load(tmp_path / "s.npy")
    assert isinstance(a, np.ndarray) and a.shape == (5, 2)
    assert (tmp_path / "s.png").exists()
    assert main(["sample", str(run), "-n", "6", "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["samples"].shape == (6, 2)
    assert main(["sample", str(run), "-n", "3"]) == 0
    assert torch.load(run / "samples.pt", weights_only=True).shape == (3, 2)
    assert (run / "samples.png").exists()
    assert (run / "figures" / "samples.png").read_bytes() == trained_fig
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "3", "--out", str(tmp_path / "s.csv")]) == 2
    assert "written as .pt, .npy, .npz" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
