"""Run folders and checkpoints: atomic writes, safe loading, resumption, clear refusals."""

import json
import os
import pickle

import pytest
import torch

from probgen.errors import CheckpointError, ConfigError
from probgen.runs import (
    Run,
    atomic_write_bytes,
    get_rng_state,
    load_checkpoint_file,
    resolve_device,
    seed_everything,
    set_rng_state,
)


def _run(tmp_path, **cfg):
    return Run.create(tmp_path / "run", {"model": "gmm", "data": "grid25", "seed": 0, **cfg})


def test_checkpoint_round_trip(tmp_path):
    run = _run(tmp_path)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    run.save_checkpoint({"net": net.state_dict(), "optim": opt.state_dict(), "epoch": 3}, step=17)
    payload = run.load_checkpoint()
    assert payload["step"] == 17 and payload["state"]["epoch"] == 3
    net2 = torch.nn.Linear(3, 2)
    net2.load_state_dict(payload["state"]["net"])
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.1)
    opt2.load_state_dict(payload["state"]["optim"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_rng_state_round_trip():
    import random

    import numpy as np

    seed_everything(5)
    state = get_rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all() and a[2] == b[2]


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    run = _run(tmp_path)
    run.save_checkpoint({"w": torch.ones(3)}, step=1)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        run.save_checkpoint({"w": torch.zeros(3)}, step=2)
    monkeypatch.undo()
    payload = run.load_checkpoint()
    assert payload["step"] == 1 and torch.equal(payload["state"]["w"], torch.ones(3))
    leftovers = [p.name for p in run.checkpoint_path.parent.iterdir() if p.name != "latest.pt"]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/probgen-pwned",))


def test_pickle_payload_is_refused_and_never_run(tmp_path):
    marker = "/tmp/probgen-pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    run = _run(tmp_path)
    with open(run.checkpoint_path, "wb") as f:
        pickle.dump({"format": "probgen-checkpoint", "evil": _Payload()}, f)
    with pytest.raises(CheckpointError, match="refused to load"):
        run.load_checkpoint()
    assert not os.path.exists(marker)


def test_truncated_checkpoint_is_refused(tmp_path):
    run = _run(tmp_path)
    run.save_checkpoint({"w": torch.randn(1000)}, step=1)
    data = run.checkpoint_path.read_bytes()
    run.checkpoint_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        run.load_checkpoint()


def test_checkpoint_from_another_model_is_refused(tmp_path):
    run = _run(tmp_path)
    run.save_checkpoint({"w": torch.ones(1)}, step=1)
    with pytest.raises(CheckpointError, match="holds a 'gmm' model, but the run is a 'vae' run"):
        load_checkpoint_file(run.checkpoint_path, expected_model="vae")


def test_checkpoint_from_another_version_is_refused(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format": "probgen-checkpoint", "version": 99, "model": "gmm", "state": {}}, path)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint_file(path)


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="not a probgen checkpoint"):
        load_checkpoint_file(path)


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    run = _run(tmp_path)
    run.save_checkpoint({"w": torch.ones(1)}, step=1)
    with pytest.raises(ConfigError, match="already holds a run .*--resume.*--overwrite"):
        _run(tmp_path)
    resumed = Run.create(run.path, {"model": "gmm", "data": "grid25"}, resume=True)
    assert resumed.load_checkpoint()["step"] == 1
    with pytest.raises(ConfigError, match="data='grid25', but data='ring8'"):
        Run.create(run.path, {"model": "gmm", "data": "ring8"}, resume=True)
    fresh = Run.create(run.path, {"model": "gmm", "data": "ring8"}, overwrite=True)
    assert fresh.load_checkpoint() is None
    assert json.loads((run.path / "config.json").read_text())["data"] == "ring8"


def test_resume_without_a_run_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="holds no run"):
        Run.create(tmp_path / "nothing", {"model": "gmm", "data": "x"}, resume=True)
    assert not (tmp_path / "nothing").exists()


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot write to the run folder"):
        Run.create(blocker / "run", {"model": "gmm", "data": "x"})
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        Run.create(blocker, {"model": "gmm", "data": "x"})


def test_open_non_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="not a run folder"):
        Run.open(tmp_path)


def test_metrics_log_survives_a_cut_line(tmp_path):
    run = _run(tmp_path)
    run.log(1, loss=torch.tensor(2.5))
    run.log(2, loss=1.5)
    with open(run.metrics_path, "a") as f:
        f.write('{"step": 3, "lo')  # killed mid-line
    assert [m["step"] for m in run.metrics()] == [1, 2]
    run.truncate_metrics(1)
    assert [m["step"] for m in run.metrics()] == [1]


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"old")
    atomic_write_bytes(p, b"new contents")
    assert p.read_bytes() == b"new contents"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(ConfigError, match="no CUDA device.*--device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="must be one of cpu, cuda"):
        resolve_device("tpu")
