"""The recipe contract (probgen/recipes/__init__.py), run over every entry of RECIPES: train
briefly on the recipe's SMOKE data, stop after the first epoch or step and resume to the same
parameters bit for bit as an uninterrupted run, record what really ran, reload the model from
its run folder, and write the figures. A new recipe is tested by being registered: the toy
recipe at the end is defined and registered here, and reaches `probgen train`, `probgen.train`,
the contract and `compare` from the registry alone."""

import dataclasses
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import probgen
from probgen.programs import own_params
from probgen.recipes import RECIPES, RecipeConfig, option, register
from probgen.training import load_run

ROOT = Path(__file__).resolve().parents[1]
LENGTH = 2  # epochs or steps of the uninterrupted run; the interrupted one stops after 1

# What particular recipes are known to do on their SMOKE data, beyond the contract: options
# resolved from the data (and recorded), figures drawn, metrics logged every epoch. A new
# recipe needs no entry.
EXPECTED = {
    "vae": {"figures": {"samples.png", "reconstructions.png", "latent.png", "interpolation.png",
                        "learning_curve_elbo.png"}, "logged": ["val_elbo"]},
    "ae": {"config": {"noise": "none", "loss": "bce"},
           "figures": {"reconstructions.png", "latent.png", "samples.png"}},
    "dae": {"config": {"noise": "masking", "loss": "bce"},
            "figures": {"reconstructions.png", "latent.png", "samples.png"}},
    "flow": {"config": {"flow": "nsf"}, "figures": {"density.png", "samples.png",
                                                      "learning_curve.png"}},
    "gan": {"figures": {"samples_over_training.png", "samples.png", "latent_interpolation.png",
                        "losses.png", "d_outputs.png"}},
    "gmm": {"config": {"components": 8, "covariance_type": "full"},
            "figures": {"density.png", "samples.png", "lower_bound.png"}},
    "bmm": {"config": {"components": 4},
            "figures": {"means.png", "samples.png", "lower_bound.png"}},
}
TIMING_KEYS = ("seconds",)  # metrics that measure the clock, not the model


def _smoke(name: str) -> tuple[str, dict]:
    opts = RECIPES[name].smoke
    assert "data" in opts, f"the recipe {name} gives no SMOKE data set"
    data = opts.pop("data")
    if "program" in opts:
        opts["program"] = str(ROOT / opts["program"])
    return data, opts


def _train(name, out, **kw):
    data, opts = _smoke(name)
    limit = opts.pop("limit", None)
    unit = RECIPES[name].trains_by
    if unit is not None:
        opts[unit] = LENGTH
    return probgen.train(name, data, out, limit=limit, device="cpu", progress=False, figures=False,
                         **{**opts, **kw})


def _checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)


