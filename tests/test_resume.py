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


# ----------------------------------------------------------------------------- options on --resume
def test_resume_takes_a_new_learning_rate_and_nan_policy_and_refuses_a_changed_model(tmp_path, capsys):
    """A resumed run once kept its options whatever the command said: --resume --lr 1e-4 (the
    advice after a divergence) trained on at the old rate, and --latent-dim 3 was ignored."""
    import probgen
    from probgen.cli import main
    from probgen.errors import ConfigError

    out = tmp_path / "ae"
    base = ["train", "ae", "--data", "ring8", "--limit", "400", "--out", str(out), "--device", "cpu",
            "--no-figures", "--quiet"]
    assert main([*base, "--epochs", "2"]) == 0
    capsys.readouterr()
    assert main([*base, "--epochs", "3", "--lr", "1e-4", "--on-nan", "stop", "--resume"]) == 0
    assert "resuming with lr=0.0001 (was 0.001), on_nan='stop' (was 'skip')" in capsys.readouterr().out
    run = Run.open(out)
    assert run.config["lr"] == 1e-4 and run.config["on_nan"] == "stop" and "_resume_changes" not in run.config
    state = run.load_checkpoint()["state"]
    assert state["epoch"] == 3
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [pytest.approx(1e-4)]
    # an option that the checkpoint cannot follow is refused by name, the run left as it was
    before = (out / "checkpoints" / "latest.pt").read_bytes()
    assert main([*base, "--epochs", "4", "--latent-dim", "3", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "latent_dim=3" in err and "latent_dim=2" in err
    assert (out / "checkpoints" / "latest.pt").read_bytes() == before
    # the same from Python, and the same value again is no change
    with pytest.raises(ConfigError, match="cannot resume .* with batch_size=7"):
        probgen.train("ae", "ring8", out, resume=True, limit=400, epochs=4, batch_size=7, figures=False)
    assert probgen.train("ae", "ring8", out, resume=True, limit=400, epochs=4, lr=1e-4,
                         figures=False, progress=False).run.config["lr"] == 1e-4


def test_a_step_recipe_refuses_a_new_learning_rate_on_resume(tmp_path, capsys):
    from probgen.cli import main

    out = tmp_path / "gan"
    base = ["train", "gan", "--data", "ring8", "--out", str(out), "--device", "cpu", "--no-figures",
            "--quiet", "--batch-size", "32"]
    assert main([*base, "--steps", "20"]) == 0
    assert main([*base, "--steps", "40", "--lr", "5e-4", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "lr=0.0005" in err and "takes --epochs/--steps, --time-budget from" in err


def test_a_resumed_flow_follows_the_schedule_of_its_new_length_and_rate_from_its_first_epoch(tmp_path):
    """Its first resumed epoch once ran at the rate the old schedule had ended on (1e-6 after
    2 of 2 epochs) however many epochs and whatever --lr the command gave."""
    from probgen.cli import main
    from probgen.recipes import cosine_lr

    out = tmp_path / "flow"
    base = ["train", "flow", "--data", "banana", "--limit", "300", "--out", str(out), "--device",
            "cpu", "--no-figures", "--quiet", "--transforms", "1", "--hidden", "16"]
    assert main([*base, "--epochs", "2"]) == 0
    assert main([*base, "--epochs", "6", "--lr", "1e-4", "--resume"]) == 0
    rates = {r["epoch"]: r["lr"] for r in Run.open(out).metrics() if "lr" in r}
    assert rates[3] == pytest.approx(cosine_lr(1e-4, 2 / 6))
    assert rates[4] == pytest.approx(cosine_lr(1e-4, 3 / 6))
