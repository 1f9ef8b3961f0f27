"""Progress bars: drawn where asked for, silent in logs, CI and with --quiet, and never a
change to what is computed."""

import io
import json
import re

import pytest
import torch

from probgen import progress
from probgen.cli import main
from probgen.errors import ConfigError


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def forced(monkeypatch):
    """Bars drawn even though the test's stderr is not a terminal."""
    monkeypatch.setenv(progress.ENV, "1")


@pytest.fixture
def unforced(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)


# ----------------------------------------------------------------------------- when
def test_a_terminal_gets_a_bar_with_rate_and_time_left_and_a_log_does_not(unforced):
    term = _Terminal()
    with progress.bar(4, desc="work", unit="step", file=term) as b:
        b.update(2)
        b.refresh()  # drawn at once, not after tqdm's minimum interval
    # count, elapsed < time left, rate
    assert re.search(r"work: +50%.* 2/4 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+\w?step/s\]", term.getvalue())
    log = io.StringIO()
    assert isinstance(progress.bar(4, file=log), progress.NullBar)
    assert log.getvalue() == ""


def test_quiet_ci_and_the_environment_decide_over_the_terminal(monkeypatch, unforced):
    term = _Terminal()
    assert progress.enabled(True, term)
    assert not progress.enabled(False, term)  # --quiet
    monkeypatch.setenv("CI", "true")
    assert not progress.enabled(True, term)
    monkeypatch.delenv("CI")
    monkeypatch.setenv(progress.ENV, "0")
    assert not progress.enabled(True, term)
    monkeypatch.setenv(progress.ENV, "1")
    assert progress.enabled(True, io.StringIO())
    assert not progress.enabled(False, io.StringIO()), "--quiet wins over the environment"
    monkeypatch.setenv(progress.ENV, "sometimes")
    with pytest.raises(ConfigError, match=r"PROBGEN_PROGRESS must be 1 .* or 0 .*got 'sometimes'"):
        progress.enabled(True, term)


def test_a_closed_or_plain_stream_is_not_a_terminal(unforced):
    closed = io.StringIO()  # isatty() raises on a closed stream
    closed.close()
    assert not progress.enabled(True, closed)
    assert not progress.enabled(True, object())


# ----------------------------------------------------------------------------- the loops
class _LinearGaussian:
    """z ~ N(0, I_2), x | z ~ N(A z, 0.5^2 I_3), q(z|x) = N(B x, 0.7^2 I): the bound protocol."""

    latent_dim = 2

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.A = torch.randn(3, 2, generator=g, dtype=torch.float64)
        self.B = torch.randn(2, 3, generator=g, dtype=torch.float64) * 0.3

    def encoder_distribution(self, x):
        return torch.distributions.Independent(torch.distributions.Normal(x @ self.B.T, 0.7), 1)

    def prior_log_prob(self, z):
        return torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)

    def log_likelihood(self, x, z):
        return torch.distributions.Normal(z @ self.A.T, 0.5).log_prob(x).sum(-1)


def _twice(fn, capsys):
    """``fn()`` with bars forced on, then with progress off, from the same seed."""
    torch.manual_seed(1)
    on = fn(True)
    drawn = capsys.readouterr().err
    torch.manual_seed(1)
    off = fn(False)
    assert capsys.readouterr().err == "", "progress=False drew something"
    return on, off, drawn


def test_iwae_and_elbo_bars_leave_the_bounds_unchanged(forced, capsys):
    from probgen.inference.bounds import elbo, iwae_bound

    model, x = _LinearGaussian(), torch.randn(40, 3, dtype=torch.float64)
    on, off, drawn = _twice(lambda p: iwae_bound(model, x, 64, chunk_size=16, progress=p), capsys)
    assert torch.equal(on.total, off.total) and torch.equal(on.mc_stderr, off.mc_stderr)
    assert "IWAE-64" in drawn and "sample/s" in drawn
    on, off, drawn = _twice(lambda p: elbo(model, x, num_samples=8, progress=p), capsys)
    assert torch.equal(on.total, off.total) and "ELBO" in drawn


