"""The user's own Pyro program as a model: `probgen train program --model file.py:Name`,
`eval`, `sample`, `compare`, and the same from Python."""

import hashlib
import json
import textwrap

import pytest
import torch

import probgen
from probgen.cli import main
from probgen.errors import ConfigError, DataError

# A linear-Gaussian latent model: x = b + z w + noise, z ~ N(0, 1). Its exact marginal is
# N(b, w w^T + diag(s^2)), so the bounds computed from its traces have a truth to sit under.
LINEAR = '''
import pyro
import pyro.distributions as dist
import torch


class LinearGaussian:
    def __init__(self, data_shape):
        self.d = data_shape[0]

    def model(self, x):
        w = pyro.param("w", torch.full((self.d,), 0.5))
        b = pyro.param("b", torch.zeros(self.d))
        s = pyro.param("s", torch.ones(self.d), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(b + z[..., None] * w, s).to_event(1), obs=x)

    def guide(self, x):
        a = pyro.param("a", torch.zeros(self.d))
        c = pyro.param("c", torch.tensor(0.0))
        q = pyro.param("q", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((x * a).sum(-1) + c, q))
'''


def _write(tmp_path, text, name="prog.py"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def _exact_log_prob(params, x):
    w, b, s = params["w"], params["b"], params["s"]
    cov = torch.outer(w, w) + torch.diag(s ** 2)
    return torch.distributions.MultivariateNormal(b, cov).log_prob(x)


def test_program_trains_scores_samples_and_its_bounds_sit_under_the_exact_likelihood(tmp_path):
    prog = _write(tmp_path, LINEAR)
    run = tmp_path / "run"
    assert main(["train", "program", "--model", f"{prog}:LinearGaussian", "--data", "banana",
                 "--out", str(run), "--epochs", "3", "--limit", "2000", "--lr", "0.05",
                 "--no-figures"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "program"
    assert cfg["program"] == {"file": str(prog.resolve()), "name": "LinearGaussian",
                              "sha256": hashlib.sha256(prog.read_bytes()).hexdigest()}
    ckpt = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    params = ckpt["state"]["model"]["params"]
    assert set(params) == {"w", "b", "s", "a", "c", "q"}

    result = probgen.evaluate(run, k=200, limit=400, seed=0)
    m = result["metrics"]
    x = probgen.training.load_run(run)[1].test[:400]
    exact = _exact_log_prob({"w": params["w"], "b": params["b"], "s": params["s"].exp()}, x)
    iw, elbo = result["per_example"]["iwae"], result["per_example"]["elbo"]
    # ELBO <= IWAE-k <= log p(x), per example on average, within Monte Carlo error
    gap = exact - iw
    assert float(gap.mean()) > -3 * float(gap.std() / len(gap) ** 0.5) - 1e-3
    assert float((iw - elbo).mean()) > 0
    assert m["elbo"]["value"] <= m["iwae"]["value"] <= float(exact.mean()) + 0.01
    on_disk = json.loads((run / "eval.json").read_text())
    assert on_disk["metrics"]["elbo"]["value"] == pytest.approx(m["elbo"]["value"])

    assert main(["sample", str(run), "-n", "5"]) == 0
    assert torch.load(run / "samples.pt", weights_only=True).shape == (5, 2)


# The same model written with a reshape that flattens every leading dimension, as code written
# for one draw per example often is: it cannot run with its particles in an outer plate.
FLAT = LINEAR.replace("class LinearGaussian:", "class Flat:").replace(
    "pyro.sample(\"x\", dist.Normal(b + z[..., None] * w, s).to_event(1), obs=x)",
    "pyro.sample(\"x\", dist.Normal((b + z.reshape(-1, 1) * w).reshape(-1, self.d), s)"
    ".to_event(1), obs=x)")


def test_a_program_tied_to_one_draw_per_example_trains_on_particles_and_is_scored(tmp_path, capsys):
    assert "reshape(-1, self.d)" in FLAT
    prog = _write(tmp_path, FLAT)
    run = tmp_path / "run"
    assert main(["train", "program", "--model", f"{prog}:Flat", "--data", "banana", "--out", str(run),
                 "--epochs", "2", "--limit", "600", "--lr", "0.05", "--num-particles", "3",
                 "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "its 3 particles are drawn one run of the program at a time" in out and "Shape mismatch" in out
    result = probgen.evaluate(run, k=50, limit=100, seed=0)
    m = result["metrics"]
    assert m["elbo"]["value"] <= m["iwae"]["value"]
    assert result["per_example"]["iwae"].shape == (100,)


def test_a_changed_program_file_stops_eval_sample_and_resume(tmp_path, capsys):
    prog = _write(tmp_path, LINEAR)
    run = tmp_path / "run"
    assert main(["train", "program", "--model", f"{prog}:LinearGaussian", "--data", "banana",
                 "--out", str(run), "--epochs", "1", "--limit", "300", "--no-figures"]) == 0
    prog.write_text(prog.read_text() + "\n# an edit\n")
    capsys.readouterr()
    for argv in (["eval", str(run), "--k", "5", "--limit", "20"], ["sample", str(run), "-n", "3"],
                 ["train", "program", "--model", f"{prog}:LinearGaussian", "--data", "banana",
                  "--out", str(run), "--epochs", "2", "--limit", "300", "--resume", "--no-figures"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "has changed since this run was trained" in err and "--allow-changed-model" in err
    assert main(["eval", str(run), "--k", "5", "--limit", "20", "--allow-changed-model"]) == 0
    assert main(["train", "program", "--model", f"{prog}:LinearGaussian", "--data", "banana",
                 "--out", str(run), "--epochs", "2", "--limit", "300", "--resume", "--no-figures",
                 "--allow-changed-model"]) == 0
    assert [r["epoch"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())] == [1, 2]


BAD = {
    "no_plate": ('''
        import pyro, pyro.distributions as dist, torch
        class P:
            def model(self, x):
                z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(z[:, None], 1.0).to_event(2), obs=x)
            def guide(self, x):
                pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0).to_event(1))
        ''', "data plate"),
    "no_observed": ('''
        import pyro, pyro.distributions as dist
        class P:
            def model(self, x):
                with pyro.plate("data", x.shape[0]):
                    pyro.sample("z", dist.Normal(0.0, 1.0))
            def guide(self, x):
                with pyro.plate("data", x.shape[0]):
                    pyro.sample("z", dist.Normal(0.0, 1.0))
        ''', "no observed site"),
    "guide_misses_latent": ('''
        import pyro, pyro.distributions as dist
        class P:
            def model(self, x):
                with pyro.plate("data", x.shape[0]):
                    z = pyro.sample("z", dist.Normal(0.0, 1.0))
                    pyro.sample("x", dist.Normal(z[..., None], 1.0).to_event(1), obs=x)
            def guide(self, x):
                pyro.param("unused", __import__("torch").zeros(1))
        ''', "'z'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_program_that_cannot_be_scored_is_refused_before_anything_is_written(case, tmp_path, capsys):
    text, needle = BAD[case]
    prog = _write(tmp_path, text)
    out = tmp_path / "out"
    assert main(["train", "program", "--model", f"{prog}:P", "--data", "ring8", "--out", str(out),
                 "--epochs", "1", "--limit", "100"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not out.exists()
    # compare refuses it the same way, before any model trains or --out is written
    cmp = tmp_path / "cmp"
    assert main(["compare", "--data", "ring8", "--models", f"gmm,{prog}:P", "--out", str(cmp),
                 "--budget", "0.05"]) == 2
    assert needle in capsys.readouterr().err
    assert not cmp.exists()


def test_a_missing_name_or_file_names_what_is_there(tmp_path, capsys):
    prog = _write(tmp_path, LINEAR)
    out = tmp_path / "out"
    assert main(["train", "program", "--model", f"{prog}:LinearGausian", "--data", "ring8",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "defines no 'LinearGausian'" in err and "Did you mean 'LinearGaussian'" in err
    assert main(["train", "program", "--model", f"{tmp_path}/nope.py:P", "--data", "ring8",
                 "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ConfigError, match="defines no 'Nope'"):
        probgen.train(f"{prog}:Nope", "ring8", out)
    assert not out.exists()


BERNOULLI = '''
import pyro, pyro.distributions as dist, torch


class Pixels:
    data_options = {"binarize": "dynamic"}

    def __init__(self, data_shape):
        self.d = int(torch.Size(data_shape).numel())

    def model(self, x):
        logits = pyro.param("logits", torch.zeros(2, self.d))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            lo = logits[0] + z[..., None] * logits[1]
            pyro.sample("x", dist.Bernoulli(logits=lo).to_event(1), obs=x.reshape(x.shape[0], -1))

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, pyro.param("q", torch.tensor(1.0),
                                                         constraint=dist.constraints.positive)))
'''


def test_data_options_of_the_class_and_grey_values_under_a_bernoulli(tmp_path, capsys):
    prog = _write(tmp_path, BERNOULLI)
    run = tmp_path / "run"
    assert main(["train", "program", "--model", f"{prog}:Pixels", "--data", "digits", "--out", str(run),
                 "--epochs", "1", "--no-figures"]) == 0
    assert json.loads((run / "config.json").read_text())["data_options"]["binarize"] == "dynamic"
    # the command line overrides the class: grey pixels under a Bernoulli are refused, saying so
    out = tmp_path / "grey"
    assert main(["train", "program", "--model", f"{prog}:Pixels", "--data", "digits", "--out", str(out),
                 "--epochs", "1", "--binarize", "none"]) == 2
    err = capsys.readouterr().err
    assert "Bernoulli" in err and "grey values" in err and "binarize" in err
    assert not out.exists()
    with pytest.raises(DataError, match="grey values"):
        probgen.train(f"{prog}:Pixels", "digits", out, binarize="none")


TWO_PROGRAMS = '''
import pyro, pyro.distributions as dist, torch


class Shift:
    OFFSET = {offset}

    def model(self, x):
        loc = pyro.param("loc", torch.zeros(x.shape[1]) + self.OFFSET)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(loc + 0.1 * z[..., None], 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))
'''


def test_programs_with_the_same_parameter_names_keep_their_own_parameters(tmp_path):
    a = _write(tmp_path, TWO_PROGRAMS.format(offset=5.0), "a.py")
    b = _write(tmp_path, TWO_PROGRAMS.format(offset=-5.0), "b.py")
    ta = probgen.train(f"{a}:Shift", "ring8", tmp_path / "a", epochs=1, limit=200, lr=1e-3, figures=False)
    tb = probgen.train(f"{b}:Shift", "ring8", tmp_path / "b", epochs=1, limit=200, lr=1e-3, figures=False)
    # each still holds its own loc after the other trained (one Pyro param store each)
    assert float(ta.model.state_dict()["params"]["loc"].mean()) > 4
    assert float(tb.model.state_dict()["params"]["loc"].mean()) < -4
    ev_mem = probgen.evaluate(ta.model, ta.data, k=5, limit=50, seed=0)
    ev_disk = probgen.evaluate(tmp_path / "a", k=5, limit=50, seed=0)
    assert ev_mem["metrics"]["elbo"]["value"] == pytest.approx(ev_disk["metrics"]["elbo"]["value"], rel=1e-5)


def test_compare_puts_a_program_beside_the_built_in_models_from_python(tmp_path):
    prog = _write(tmp_path, LINEAR)
    res = probgen.compare("banana", ["ppca", f"{prog}:LinearGaussian(epochs=2,lr=0.05)"], tmp_path / "cmp",
                          budget=0.1, limit=1000, eval_limit=200, k=20)
    assert set(res["trained"]) == {"ppca", "LinearGaussian"}
    assert res["trained"]["LinearGaussian"].name == "LinearGaussian"
    lg = res["models"]["LinearGaussian"]["metrics"]
    assert lg["elbo"]["value"] <= lg["iwae"]["value"]
    assert res["per_example"]["LinearGaussian"]["iwae"].shape == (200,)
    pair = res["paired_differences"][0]
    assert {pair["a"], pair["b"]} == {"ppca", "LinearGaussian"} and pair["value"] is not None
    cfg = json.loads((tmp_path / "cmp" / "runs" / "LinearGaussian" / "config.json").read_text())
    assert cfg["epochs"] == 2 and cfg["lr"] == 0.05
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "| LinearGaussian |" in md


def test_a_function_that_returns_the_program_and_a_program_class_from_python(tmp_path, monkeypatch):
    prog = _write(tmp_path, LINEAR + "\n\ndef make(data_shape):\n    return LinearGaussian(data_shape)\n")
    t = probgen.train(f"{prog}:make", "banana", tmp_path / "f", epochs=1, limit=200, figures=False)
    assert type(t.model.program).__name__ == "LinearGaussian"
    assert t.config["program"]["name"] == "make"
    import importlib.util

    spec = importlib.util.spec_from_file_location("user_prog", prog)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(__import__("sys").modules, "user_prog", mod)  # as `import user_prog` does
    spec.loader.exec_module(mod)
    t = probgen.train(mod.LinearGaussian, "banana", tmp_path / "c", epochs=1, limit=200, figures=False)
    assert t.config["program"] == {"file": str(prog.resolve()), "name": "LinearGaussian",
                                   "sha256": hashlib.sha256(prog.read_bytes()).hexdigest()}
    with pytest.raises(ConfigError, match="top level of a Python file"):
        class Local(mod.LinearGaussian):
            pass

        probgen.train(Local, "banana", tmp_path / "l")


# A global mean mu ~ N(0, 10^2) shared by all examples, x_n ~ N(mu, s^2): the class asks for
# its global latent to be held at the guide's mean, so the bounds are log p(x_n | mu = m).
GLOBAL = '''
import pyro
import pyro.distributions as dist
import torch


class SharedMean:
    global_latents = "condition"

    def __init__(self, data_shape):
        self.d = data_shape[0]

    def model(self, x):
        s = pyro.param("s", torch.ones(self.d), constraint=dist.constraints.positive)
        mu = pyro.sample("mu", dist.Normal(torch.zeros(self.d), 10.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, s).to_event(1), obs=x)

    def guide(self, x):
        m = pyro.param("m", torch.zeros(self.d))
        q = pyro.param("q", torch.full((self.d,), 0.1), constraint=dist.constraints.positive)
        pyro.sample("mu", dist.Normal(m, q).to_event(1))
'''


def test_a_program_class_holds_its_global_latent_at_the_guide_mean_in_bounds_and_samples(tmp_path, capsys):
    prog = _write(tmp_path, GLOBAL)
    run = tmp_path / "run"
    assert main(["train", "program", "--model", f"{prog}:SharedMean", "--data", "banana", "--out",
                 str(run), "--epochs", "3", "--limit", "2000", "--lr", "0.05", "--no-figures"]) == 0
    params = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["state"]["model"]["params"]
    m, s = params["m"], params["s"].exp()
    capsys.readouterr()
    assert main(["eval", str(run), "--k", "5", "--limit", "300"]) == 0
    assert "(given the guide's mean of mu)" in capsys.readouterr().out
    res = json.loads((run / "eval.json").read_text())
    x = probgen.training.load_run(run)[1].test[:300]
    exact = torch.distributions.Normal(m, s).log_prob(x).sum(-1)  # log p(x_n | mu = m)
    for key in ("elbo", "iwae"):
        assert res["metrics"][key]["extra"]["given"] == "the guide's mean of mu"
        assert res["metrics"][key]["value"] == pytest.approx(float(exact.mean()), abs=1e-3)
    # the samples come from the model the bounds score: x ~ N(m, s), not mu from its prior
    trained = probgen.training.load_run(run)[2]
    draws = trained.sample(4000)
    torch.testing.assert_close(draws.mean(0), m, atol=0.1, rtol=0)
    torch.testing.assert_close(draws.std(0), s, atol=0.1, rtol=0)


def test_a_file_beside_the_program_does_not_stand_in_for_an_installed_module(tmp_path, monkeypatch):
    import sys

    from probgen.programs import load_program

    # a program file named like a module that torch or pyro import (glob.py) once made them
    # import the user's file in its place, a "partially initialized module 'torch'" error
    (tmp_path / "colorsys.py").write_text("raise ImportError('the neighbour, not the standard library')\n")
    (tmp_path / "helpers_of_prog.py").write_text("WIDTH = 7\n")
    prog = _write(tmp_path, """
        import colorsys
        import helpers_of_prog


        class P:
            width = helpers_of_prog.WIDTH
            hls = colorsys.rgb_to_hls(1.0, 0.0, 0.0)
        """)
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    monkeypatch.delitem(sys.modules, "helpers_of_prog", raising=False)
    path_before = list(sys.path)
    cls = load_program(f"{prog}:P")
    assert cls.width == 7 and cls.hls == (0.0, 0.5, 1.0)  # its neighbour, and the real colorsys
    assert sys.path == path_before


def test_a_script_that_trains_its_own_class_without_a_main_guard(tmp_path, capsys):
    """``python my_script.py`` that defines a program class and passes it to probgen.train at
    its top level: the run uses the script's own class (the file is not run a second time
    inside the first run); a later command that must import the file to rebuild the model
    says how to guard the script instead of starting a run inside its own."""
    import subprocess
    import sys

    script = _write(tmp_path, LINEAR + textwrap.dedent(f'''
        import probgen
        probgen.train(LinearGaussian, "banana", {str(tmp_path / "run")!r}, epochs=1, limit=200,
                      figures=False, progress=False)
        print("trained")
        '''), name="my_script.py")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("trained")
    assert main(["eval", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "calls probgen.train when it is imported" in err
    assert 'if __name__ == "__main__":' in err
    assert not (tmp_path / "run" / "eval.json").exists()
