"""The normalizing flow: an exact density (quadrature, Zuko's own log_prob), trained as a Pyro
program through fit_svi, and a recipe that trains, resumes and reloads like the others."""

import math

import pyro
import pytest
import torch
import zuko
from torch.distributions import AffineTransform, TransformedDistribution

from probgen.data import load_dataset
from probgen.errors import ConfigError, DataError
from probgen.inference.svi import fit_svi
from probgen.models.flow import Flow
from probgen.runs import Run


def _randomised(flow: Flow) -> Flow:
    """Perturb every weight so that the flow is far from the identity it starts near."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in flow.flow.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return flow


# the splines' density needs a finer grid; the affine flows' tails reach further
@pytest.mark.parametrize("kind,lim,n", [("nsf", 12.0, 801), ("maf", 16.0, 641), ("realnvp", 16.0, 641)])
def test_density_integrates_to_one_on_a_2d_grid(kind, lim, n):
    torch.manual_seed(0)
    flow = _randomised(Flow((2,), kind=kind, transforms=2, hidden=(16,)))
    with torch.no_grad():
        flow.shift.copy_(torch.tensor([0.5, -1.0]))
        flow.log_scale.copy_(torch.tensor([math.log(0.7), math.log(1.3)]))
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1).float()
    with torch.no_grad():
        dens = torch.cat([flow.log_prob(c) for c in pts.split(40_000)]).double().exp().reshape(n, n)
    mass = torch.trapezoid(torch.trapezoid(dens, g, dim=1), g)
    assert float(mass) == pytest.approx(1.0, abs=2e-3)


def test_log_prob_equals_zukos_own():
    torch.manual_seed(0)
    x = torch.randn(64, 3) * 2 + 1
    raw = _randomised(Flow((3,), kind="nsf", transforms=2, hidden=(16,), preprocess="none"))
    with torch.no_grad():
        torch.testing.assert_close(raw.log_prob(x), raw.flow().log_prob(x))
    std = Flow((3,), kind="nsf", transforms=2, hidden=(16,))
    std.load_state_dict(raw.state_dict(), strict=False)
    std.fit_preprocessing(x)
    # log p(x) of Zuko's flow seen through the affine map y = (x - m) / s
    scale = std.log_scale.exp()
    ref = TransformedDistribution(std.flow(), [AffineTransform(std.shift, scale, event_dim=1)])
    with torch.no_grad():
        torch.testing.assert_close(std.log_prob(x), ref.log_prob(x), rtol=1e-5, atol=1e-5)
    # and a Zuko flow built the same way, with the same weights, agrees
    other = zuko.flows.NSF(3, transforms=2, hidden_features=(16,))
    other.load_state_dict(raw.flow.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(raw.log_prob(x), other().log_prob(x))


def test_logit_preprocessing_of_pixels_has_its_jacobian():
    torch.manual_seed(0)
    flow = Flow((1,), kind="maf", transforms=1, hidden=(8,), preprocess="logit")
    g = torch.linspace(0, 1, 20_001, dtype=torch.float64)
    with torch.no_grad():
        dens = flow.log_prob(g[1:-1].float().unsqueeze(1)).double().exp()
    # the logit maps [0, 1] onto [logit(0.05), logit(0.95)]: mass there under the flow's law
    inner = flow.flow()
    ymax = math.log(0.95 / 0.05)
    yg = torch.linspace(-ymax, ymax, 20_001)
    with torch.no_grad():
        mass_y = torch.trapezoid(inner.log_prob(yg.unsqueeze(1)).double().exp(), yg.double())
    assert float(torch.trapezoid(dens, g[1:-1])) == pytest.approx(float(mass_y), abs=1e-3)
    with pytest.raises(DataError, match="values in \\[0, 1\\]"):
        flow.log_prob(torch.full((2, 1), 1.5))


def test_training_through_fit_svi_lowers_the_loss():
    data = load_dataset("banana", limit=2000)
    flow = Flow(data.shape, kind="nsf", transforms=2, hidden=(32,))
    flow.fit_preprocessing(data.train)
    with torch.no_grad():
        before = float(flow.log_prob(data.val).mean())
    res = fit_svi(flow.model, flow.guide, data, epochs=3, batch_size=200, lr=5e-3,
                  model_kwargs={"num_data": 2000}, seed=0)
    with torch.no_grad():
        after = float(flow.log_prob(data.val).mean())
    losses = torch.tensor(res.losses)
    assert losses[-5:].mean() < losses[:5].mean()
    assert after > before + 0.1
    # the negative ELBO of the program is the minibatch's negative log-likelihood scaled by N / n
    xb = data.train[:200]
    elbo = pyro.infer.Trace_ELBO().loss(flow.model, flow.guide, xb, num_data=2000)
    with torch.no_grad():
        assert elbo == pytest.approx(-float(flow.log_prob(xb).sum()) * 10, rel=1e-4)


@pytest.mark.parametrize("kind", ["nsf", "realnvp"])
def test_sampling_shapes(kind):
    flow = Flow((1, 4, 4), kind=kind, transforms=2, hidden=(16,), preprocess="logit")
    s = flow.sample(7)
    edge = 0.05 / 0.9  # the logit's inverse maps onto (-a, 1 + a) / (1 - 2a)
    assert s.shape == (7, 1, 4, 4) and bool(((s > -edge) & (s < 1 + edge)).all())
    assert flow.log_prob(s).shape == (7,)
    d = Flow((2,), transforms=1, hidden=(8,))
    assert d.sample(5).shape == (5, 2)
    from models.flow import FlowDistribution

    assert FlowDistribution(d, 3).sample((2,)).shape == (2, 3, 2)


def test_bad_options_are_clear():
    with pytest.raises(ConfigError, match="flow kind"):
        Flow((2,), kind="glow")
    with pytest.raises(ConfigError, match="at least 2 dimensions"):
        Flow((1,), kind="realnvp")
    with pytest.raises(DataError, match="shape"):
        Flow((2,), transforms=1).log_prob(torch.zeros(3, 3))


def test_cli_on_dequantized_images_reports_bits_per_dim(tmp_path):
    import json

    from probgen.cli import main

    out = tmp_path / "flow"
    assert main(["train", "flow", "--data", "digits", "--out", str(out), "--device", "cpu",
                 "--epochs", "1", "--transforms", "2", "--hidden", "32", "--no-figures",
                 "--quiet", "--limit", "300"]) == 0
    assert Run.open(out).config["preprocess"] == "logit"
    assert main(["eval", str(out), "--device", "cpu", "--quiet", "--limit", "50",
                 "--n-samples", "50"]) == 0
    ll = json.loads((out / "eval.json").read_text())["metrics"]["log_likelihood"]
    assert ll["estimator"] == "dequantization bound" and ll["inner_estimator"] == "exact"
    assert ll["representation"] == "dequantized-17-level" and math.isfinite(ll["value"])
    assert ll["bits_per_dim"] == pytest.approx(-ll["value"] / (64 * math.log(2)))


def test_defaults_follow_the_data():
    from probgen.recipes import flow as recipe

    toy = recipe.resolve_config({}, load_dataset("ring8", limit=100))
    # 100 examples are one batch: as many epochs as TOY_STEPS steps take (the full set: 40)
    assert (toy["flow"], toy["epochs"], toy["hidden"], toy["bins"], toy["preprocess"]) == \
        ("nsf", recipe.TOY_STEPS, [128, 128], recipe.TOY_BINS, "standardize")
    img = recipe.resolve_config({}, load_dataset("digits", limit=100, dequantize="auto"))
    assert (img["flow"], img["transforms"], img["epochs"], img["hidden"], img["preprocess"],
            img["clip"], img["keep"]) == ("realnvp", 10, 50, [256], "logit", recipe.IMAGE_CLIP, "best")
    assert (toy["clip"], toy["keep"]) == (0.0, "best")
    assert recipe.resolve_config({"epochs": 3}, load_dataset("ring8", limit=100))["epochs"] == 3


def test_learning_rate_anneals_over_epochs_or_a_time_budget():
    from probgen.recipes.flow import lr_at

    cfg = {"lr": 1e-3, "epochs": 50}
    assert lr_at(cfg, 0) == pytest.approx(1e-3) and lr_at(cfg, 50) == pytest.approx(1e-5)
    assert lr_at(cfg, 25) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    # a budget half spent at epoch 5 puts the rate where epoch 25 of 50 would
    assert lr_at(cfg, 5, 0.5) == pytest.approx(lr_at(cfg, 25))
    assert lr_at(cfg, 40, 0.1) == pytest.approx(lr_at(cfg, 40))  # the further of the two
    assert lr_at(cfg, 5, 3.0) == pytest.approx(1e-5)  # past the budget: the floor
