"""Two gloo processes on the CPU follow one process with the same global batch."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from probgen import distributed as pdist
from probgen.data.batching import batches


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 5, generator=g)
    y = x @ torch.randn(5, 1, generator=g) + 0.1 * torch.randn(96, 1, generator=g)
    return x, y


def _train(world: int, rank: int, batch: int, steps_epochs: int = 2) -> dict:
    x, y = _data()
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model = pdist.wrap_ddp(net, torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for epoch in range(steps_epochs):
        for xb, yb in batches((x, y), batch, seed=3, epoch=epoch, rank=rank, world_size=world,
                              drop_last=True):
            opt.zero_grad()
            loss = ((model(xb) - yb) ** 2).mean()
            loss.backward()
            opt.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _worker(rank, world, port, queue, train):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    pdist.setup(torch.device("cpu"))
    try:
        state = train(world, rank, batch=8)
        # plain arrays: shared-memory tensors die with the worker
        queue.put((rank, {k: v.numpy() for k, v in state.items()}))
    finally:
        pdist.cleanup()


def _in_gloo_processes(train, world: int = 2) -> dict[int, dict]:
    """``train(world, rank, batch=8)`` in ``world`` spawned gloo processes; their final
    states by rank."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, queue, train)) for r in range(world)]
    for p in procs:
        p.start()
    states = dict(queue.get(timeout=120) for _ in range(world))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return states


def test_global_batches_partition_each_epoch():
    ids = torch.arange(50)
    seen = []
    for rank in range(3):
        seen += [i for (b,) in batches((ids,), 4, seed=0, epoch=1, rank=rank, world_size=3)
                 for i in b.tolist()]
    assert sorted(seen) == list(range(50))
    one = [b for (b,) in batches((ids,), 12, seed=0, epoch=1)]
    per_rank = [[b for (b,) in batches((ids,), 4, seed=0, epoch=1, rank=r, world_size=3)]
                for r in range(3)]
    for step, global_batch in enumerate(one[:-1]):  # the last batch is short
        assert torch.equal(global_batch, torch.cat([per_rank[r][step] for r in range(3)]))


def test_two_gloo_processes_match_one_process():
    state = _in_gloo_processes(_train)[0]
    single = _train(world=1, rank=0, batch=16)
    for k in single:
        torch.testing.assert_close(torch.from_numpy(state[k]), single[k], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- Pyro SVI
def _pyro_regression(world: int, rank: int, batch: int) -> dict:
    """MAP linear regression as a Pyro program: parameters only, a subsampled plate scaled to
    the full data. No latent noise, so two processes must follow one process exactly."""
    import pyro
    import pyro.distributions as dist

    from probgen.inference.svi import fit_svi

    x, y = _data()
    n = x.shape[0]

    def model(xb, yb):
        w = pyro.param("w", torch.zeros(5, 1))
        b = pyro.param("b", torch.zeros(1))
        with pyro.plate("data", n, subsample=xb):
            pyro.sample("y", dist.Normal(xb @ w + b, 0.5).to_event(1), obs=yb)

    def guide(xb, yb):
        pass

    pyro.clear_param_store()
    fit_svi(model, guide, (x, y), epochs=3, batch_size=batch, lr=0.05, seed=4,
            processes=pdist.process_group())
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


def test_fit_svi_in_two_gloo_processes_matches_one_process():
    states = _in_gloo_processes(_pyro_regression)
    single = _pyro_regression(world=1, rank=0, batch=16)
    for k in single:  # the ranks agree with each other and with one process
        torch.testing.assert_close(torch.from_numpy(states[0][k]), single[k], rtol=1e-5, atol=1e-6)
        assert (states[0][k] == states[1][k]).all()


# ----------------------------------------------------------------------------- the command
def _cli_train(*args) -> int:
    from probgen.cli import main

    return main(["train", *args, "--no-figures", "--device", "cpu"])


def _state(run, key=None):
    s = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["state"]
    return s[key] if key else s


def test_gan_in_two_processes_follows_one_process_with_the_global_batch(tmp_path):
    common = ["--data", "ring8", "--steps", "20", "--log-every", "10", "--checkpoint-every", "10"]
    assert _cli_train("gan", *common, "--batch-size", "32", "--nproc", "2", "--out", str(tmp_path / "two")) == 0
    assert _cli_train("gan", *common, "--batch-size", "64", "--out", str(tmp_path / "one")) == 0
    for net in ("generator", "discriminator"):
        one, two = _state(tmp_path / "one", net), _state(tmp_path / "two", net)
        for k in one:
            torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5)
    # only rank 0 wrote: one log line per record, one train.json saying 2 processes
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20]
    assert json.loads((tmp_path / "two" / "train.json").read_text())["processes"] == 2