@pytest.mark.parametrize("which", ["ais", "bdmc"])
def test_ais_bar_counts_the_pilot_and_every_pass_and_changes_nothing(forced, capsys, which):
    from probgen.inference.ais import ais, bdmc

    model, x = _LinearGaussian(), torch.randn(6, 3, dtype=torch.float64)
    z = torch.randn(6, 2, dtype=torch.float64)

    def run(p):
        gen = torch.Generator().manual_seed(3)
        kw = {"n_steps": 10, "n_chains": 4, "batch_size": 4, "generator": gen, "progress": p}
        return ais(model, x, **kw) if which == "ais" else bdmc(model, x, z, **kw)

    on, off, drawn = _twice(run, capsys)
    if which == "ais":
        assert torch.equal(on.log_weights, off.log_weights)
        total = 2 * 2 * 10  # (pilot + estimate) x 2 batches x 10 steps
    else:
        assert torch.equal(on.lower.log_weights, off.lower.log_weights)
        assert torch.equal(on.upper.log_weights, off.upper.log_weights)
        total = 3 * 2 * 10
    assert f"/{total} " in drawn and "AIS" in drawn


def test_em_bar_leaves_the_fit_unchanged(forced, capsys):
    from probgen.models.gmm import GaussianMixture

    x = torch.cat([torch.randn(100, 2) - 3, torch.randn(100, 2) + 3]).double()

    def fit(p):
        return GaussianMixture(2, n_init=2, random_state=0).fit(x, progress=p)

    on, off, drawn = _twice(fit, capsys)
    assert on.lower_bounds_ == off.lower_bounds_ and torch.equal(on.means_, off.means_)
    assert "EM 1/2" in drawn and "EM 2/2" in drawn and "iter/s" in drawn


def test_gan_bar_leaves_training_unchanged(forced, capsys):
    from probgen.inference.adversarial import GANTrainer, fit_gan
    from probgen.models.nets import gan_networks

    data = torch.randn(256, 2)

    def train(p):
        g, d = gan_networks((2,), 2, width=16, depth=2)
        tr = GANTrainer(g, d, latent_dim=2, loss="ns", lr=1e-3)
        res = fit_gan(tr, data, 12, batch_size=32, seed=0, log_every=4, progress=p)
        return res.history, [p.detach().clone() for p in g.parameters()]

    (h_on, g_on), (h_off, g_off), drawn = _twice(train, capsys)
    assert h_on == h_off and all(torch.equal(a, b) for a, b in zip(g_on, g_off))
    assert "GAN" in drawn and "/12 " in drawn


def test_svi_bar_goes_through_the_same_switch(forced, capsys):
    from probgen.inference.svi import fit_loss

    w = torch.zeros(2, requires_grad=True)
    fit_loss(lambda: (w - 1).pow(2).sum(), [w], epochs=3, progress=True)
    assert "epoch" in capsys.readouterr().err
    fit_loss(lambda: (w - 1).pow(2).sum(), [w], epochs=6, start_epoch=3, progress=False)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- the commands
def _train_and_eval(tmp_path, *extra):
    run = tmp_path / "gmm"
    assert main(["train", "gmm", "--data", "ring8", "--out", str(run), "--no-figures",
                 "--limit", "400", "--overwrite", *extra]) == 0
    assert main(["eval", str(run), "--limit", "300", "--n-samples", "300", "--overwrite",
                 *extra]) == 0
    return json.loads((run / "eval.json").read_text())["metrics"]


def test_commands_draw_bars_when_forced_and_quiet_silences_them(forced, capsys, tmp_path):
    loud = _train_and_eval(tmp_path)
    err = capsys.readouterr().err
    assert "EM" in err and "iter/s" in err and "log-likelihood" in err and "example/s" in err
    quiet = _train_and_eval(tmp_path, "--quiet")
    assert capsys.readouterr().err == ""
    assert quiet == loud


def test_commands_draw_nothing_where_stderr_is_not_a_terminal(unforced, capsys, tmp_path):
    _train_and_eval(tmp_path)
    assert capsys.readouterr().err == ""


def test_compare_and_demo_take_quiet(capsys):
    for argv in (["compare", "--data", "ring8", "--models", "gmm", "--out", "x", "--quiet"],
                 ["demo", "--quiet"]):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        assert "--quiet" in capsys.readouterr().out
