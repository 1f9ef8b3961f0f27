"""A default length in epochs is a length in steps on a small training set."""

import json
import math

import pytest

import probgen
import probgen.recipes as recipes
from probgen.recipes import MIN_DEFAULT_STEPS, default_epochs


def test_default_epochs_keep_a_large_set_and_take_enough_steps_on_a_small_one():
    assert default_epochs(55_000, 200, 20) == 20            # MNIST: 5,500 steps already
    assert default_epochs(1_258, 200, 20) == math.ceil(MIN_DEFAULT_STEPS / 7)  # sklearn digits
    assert default_epochs(60, 100, 20) == MIN_DEFAULT_STEPS  # one step per epoch
    for n, batch in ((1_258, 200), (353, 100), (3_500, 200), (7, 3)):
        epochs = default_epochs(n, batch, 10)
        steps_per_epoch = math.ceil(n / batch)
        assert epochs * steps_per_epoch >= MIN_DEFAULT_STEPS
        assert (epochs - 1) * steps_per_epoch < MIN_DEFAULT_STEPS or epochs == 10


def _read(run_dir, name):
    return json.loads((run_dir / name).read_text())


# a user's program: one latent per 8x8 image, Bernoulli pixels
PROGRAM = '''
import pyro
import pyro.distributions as dist
import torch


class Tiny(torch.nn.Module):
    def __init__(self, data_shape):
        super().__init__()
        self.dec = torch.nn.Linear(1, 64)
        self.enc = torch.nn.Linear(64, 2)

    def model(self, x):
        pyro.module("tiny", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z).view(x.shape)).to_event(3), obs=x)

    def guide(self, x):
        pyro.module("tiny", self)
        loc, log_scale = self.enc(x.flatten(1)).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))
'''


@pytest.mark.parametrize("model, opts", [
    ("vae", {"hidden": [8], "latent_dim": 2}),
    ("ae", {"hidden": [8]}),
    ("program", {"binarize": "dynamic"}),
])
def test_a_default_run_on_a_small_set_trains_the_default_steps_and_records_them(
        tmp_path, monkeypatch, model, opts, capsys):
    monkeypatch.setattr(recipes, "MIN_DEFAULT_STEPS", 30)
    if model == "program":
        (tmp_path / "tiny.py").write_text(PROGRAM)
        model = f"{tmp_path / 'tiny.py'}:Tiny"
    out = tmp_path / "run"
    probgen.train(model, "digits", out, limit=100, batch_size=100, figures=False, progress=False,
                  **opts)
    cfg, progress = _read(out, "config.json"), _read(out, "progress.json")
    assert cfg["epochs"] == 30 and cfg["defaults_from_data"]["epochs"]["value"] == 30
    assert "30 steps of 100" in cfg["defaults_from_data"]["epochs"]["why"]
    assert progress["epochs_run"] == 30 and progress["steps_run"] == 30 and progress["finished"]
    assert "30 epochs: the default of" in capsys.readouterr().out
    # a length given is the length trained, and no default is noted for it
    given = tmp_path / "given"
    probgen.train(model, "digits", given, limit=100, batch_size=100, epochs=3, figures=False,
                  progress=False, **opts)
    cfg = _read(given, "config.json")
    assert cfg["epochs"] == 3 and "epochs" not in cfg.get("defaults_from_data", {})
    assert _read(given, "progress.json")["epochs_run"] == 3
