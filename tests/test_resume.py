"""A run killed with SIGKILL -- also in the middle of writing a checkpoint -- resumes and ends
with the same parameters as a run that was never interrupted (same seed, CPU)."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from probgen.runs import Run

ARGS = {
    "vae": ["--data", "digits", "--epochs", "4", "--hidden", "32", "--latent-dim", "2",
            "--batch-size", "64"],
    "gan": ["--data", "ring8", "--steps", "240", "--batch-size", "64", "--checkpoint-every", "60"],
}

# Runs probgen's command line with os.replace wrapped: on the Nth checkpoint write the process
# kills itself after the new file is fully written to its temporary name, before the rename --
# the worst moment for a crash.
KILLER = textwrap.dedent("""
    import os, signal, sys
    import probgen.runs as runs
    n_target = int(os.environ["KILL_AT_CHECKPOINT"])
    count = [0]
    real_replace = os.replace
    def replace(src, dst):
        if str(dst).endswith("latest.pt"):
            count[0] += 1
            if count[0] == n_target:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)
    runs.os.replace = replace
    from probgen.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _train(model, out, *extra, kill_at=None):
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    argv = ["train", model, *ARGS[model], "--out", str(out), "--device", "cpu", "--no-figures", *extra]
    if kill_at is None:
        cmd = [sys.executable, "-m", "probgen", *argv]
    else:
        env["KILL_AT_CHECKPOINT"] = str(kill_at)
        cmd = [sys.executable, "-c", KILLER, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _state(run_dir):
    return Run.open(run_dir).load_checkpoint()


@pytest.mark.parametrize("model", ["vae", "gan"])
def test_sigkill_mid_checkpoint_then_resume_matches_uninterrupted(model, tmp_path):
    from probgen.recipes import RECIPES

    if model not in RECIPES:
        pytest.skip(f"{model} is not registered")
    whole = _train(model, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = _train(model, tmp_path / "killed", kill_at=3)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # the checkpoint on disk is the previous, complete one
    before = _state(tmp_path / "killed")
    assert before is not None and before["step"] < _state(tmp_path / "whole")["step"]

    resumed = _train(model, tmp_path / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _state(tmp_path / "whole"), _state(tmp_path / "killed")
    assert a["step"] == b["step"]
    _assert_same(a["state"], b["state"])
    steps = [m["step"] for m in Run.open(tmp_path / "killed").metrics()]
    assert steps == sorted(steps) and len(steps) == len(set(steps)), "metrics log repeats steps"


def _assert_same(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{path} differs")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_sigterm_stops_cleanly_with_a_checkpoint(tmp_path):
    from probgen.recipes import RECIPES

    if "gan" not in RECIPES:
        pytest.skip("gan is not registered")
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "probgen", "train", "gan", "--data", "ring8", "--steps", "100000",
         "--out", str(out), "--device", "cpu", "--no-figures"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    import time

    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped cleanly on SIGTERM" in err
    ckpt = _state(out)
    assert ckpt is not None and 0 < ckpt["step"] < 100000
