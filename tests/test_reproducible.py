"""Same seed, same CPU result, bit for bit: every model trained twice through ``probgen train``.

Each model is trained twice into two run folders with the same seed and tiny settings; every
tensor of the two final checkpoints (model state, optimiser state, RNG state) must be
``torch.equal``, and every other value equal. A third run with another seed must end with
different model parameters, so that the first check cannot pass because the seed is ignored
or nothing was trained.
"""

from __future__ import annotations

import pytest
import torch

from probgen.cli import main
from probgen.runs import load_checkpoint_file

# tiny settings per model: a second or two each on one CPU thread
IMAGE = ["--data", "mnist-5k", "--limit", "96"]
SETTINGS = {
    "vae": [*IMAGE, "--epochs", "2", "--batch-size", "32", "--hidden", "32", "--latent-dim", "4"],
    "ae": [*IMAGE, "--epochs", "2", "--batch-size", "32", "--hidden", "32", "--latent-dim", "4"],
    "dae": [*IMAGE, "--epochs", "2", "--batch-size", "32", "--hidden", "32", "--latent-dim", "4",
            "--noise", "masking"],
    "ppca": [*IMAGE, "--latent-dim", "3", "--fit", "svi", "--epochs", "2", "--batch-size", "32"],
    "gan": ["--data", "ring8", "--limit", "512", "--steps", "20", "--batch-size", "64",
            "--width", "16", "--depth", "2", "--log-every", "10", "--checkpoint-every", "10"],
    "gmm": ["--data", "ring8", "--limit", "400", "--n-init", "2", "--max-iter", "20",
            "--covariance-type", "full"],
}


def _train(model: str, out, seed: int) -> dict:
    argv = ["train", model, *SETTINGS[model], "--out", str(out), "--seed", str(seed),
            "--no-figures", "--device", "cpu"]
    assert main(argv) == 0, f"probgen {' '.join(argv)} failed"
    return load_checkpoint_file(out / "checkpoints" / "latest.pt", expected_model=model)


def _leaves(obj, prefix=""):
    """Flatten nested dicts/lists into ``{"a/b/0": leaf}``."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_leaves(v, f"{prefix}/{k}"))
        return out
    if isinstance(obj, list | tuple):
        out = {}
        for i, v in enumerate(obj):
            out.update(_leaves(v, f"{prefix}/{i}"))
        return out
    return {prefix: obj}


def _model_tensors(ckpt: dict) -> dict[str, torch.Tensor]:
    """The tensors that are the fitted model (not optimiser or RNG state)."""
    state = ckpt["state"]
    if "model" in state:  # vae, ae, dae, ppca
        state = state["model"]
    elif "generator" in state:  # gan trainer
        state = {"generator": state["generator"], "discriminator": state["discriminator"]}
    leaves = _leaves(state)
    return {k: v for k, v in leaves.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}


@pytest.mark.parametrize("model", list(SETTINGS))
def test_same_seed_gives_the_same_checkpoint_bit_for_bit(model, tmp_path):
    a = _train(model, tmp_path / "a", seed=3)
    b = _train(model, tmp_path / "b", seed=3)
    la, lb = _leaves(a), _leaves(b)
    assert la.keys() == lb.keys()
    n_tensors = 0
    for key in la:
        x, y = la[key], lb[key]
        if isinstance(x, torch.Tensor):
            n_tensors += 1
            assert x.dtype == y.dtype and x.shape == y.shape, key
            assert torch.equal(x, y), f"{model}: {key} differs between two runs with seed 3"
        else:
            assert x == y, f"{model}: {key} differs: {x!r} vs {y!r}"
    assert n_tensors > 0 and _model_tensors(a), f"{model}: the checkpoint holds no model tensors"

    c = _train(model, tmp_path / "c", seed=4)
    ma, mc = _model_tensors(a), _model_tensors(c)
    assert ma.keys() == mc.keys()
    differ = [k for k in ma if not torch.equal(ma[k], mc[k])]
    assert differ, f"{model}: seeds 3 and 4 gave identical parameters"
    for k, v in mc.items():
        assert torch.isfinite(v).all(), f"{model}: {k} is not finite"
