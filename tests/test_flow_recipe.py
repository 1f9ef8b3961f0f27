"""The flow recipe's training choices: the best validation epoch is the one kept (and survives
a resume bit for bit), the gradient clipping is Adam on the clipped gradient, the image default
samples finite values in one pass; and compare hands the samples its scoring drew to the
report's figures instead of sampling again."""

import json

import pytest
import torch

import probgen
from probgen.models.flow import Flow
from probgen.recipes import flow as recipe

# validation scores handed out in turn: the best is the second epoch's
SCRIPTED = [-3.0, -1.0, -2.0, -4.0]


def _scripted_validation(monkeypatch, states: list):
    """Replace the validation score by SCRIPTED, recording the parameters each call saw."""
    calls = iter(SCRIPTED * 4)

    def fake(model, data, batch_size=1000):
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return next(calls)

    monkeypatch.setattr(recipe, "val_log_likelihood", fake)


def _train(out, **kw):
    opts = dict(limit=300, device="cpu", progress=False, figures=False, epochs=4, transforms=1,
                hidden=[8], bins=4, batch_size=100, seed=0)
    return probgen.train("flow", "banana", out, **{**opts, **kw})


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_best_validation_epoch_is_kept_recorded_and_reloaded(monkeypatch, tmp_path):
    states: list = []
    _scripted_validation(monkeypatch, states)
    trained = _train(tmp_path / "run")
    assert len(states) == 4
    kept = json.loads((tmp_path / "run" / "kept.json").read_text())
    assert kept == {"keep": "best", "epoch": 2, "last_epoch": 4, "val_log_likelihood": -1.0}
    assert _same(trained.model.state_dict(), states[1])
    assert not _same(states[1], states[3])
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    # the checkpoint holds the last parameters (to resume from) and the best beside them
    assert _same(ckpt["state"]["model"], states[3]) and ckpt["state"]["best"]["epoch"] == 2
    _, _, loaded = probgen.training.load_run(tmp_path / "run", device="cpu")
    assert _same(loaded.state_dict(), states[1])


def test_keep_last_yields_the_last_parameters(monkeypatch, tmp_path):
    states: list = []
    _scripted_validation(monkeypatch, states)
    trained = _train(tmp_path / "run", keep="last")
    assert _same(trained.model.state_dict(), states[3])
    kept = json.loads((tmp_path / "run" / "kept.json").read_text())
    assert (kept["keep"], kept["epoch"], kept["last_epoch"]) == ("last", 4, 4)
    _, _, loaded = probgen.training.load_run(tmp_path / "run", device="cpu")
    assert _same(loaded.state_dict(), states[3])
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    assert "best" not in ckpt["state"]  # nothing kept beside the last


def test_without_a_finite_validation_score_the_last_parameters_stay(monkeypatch, tmp_path):
    states: list = []

    def nan_or_none(model, data, batch_size=1000):
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return float("nan") if len(states) % 2 else None

    monkeypatch.setattr(recipe, "val_log_likelihood", nan_or_none)
    trained = _train(tmp_path / "run")
    assert _same(trained.model.state_dict(), states[3])
    kept = json.loads((tmp_path / "run" / "kept.json").read_text())
    assert kept == {"keep": "best", "epoch": None, "last_epoch": 4, "val_log_likelihood": None}


def test_a_resumed_run_keeps_the_same_best_epoch_bit_for_bit(monkeypatch, tmp_path):
    states: list = []
    _scripted_validation(monkeypatch, states)
    full = _train(tmp_path / "full")
    # stopped after its first epoch and resumed: the scores continue where they stopped
    states.clear()
    _scripted_validation(monkeypatch, states)
    _train(tmp_path / "part", time_budget=1e-9)
    calls = iter(SCRIPTED[1:])
    monkeypatch.setattr(recipe, "val_log_likelihood", lambda model, data, batch_size=1000: next(calls))
    resumed = _train(tmp_path / "part", resume=True)
    a, b = (torch.load(p / "checkpoints" / "latest.pt", weights_only=True)["state"]
            for p in (tmp_path / "full", tmp_path / "part"))
    assert a["best"]["epoch"] == b["best"]["epoch"] == 2
    assert _same(a["best"]["model"], b["best"]["model"]) and _same(a["model"], b["model"])
    assert _same(full.model.state_dict(), resumed.model.state_dict())
    assert json.loads((tmp_path / "part" / "kept.json").read_text())["epoch"] == 2


def test_clipped_adam_is_adam_on_the_clipped_gradient():
    torch.manual_seed(0)
    w0 = torch.randn(5, 3)
    grads = [torch.randn(5, 3) * s for s in (10.0, 0.1, 3.0)]
    max_norm = 1.0
    a = w0.clone().requires_grad_()
    opt = recipe.clipped_adam([a], lr=0.1, max_norm=max_norm)
    b = w0.clone().requires_grad_()
    ref = torch.optim.Adam([b], lr=0.1)
    for g in grads:
        a.grad = g.clone()
        opt.step()
        b.grad = g * min(1.0, max_norm / float(g.norm()))  # the clipped gradient, by hand
        ref.step()
        torch.testing.assert_close(a, b)
    # its state is Adam's: a checkpoint of it loads into Adam and back
    torch.optim.Adam([b.detach().clone().requires_grad_()], lr=0.1).load_state_dict(opt.state_dict())
    assert type(recipe.clipped_adam([a], lr=0.1, max_norm=0)) is torch.optim.Adam