def test_gmm_em_across_processes_gives_the_one_process_fit(tmp_path):
    # one initialisation: with several, all reaching the same optimum, the best is picked by
    # lower bounds equal to rounding, and a permutation of the same components can win
    common = ["--data", "grid25", "--limit", "4000", "--n-init", "1", "--tol", "1e-8"]
    assert _cli_train("gmm", *common, "--nproc", "2", "--out", str(tmp_path / "two")) == 0
    assert _cli_train("gmm", *common, "--out", str(tmp_path / "one")) == 0
    one, two = _state(tmp_path / "one"), _state(tmp_path / "two")
    for k, v in one.items():
        if torch.is_tensor(v) and v.is_floating_point():
            torch.testing.assert_close(two[k], v, rtol=1e-9, atol=1e-12)


def test_vae_resumes_from_a_distributed_run_bit_for_bit(tmp_path):
    common = ["--data", "digits", "--limit", "256", "--batch-size", "32", "--latent-dim", "4",
              "--hidden", "32", "--likelihood", "gaussian", "--nproc", "2",
              # a constant rate: the default cosine runs over --epochs, which differ (2, then 3)
              "--lr-schedule", "constant"]
    assert _cli_train("vae", *common, "--epochs", "2", "--out", str(tmp_path / "a")) == 0
    assert _cli_train("vae", *common, "--epochs", "3", "--out", str(tmp_path / "a"), "--resume") == 0
    assert _cli_train("vae", *common, "--epochs", "3", "--out", str(tmp_path / "b")) == 0
    a, b = _state(tmp_path / "a", "model"), _state(tmp_path / "b", "model")
    assert all(torch.equal(a[k], b[k]) for k in a)
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_training_across_processes_refuses_what_it_cannot_do(tmp_path, capsys, monkeypatch):
    assert _cli_train("vae", "--data", "digits", "--nproc", "0", "--out", str(tmp_path / "z")) == 2
    assert "--nproc must be a positive" in capsys.readouterr().err
    # ppca trains in one process only: it has no --nproc, and refuses torchrun's environment
    from probgen.cli import main

    with pytest.raises(SystemExit):
        main(["train", "ppca", "--data", "digits", "--out", str(tmp_path / "p"), "--nproc", "2"])
    assert "--nproc" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _cli_train("ppca", "--data", "digits", "--out", str(tmp_path / "p")) == 2
    assert "trains in one process only" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_dcgan_with_batchnorm_trains_across_processes(tmp_path):
    """BatchNorm in both networks and two discriminator passes per step: no in-place error
    from DDP's buffer broadcast (each process keeps its own running statistics)."""
    out = tmp_path / "dc"
    assert _cli_train("gan", "--data", "mnist-5k", "--limit", "256", "--steps", "4", "--batch-size", "8", "--width", "8",
                      "--norm", "batch", "--log-every", "2", "--nproc", "2", "--out", str(out)) == 0
    g = _state(out, "generator")
    assert any("running_mean" in k for k in g) and all(torch.isfinite(v).all() for v in g.values())


@pytest.mark.slow  # about a minute; tests/test_resume.py stops one process by SIGTERM by default
def test_sigterm_stops_every_process_after_one_checkpoint_and_resume_continues(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "probgen", "train", "vae", "--data", "digits", "--limit", "256",
            "--batch-size", "32", "--hidden", "16", "--latent-dim", "2", "--likelihood", "gaussian",
            "--out", str(out), "--device", "cpu", "--no-figures", "--nproc", "2"]
    proc = subprocess.Popen([*argv, "--epochs", "100000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("\n") >= 2):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped cleanly on SIGTERM" in err
    ckpt = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    epoch = ckpt["state"]["epoch"]
    assert 2 <= epoch < 100000
    # both processes stopped at the same epoch: the log ends with the checkpoint's epoch
    logged = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, epoch + 1))
    done = subprocess.run([*argv, "--epochs", str(epoch + 1), "--resume"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.load(out / "checkpoints" / "latest.pt", weights_only=True)["state"]["epoch"] == epoch + 1
