"""The epoch's training ELBO of a program is per example whatever the batches."""

import json
import math
import textwrap

import pytest
import torch

import probgen
from probgen.inference.svi import fit_loss
from probgen.training import load_run


def test_the_epoch_loss_per_example_counts_batches_by_their_sizes():
    """150 examples in batches of 100: steps of 100 and 50 examples whose losses sum over their
    batches. Per example the epoch's loss is 1; the mean of the two steps' losses is 75."""
    w = torch.zeros((), requires_grad=True)
    seen = []

    def loss(x):
        return x.sum() + 0.0 * w

    fit_loss(loss, [w], torch.ones(150, 2) / 2, epochs=1, batch_size=100, lr=1e-3,
             callbacks=[seen.append])
    (state,) = seen
    assert state.epoch_examples == 150 and state.epoch_loss == pytest.approx(75.0)
    assert state.loss_per_example == pytest.approx(1.0)


# z ~ N(0, 1), x | z ~ N(z, 1), and the guide is the exact posterior N(x / 2, 1 / 2): every
# draw's ELBO is log p(x) = log N(x; 0, 2), so the logged training ELBO has an exact value
EXACT = '''
import math

import pyro
import pyro.distributions as dist
import torch


class ExactPosterior:
    data_options = {"binarize": "none"}

    def __init__(self, data_shape):
        pass

    def model(self, x):
        pyro.param("unused", torch.zeros(()))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x):
        a = pyro.param("a", torch.tensor(0.5))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a * x, math.sqrt(0.5)).to_event(1))
'''


@pytest.mark.parametrize("rows", [80, 190])  # fewer training examples than a batch; a partial batch
def test_a_programs_training_elbo_is_per_example(tmp_path, rows):
    (tmp_path / "exact.py").write_text(textwrap.dedent(EXACT))
    torch.manual_seed(rows)
    arr = tmp_path / "x.npy"
    import numpy as np

    np.save(arr, (2.0 * torch.randn(rows, 1)).numpy())
    out = tmp_path / "run"
    probgen.train(f"{tmp_path / 'exact.py'}:ExactPosterior", str(arr), out, epochs=1,
                  batch_size=100, lr=1e-12, figures=False, progress=False)
    _, data, _ = load_run(out, device="cpu")
    exact = float(torch.distributions.Normal(0.0, math.sqrt(2.0)).log_prob(data.train).mean())
    (line,) = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert line["train_elbo"] == pytest.approx(exact, abs=1e-4)