def test_image_defaults_sample_finite_values_in_one_pass():
    from probgen.data import load_dataset

    cfg = recipe.resolve_config({}, load_dataset("digits", limit=100, dequantize="auto"))
    assert cfg["flow"] == "realnvp" and cfg["clip"] > 0 and cfg["keep"] == "best"
    flow = Flow((1, 8, 8), kind=cfg["flow"], transforms=cfg["transforms"], hidden=(32,),
                preprocess="logit")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # far from the identity it starts at, with large scales and shifts
        for p in flow.flow.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    torch.manual_seed(0)
    s = flow.sample(2000)
    edge = 0.05 / 0.9 + 1e-6  # the logit's inverse maps onto (-a, 1 + a) / (1 - 2a)
    assert bool(torch.isfinite(s).all()) and bool(((s >= -edge) & (s <= 1 + edge)).all())


class _Counting(torch.nn.Module):
    """A model with sample(n) that counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def sample(self, n):
        self.calls += 1
        return torch.arange(n * 2, dtype=torch.float32).reshape(n, 2) + 1000 * self.calls


def test_scoring_samples_are_recorded_and_the_model_left_as_it_was():
    from probgen.comparison import recording_samples, scoring_samples

    m = _Counting()
    with recording_samples(m, 5) as drawn:
        first = m.sample(3)
        second = m.sample(4)
    assert "sample" not in m.__dict__ and m.calls == 2
    got = torch.cat(drawn)
    torch.testing.assert_close(got, torch.cat([first, second[:2]]))
    assert scoring_samples({"samples": got}, 5) is not None and scoring_samples({"samples": got}, 6) is None
    with recording_samples((m, m), 5) as drawn:  # nothing to record on a (model, guide) pair
        pass
    assert drawn == []
    from types import SimpleNamespace

    own = SimpleNamespace(sample=lambda n: torch.zeros(n, 2))  # an instance's own sample
    before = own.sample
    with recording_samples(own, 2) as drawn:
        own.sample(3)
    assert own.sample is before and torch.cat(drawn).shape == (2, 2)


def test_compare_figures_show_the_scoring_samples_without_drawing_again(tmp_path):
    from probgen import report
    from probgen.comparison import figure_sample_count
    from probgen.data import load_dataset

    data = load_dataset("banana", limit=200)
    m = _Counting()
    samples = m.sample(figure_sample_count(data))
    rows = {"m": {"model": m, "data": data, "samples": samples}}
    figs = report.sample_figures(rows, tmp_path)
    assert m.calls == 1 and (tmp_path / "figures" / "samples_m.png").is_file()
    assert any(p.name == "samples_m.png" for _, p in figs)
    rows["m"]["samples"] = None  # a row that drew nothing while scored draws here
    report.sample_figures(rows, tmp_path)
    assert m.calls == 2


@pytest.mark.parametrize("clip", ["-1", "x"])
def test_a_bad_clip_is_refused_by_the_command_line(clip, tmp_path, capsys):
    from probgen.cli import main

    with pytest.raises(SystemExit):
        main(["train", "flow", "--data", "banana", "--clip", clip, "--out", str(tmp_path / "r")])
    assert "clip" in capsys.readouterr().err


def test_non_finite_samples_are_counted_in_a_warning(monkeypatch):
    flow = Flow((3,), kind="maf", transforms=1, hidden=(8,), preprocess="none")
    inner = flow.distribution()

    class Overflowing:  # the flow's law with every other draw overflowed, as a MAF's can
        def sample(self, shape):
            y = inner.sample(shape)
            y[::2, 1] = float("inf")
            return y

    monkeypatch.setattr(flow, "distribution", lambda: Overflowing())
    with pytest.warns(RuntimeWarning, match="3 of 6 samples of the maf flow are not finite"):
        s = flow.sample(6)
    assert int((~torch.isfinite(s).all(1)).sum()) == 3  # returned as they are, not hidden


def test_overwriting_a_flow_run_removes_its_kept_record(tmp_path):
    _train(tmp_path / "run", epochs=1)
    assert (tmp_path / "run" / "kept.json").exists()
    probgen.train("ppca", "banana", tmp_path / "run", limit=300, device="cpu", progress=False,
                  figures=False, overwrite=True)
    assert not (tmp_path / "run" / "kept.json").exists()


def test_default_length_is_enough_steps_on_small_vector_data():
    """40 epochs are about 3,000 steps on a toy set's 20,000 examples but were 120 steps on a
    user's 700 values, and that flow put mass where no data lie; smaller data get the epochs
    that 3,000 steps take. Images and the toy sets keep theirs."""
    from types import SimpleNamespace

    from probgen.recipes.flow import TOY_EPOCHS, TOY_STEPS, resolve_config

    def data(n, kind="vector"):
        return SimpleNamespace(kind=kind, train=torch.zeros(n, 1), bin_width=None)

    assert resolve_config({}, data(700))["epochs"] == TOY_STEPS // 3  # 3 batches of 256
    assert resolve_config({}, data(20_000, "toy"))["epochs"] == TOY_EPOCHS
    assert resolve_config({"batch_size": 100}, data(700))["epochs"] == 429  # 7 batches
    assert resolve_config({"epochs": 5}, data(700))["epochs"] == 5
    assert resolve_config({}, data(300, "image"))["epochs"] == 50