def _assert_identical(a, b, where: str) -> None:
    """Bit-identical nested state: tensors equal in value, dtype and shape; the rest equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for k in a:
            _assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _progress(run_dir: Path) -> dict:
    return json.loads((run_dir / "progress.json").read_text())


def check_contract(name: str, tmp_path: Path) -> None:
    recipe = RECIPES[name]
    unit = recipe.trains_by
    expected = EXPECTED.get(name, {})
    full = _train(name, tmp_path / "full")
    cfg = full.run.config
    assert cfg["model"] == name and cfg["completed"]["step"] == _checkpoint(tmp_path / "full")["step"]
    assert {k: cfg[k] for k in expected.get("config", {})} == expected.get("config", {})
    if unit is not None:
        assert cfg[unit] == LENGTH
        p = _progress(tmp_path / "full")
        assert p[f"{unit}_run"] == LENGTH and p["finished"] and p["stopped_by"] is None

    # the same run stopped after its first epoch or step, then resumed
    part = tmp_path / "part"
    if unit is not None:
        stopped = _train(name, part, time_budget=1e-9)
        assert stopped.stopped_by is None  # a time budget is not a signal
        p = _progress(part)
        assert p[f"{unit}_run"] == 1 and not p["finished"] and "time budget" in p["stopped_by"]
        assert stopped.run.config["completed"]["step"] == _checkpoint(part)["step"]
    else:  # fitted in one go: --resume of the finished fit reloads it and fits nothing
        _train(name, part)
        logged = (part / "metrics.jsonl").read_text()
    resumed = _train(name, part, resume=True, time_budget=None)
    _assert_identical(_checkpoint(tmp_path / "full")["state"], _checkpoint(part)["state"], "state")
    assert _checkpoint(part)["step"] == _checkpoint(tmp_path / "full")["step"]
    if unit is not None:
        assert _progress(part)[f"{unit}_run"] == LENGTH and _progress(part)["finished"]
        assert resumed.run.config[unit] == LENGTH
    else:
        assert (part / "metrics.jsonl").read_text() == logged
    # the resumed run logged what the uninterrupted one did, once per step, the same values
    untimed = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in full.run.metrics()]
    assert [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in resumed.run.metrics()] \
        == untimed
    for key in expected.get("logged", []):
        assert untimed and all(r.get(key) is not None for r in untimed), key
    if isinstance(full.model, torch.nn.Module):
        _assert_identical(full.model.state_dict(), resumed.model.state_dict(), "model")

    # reloaded from the run folder: the same model, seen through the evaluation protocol
    run, data, loaded = load_run(tmp_path / "full", device="cpu")
    with own_params(full.model):
        torch.manual_seed(0)
        drawn = full.model.sample(5)
    with own_params(loaded):
        torch.manual_seed(0)
        got = loaded.sample(5)
    torch.testing.assert_close(got, drawn, rtol=0, atol=0)
    if isinstance(loaded, torch.nn.Module):
        _assert_identical(loaded.state_dict(), full.model.state_dict(), "reloaded model")
    if callable(getattr(loaded, "log_prob", None)):
        x = data.test[:16]
        with torch.no_grad():
            torch.testing.assert_close(loaded.log_prob(x), full.model.log_prob(x), rtol=0, atol=0)

    # the figures of the reloaded model
    paths = [Path(p) for p in recipe.module.figures(loaded, data, run)]
    assert paths and all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert all(p.parent == run.figures_dir for p in paths)
    assert {p.name for p in paths} >= expected.get("figures", set())


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_trains_resumes_bit_identically_reloads_and_draws(name, tmp_path):
    check_contract(name, tmp_path)


def test_every_recipe_states_its_contract():
    for name, r in RECIPES.items():
        assert r.help and r.trains_by in ("epochs", "steps", None), name
        # a recipe that fills a budget has a length to make unbounded
        assert not r.fills_budget or r.trains_by is not None, name
        flags = r.Config.flags()
        if r.trains_by is not None:
            assert r.trains_by in flags, f"{name} trains by {r.trains_by} but has no such option"
        assert len(set(flags.values())) == len(flags), name
        # one statement of each default: the dataclass, the flags and config.json agree
        c = r.Config.read({"model": name})
        assert dataclasses.is_dataclass(c)
        assert c.as_dict() == {n: o.default for n, o in r.Config.options().items()}
        assert [f.name for f in dataclasses.fields(c)] == list(flags)
    assert {n for n, r in RECIPES.items() if r.distributed} == {"vae", "gan", "gmm", "bmm"}
    assert {n for n, r in RECIPES.items() if r.fills_budget} == {"vae", "ae", "dae", "program"}
    assert {n for n, r in RECIPES.items() if r.quick} == {"gmm", "ppca"}


def test_building_the_command_line_imports_no_torch():
    """`probgen --help` builds every recipe's flags (and the estimator registry's) without
    importing torch; how fast it answers is measured by benchmarks/cli_help.py."""
    code = ("import sys; from probgen.cli import build_parser; build_parser().format_help(); "
            "print(sorted({'torch', 'pyro'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- a new recipe
class Gaussian(torch.nn.Module):
    """A diagonal Gaussian fitted by Adam on the mean negative log-likelihood, one full-batch
    step per epoch: the model of the toy recipe (a new model would sit in models/)."""

    def __init__(self, dim: int):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(dim))
        self.log_scale = torch.nn.Parameter(torch.zeros(dim))

    def dist(self):
        return torch.distributions.Normal(self.loc, self.log_scale.exp())

    def log_prob(self, x):
        return self.dist().log_prob(x.reshape(x.shape[0], -1)).sum(-1)

    def sample(self, n: int):
        with torch.no_grad():
            return self.dist().sample((n,))


class GaussianConfig(RecipeConfig):
    epochs: int = option(30, "passes over the data (default %(default)s)", type=int)
    lr: float = option(0.05, "Adam learning rate (default %(default)s)", type=float)


def _gaussian_train(run, data, config, device):
    from probgen.recipes import epoch_checkpoint, resume_epochs

    c = GaussianConfig.read(config)
    model = Gaussian(data.dim)
    start_epoch, start_step, optim_state, _ = resume_epochs(run, model, device)
    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    if optim_state is not None:
        opt.load_state_dict(optim_state)
    save = epoch_checkpoint(run, model)
    state = types.SimpleNamespace(optimizer=opt, step=start_step, epoch=start_epoch)
    for epoch in range(start_epoch, c.epochs):
        loss = -model.log_prob(data.train).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        state.step += 1
        state.epoch = epoch + 1
        run.log(state.step, epoch=state.epoch, train_log_likelihood=-float(loss.detach()))
        save(state)
        if run.should_stop():
            break
    return model


def _gaussian_load(run, data, device):
    from probgen.recipes import load_model_state

    model = Gaussian(data.dim)
    load_model_state(run, model, device, "a Gaussian")
    return model


def _gaussian_figures(model, data, run):
    from probgen import plots

    return [plots.scatter_2d({"data": data.test, "samples": model.sample(200)},
                             run.figures_dir / "samples.png", title="toy Gaussian")]


def _toy_recipe() -> types.ModuleType:
    m = types.ModuleType("toy_gaussian_recipe")
    m.HELP = "a diagonal Gaussian (a recipe registered by a test)"
    m.Config = GaussianConfig
    m.TRAINS_BY = "epochs"
    m.FILLS_BUDGET = True
    m.SMOKE = {"data": "ring8", "limit": 256}
    m.data_options = lambda args: {"binarize": "none"}
    m.train, m.load, m.figures = _gaussian_train, _gaussian_load, _gaussian_figures
    return m


@pytest.fixture
def toy_recipe():
    names = register(_toy_recipe(), ["toy-gauss"])
    yield names[0]
    for name in names:
        del RECIPES[name]


def test_a_recipe_registered_here_meets_the_contract_and_reaches_cli_and_compare(
        toy_recipe, tmp_path, capsys):
    from probgen.cli import main

    with pytest.raises(SystemExit):
        main(["train", toy_recipe, "--help"])
    out = capsys.readouterr().out
    assert "a diagonal Gaussian" in out and "--lr LR" in out and "(default 0.05)" in out
    assert main(["train", toy_recipe, "--data", "ring8", "--limit", "256", "--epochs", "3",
                 "--out", str(tmp_path / "cli"), "--device", "cpu", "--quiet"]) == 0
    assert _progress(tmp_path / "cli")["epochs_run"] == 3

    check_contract(toy_recipe, tmp_path / "contract")

    result = probgen.compare("ring8", [toy_recipe], tmp_path / "cmp", budget=0.01, limit=256,
                             eval_limit=200, quiet=True)
    ll = result["models"][toy_recipe]["metrics"]["log_likelihood"]["value"]
    assert ll is not None and ll == ll
    assert toy_recipe in (tmp_path / "cmp" / "report.html").read_text()
    # it fills its share of the budget: trained with epochs without end, stopped by time
    cfg = json.loads((tmp_path / "cmp" / "runs" / toy_recipe / "config.json").read_text())
    assert cfg["epochs"] == 1_000_000 and "time budget" in cfg["completed"]["stopped_by"]


def test_registering_a_module_that_breaks_the_contract_names_what_is_missing(toy_recipe):
    from probgen.errors import ConfigError

    broken = types.ModuleType("broken_recipe")
    broken.HELP = "no train"
    with pytest.raises(ConfigError, match="lacks Config, data_options, train, load"):
        register(broken, ["broken"])
    bad = _toy_recipe()
    bad.TRAINS_BY = "iterations"
    with pytest.raises(ConfigError, match="TRAINS_BY must be 'epochs', 'steps' or None"):
        register(bad, ["bad"])
