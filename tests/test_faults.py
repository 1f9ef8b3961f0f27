"""Faults a long run meets: a worker that dies, two writers in one folder, a full disk, data
changed under a run, a run that did not finish."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from probgen.cli import main
from probgen.errors import DataChangedError, RunLockedError, WriteError
from probgen.runs import (
    LOCK_NAME,
    Run,
    acquire_lock,
    atomic_write_bytes,
    release_lock,
    reuse_decision,
)

ENV = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
CPU = ["--device", "cpu", "--no-figures"]


def _snapshot(folder) -> dict:
    """Every file under ``folder`` with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _gmm_run(tmp_path, data="ring8", name="run", *extra):
    out = tmp_path / name
    assert main(["train", "gmm", "--data", str(data), "--components", "2", "--n-init", "1",
                 "--out", str(out), *CPU, *extra]) == 0
    return out


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_write_gives_the_permissions_of_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
        with open(tmp_path / "g", "wb"):  # what an ordinary write gives
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "f").stat().st_mode & 0o777 == (tmp_path / "g").stat().st_mode & 0o777


@pytest.mark.parametrize("where, code", [("fsync", errno.EIO), ("mkstemp", errno.EROFS),
                                         ("write", errno.ENOSPC)])
def test_a_failed_write_leaves_the_old_file_and_says_why(tmp_path, monkeypatch, where, code):
    import tempfile

    path = tmp_path / "eval.json"
    atomic_write_bytes(path, b"old")

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    if where == "write":  # the disk fills while the bytes go out
        real_fdopen = os.fdopen

        class Full:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                fail()

            def __getattr__(self, name):
                return getattr(self.f, name)

        monkeypatch.setattr(os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    else:
        monkeypatch.setattr(os if where == "fsync" else tempfile, where, fail)
    with pytest.raises(WriteError) as info:
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert info.value.errno == code and isinstance(info.value, OSError)
    assert f"could not write {path}: {os.strerror(code)} ({errno.errorcode[code]})" in str(info.value)
    assert "the file it would have replaced is intact" in str(info.value)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"], "a temporary file was left behind"


def _fail_nth_checkpoint_fsync(monkeypatch, n: int, code: int = errno.ENOSPC):
    """os.fsync raises ``code`` on the ``n``-th checkpoint write (a file being written under
    checkpoints/ to replace latest.pt): the disk is full at that moment."""
    real = os.fsync
    count = [0]

    def fsync(fd):
        if ".latest.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            count[0] += 1
            if count[0] == n:
                raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return count


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc to see which file is synced")
def test_enospc_during_the_third_checkpoint_leaves_the_second_loadable(tmp_path, monkeypatch, capsys):
    gan = ["train", "gan", "--data", "ring8", "--steps", "40", "--checkpoint-every", "10",
           "--batch-size", "32", "--width", "16", *CPU]
    assert main([*gan, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "full"
    count = _fail_nth_checkpoint_fsync(monkeypatch, 3)
    assert main([*gan, "--out", str(out)]) == 2
    monkeypatch.undo()
    assert count[0] == 3
    err = capsys.readouterr().err
    ckpt = out / "checkpoints" / "latest.pt"
    assert f"could not write {ckpt}: No space left on device (ENOSPC)" in err
    assert f"The last good checkpoint is {ckpt} (step 20)" in err and "--resume" in err
    run = Run.open(out)
    assert run.load_checkpoint()["step"] == 20  # the second checkpoint, whole
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["latest.pt"]
    assert not run.is_completed and not (out / LOCK_NAME).exists()
    # with space again, --resume ends where the undisturbed run ended
    assert main([*gan, "--out", str(out), "--resume"]) == 0
    a, b = Run.open(tmp_path / "whole").load_checkpoint(), Run.open(out).load_checkpoint()
    assert a["step"] == b["step"] == 40
    for net in ("generator", "discriminator"):
        for k, v in a["state"][net].items():
            assert torch.equal(v, b["state"][net][k]), f"{net}.{k}"
    assert Run.open(out).is_completed


def test_a_failed_eval_json_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    out = _gmm_run(tmp_path)
    assert main(["eval", str(out), "--limit", "100", "--device", "cpu"]) == 0
    before = (out / "eval.json").read_bytes()
    real = os.fsync

    def fsync(fd):
        if ".eval.json." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main(["eval", str(out), "--limit", "50", "--device", "cpu", "--overwrite"]) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert f"could not write {out / 'eval.json'}: No space left on device (ENOSPC)" in err
    assert "the file it would have replaced is intact. Free some space" in err
    assert (out / "eval.json").read_bytes() == before


# ----------------------------------------------------------------------------- one writer
def test_the_lock_is_reentrant_in_a_process_and_gone_once_released(tmp_path):
    run = Run.create(tmp_path / "r", {"model": "gmm", "data": "ring8"})
    lock = run.path / LOCK_NAME
    info = json.loads(lock.read_text())
    assert info["pid"] == os.getpid() and run.locked
    again = Run.open(run.path, lock=True)  # the same process: allowed
    again.unlock()
    assert lock.exists()
    run.unlock()
    assert not lock.exists() and not run.locked
    del again
    acquire_lock(run.path)
    release_lock(run.path)
    assert not lock.exists()


HOLDER = textwrap.dedent("""
    import sys, time
    from probgen.runs import Run
    run = Run.open(sys.argv[1], lock=True)
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def _hold(folder, seconds=120):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "holding", proc.stderr.read()
    return proc


def test_a_second_writer_is_refused_at_once_and_changes_nothing(tmp_path):
    out = _gmm_run(tmp_path)
    assert main(["eval", str(out), "--limit", "100", "--device", "cpu"]) == 0
    holder = _hold(out)
    try:
        before = _snapshot(out)
        assert LOCK_NAME in before
        writers = [["train", "gmm", "--data", "ring8", "--out", str(out), "--overwrite", *CPU],
                   ["train", "gmm", "--data", "ring8", "--out", str(out), "--resume", *CPU],
                   ["eval", str(out), "--device", "cpu"]]
        for argv in writers:
            # refused at once, not queued behind the lock: a writer that waited for the holder
            # (alive for the whole test) would run into the timeout
            done = subprocess.run([sys.executable, "-m", "probgen", *argv], capture_output=True,
                                  text=True, env=ENV, timeout=60)
            assert done.returncode == 2, done.stderr[-2000:]
            assert f"{out} is being written by process {holder.pid} on host" in done.stderr
            assert "one process at a time writes into a run folder" in done.stderr
        assert _snapshot(out) == before
        # readers are not blocked
        other = tmp_path / "eval-elsewhere.json"
        assert main(["eval", str(out), "--limit", "50", "--device", "cpu", "--out", str(other)]) == 0
        assert json.loads(other.read_text())["metrics"]
        assert main(["sample", str(out), "-n", "8", "--device", "cpu", "--out", str(tmp_path / "s.pt")]) == 0
        assert before[".lock"] == _snapshot(out)[".lock"] and before["eval.json"] == _snapshot(out)["eval.json"]
    finally:
        holder.kill()
        holder.communicate()
    # the holder is gone: the next writer takes the folder over
    assert main(["train", "gmm", "--data", "ring8", "--out", str(out), "--overwrite", *CPU]) == 0


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    run = Run.create(tmp_path / "r", {"model": "gmm", "data": "ring8"})
    run.unlock()
    holder = _hold(run.path)
    with pytest.raises(RunLockedError, match=f"process {holder.pid} on host"):
        Run.open(run.path, lock=True)
    holder.send_signal(signal.SIGKILL)
    holder.communicate()
    assert json.loads((run.path / LOCK_NAME).read_text())["pid"] == holder.pid  # left behind
    taken = Run.open(run.path, lock=True)
    assert json.loads((run.path / LOCK_NAME).read_text())["pid"] == os.getpid()
    taken.unlock()


def test_without_flock_the_pid_and_host_decide(tmp_path, monkeypatch):
    import fcntl
    import socket

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    folder = tmp_path / "r"
    folder.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                   "command": "probgen train gmm", "since": "then"}))
        with pytest.raises(RunLockedError, match=f"process {sleeper.pid} on host"):
            acquire_lock(folder)
    finally:
        sleeper.kill()
        sleeper.wait()
    acquire_lock(folder)  # its process is gone: a stale lock
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    release_lock(folder)
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "c"}))
    with pytest.raises(RunLockedError, match="process 1 on host elsewhere"):
        acquire_lock(folder)  # another host's process cannot be seen from here: held


# ----------------------------------------------------------------------------- data identity
def test_the_fingerprint_says_what_changed(tmp_path):
    from probgen.data import data_fingerprint, fingerprint_changes, load_dataset

    x = np.random.default_rng(0).normal(size=(200, 2)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    fp = data_fingerprint(load_dataset(str(tmp_path / "x.npy")))
    assert fp["files"][0]["bytes"] == (tmp_path / "x.npy").stat().st_size
    (tmp_path / "x.npy").rename(tmp_path / "moved.npy")
    moved = data_fingerprint(load_dataset(str(tmp_path / "moved.npy")))
    assert [c for c in fingerprint_changes(fp, moved) if "file" in c] == []  # same bytes
    np.save(tmp_path / "moved.npy", x + 1)
    changes = fingerprint_changes(moved, data_fingerprint(load_dataset(str(tmp_path / "moved.npy"), limit=50)))
    assert any(c.startswith(f"the file {tmp_path / 'moved.npy'} changed") for c in changes)
    assert "the train split had 140 examples and has 50" in changes
    ring = data_fingerprint(load_dataset("ring8", seed=0))
    assert fingerprint_changes(ring, data_fingerprint(load_dataset("ring8", seed=0))) == []
    other = data_fingerprint(load_dataset("ring8", seed=1))  # other draws from the same density
    assert (f"the values of the train split changed (sha256 {ring['arrays']['train'][:12]}... -> "
            f"{other['arrays']['train'][:12]}...)") in fingerprint_changes(ring, other)
    assert fingerprint_changes(ring, data_fingerprint(load_dataset("grid25")))[0] == \
        "the data set was 'ring8' and is now 'grid25'"


def test_a_changed_npy_is_refused_on_resume_and_eval(tmp_path, capsys):
    path = tmp_path / "x.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.normal(size=(300, 2)).astype("float32"))
    out = _gmm_run(tmp_path, path)
    assert main(["eval", str(out), "--limit", "50", "--device", "cpu"]) == 0
    np.save(path, rng.normal(size=(300, 2)).astype("float32"))  # regenerated: same shape, other values
    capsys.readouterr()
    before = _snapshot(out)
    resume = ["train", "gmm", "--data", str(path), "--components", "2", "--n-init", "1", "--out",
              str(out), "--resume", *CPU]
    for argv in (resume, ["eval", str(out), "--limit", "50", "--device", "cpu", "--overwrite"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"the data behind the run {out} changed since it was trained: the file {path} changed" in err
        assert "--allow-changed-data" in err
    assert _snapshot(out) == before
    with pytest.raises(DataChangedError):
        main(["eval", str(out), "--device", "cpu", "--overwrite", "--debug"])
    # going on anyway is recorded in the run and in the results
    assert main(["eval", str(out), "--limit", "50", "--device", "cpu", "--overwrite", "--allow-changed-data"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert [c["action"] for c in cfg["data_changes"]] == ["eval"]
    assert json.loads((out / "eval.json").read_text())["data_changes"][0].startswith(f"the file {path} changed")
    assert main([*resume, "--allow-changed-data"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert [c["action"] for c in cfg["data_changes"]] == ["eval", "train"]
    assert main(["eval", str(out), "--limit", "50", "--device", "cpu", "--overwrite"]) == 0  # trained on it now


# ----------------------------------------------------------------------------- completed runs
def test_completion_is_recorded_and_a_resume_clears_it(tmp_path):
    out = _gmm_run(tmp_path, "ring8", "run", "--time-budget", "600")
    run = Run.open(out)
    assert run.is_completed
    assert run.config["completed"]["budget"] == {"max_iter": run.config["max_iter"], "time_budget": 600.0}
    assert reuse_decision(out)[0] == "reuse"
    assert reuse_decision(out, run.config["argv"] + ["--overwrite"])[0] == "reuse"
    assert reuse_decision(out, run.config["argv"][:-1])[0] == "train"  # another command
    assert reuse_decision(tmp_path / "none") == ("train", f"{tmp_path / 'none'} holds no run yet")
    before = _snapshot(out)
    resumed = Run.create(out, dict(run.config), resume=True)
    assert not resumed.is_completed
    assert LOCK_NAME not in before  # the training that wrote it has ended
    assert {k: v for k, v in _snapshot(out).items() if k != LOCK_NAME} == before  # nothing written yet
    resumed.log(1, loss=0.0)  # the first write of the resumed run: it is no longer complete
    assert not Run.open(out).is_completed
    assert reuse_decision(out)[0] == "resume"
    assert resumed.resume_argv()[-3:] == ["--out", str(out), "--resume"]


def test_compare_resumes_a_given_run_that_did_not_complete_and_uses_a_completed_one(tmp_path, capsys):
    from probgen.comparison import CompareSpec, _finish_given

    out = _gmm_run(tmp_path)
    spec = CompareSpec(data="ring8", models=["gmm"], out=tmp_path / "cmp", runs={"gmm": out})
    assert _finish_given("gmm", out, spec).startswith("given: the run in")
    run = Run.open(out)
    del run.config["completed"]  # as if it had been stopped
    run.lock()._write_config()
    run.unlock()
    assert _finish_given("gmm", out, spec).startswith("resumed: the run in")
    assert "[compare] resuming gmm: the run in" in capsys.readouterr().out
    assert Run.open(out).is_completed


@pytest.mark.slow  # a whole comparison, twice (the decision itself is tested just above)
def test_a_comparison_that_failed_half_way_reuses_only_what_completed(tmp_path, capsys):
    out = tmp_path / "cmp"
    cmp = ["compare", "--data", "ring8", "--models", "gmm", "--budget", "0.1", "--out", str(out),
           "--eval-limit", "200"]
    assert main(cmp) == 0
    assert json.loads((out / "results.json").read_text())["training"]["gmm"] == "trained"
    (out / "results.json").unlink()  # as if it had failed after training gmm
    capsys.readouterr()
    assert main(cmp) == 0
    assert f"[compare] reusing gmm: the run in {out / 'runs' / 'gmm'} completed" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["training"]["gmm"].startswith("reused")


# ----------------------------------------------------------------------------- processes
def _stalled_peer(rank: int, port: int, queue) -> None:
    """Rank 0 waits in an all-reduce that rank 1 never joins."""
    from probgen import distributed as pdist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))
    pdist.setup(torch.device("cpu"))
    if rank == 1:
        time.sleep(30)
        os._exit(0)
    t0 = time.perf_counter()
    try:
        pdist.all_reduce_sum(torch.ones(1))
        queue.put(("no error", time.perf_counter() - t0))
    except RuntimeError as e:
        queue.put((str(e).splitlines()[0][:200], time.perf_counter() - t0))
    queue.close()
    queue.join_thread()  # the message is out before the process ends
    os._exit(0)


def test_a_collective_times_out_instead_of_hanging(monkeypatch):
    import torch.multiprocessing as mp
    from test_distributed import _free_port

    monkeypatch.setenv("PROBGEN_DIST_TIMEOUT", "2")
    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_stalled_peer, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        message, seconds = queue.get(timeout=60)
    finally:
        for p in procs:
            p.kill()
            p.join()
    assert message != "no error" and 1.5 < seconds < 20, (message, seconds)


def test_bad_restart_options_are_refused(tmp_path, capsys):
    vae = ["train", "vae", "--data", "digits", "--out", str(tmp_path / "r"), *CPU]
    assert main([*vae, "--nproc", "2", "--max-restarts", "-1"]) == 2
    assert "--max-restarts must be 0 or more; got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*vae, "--nproc", "2", "--dist-timeout", "0"])
    assert "--dist-timeout: must be a positive finite number" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# Loaded into every Python process of the job (PYTHONPATH): in the first attempt, the worker
# of rank KILL_RANK kills itself with SIGKILL at its KILL_AT-th all-reduce, in the middle of an
# epoch, as the OOM killer would.
KILLER = textwrap.dedent("""
    import os
    if (os.environ.get("RANK") == os.environ.get("KILL_RANK")
            and os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0"):
        import signal
        import torch.distributed as dist
        _count, _real = [0], dist.all_reduce
        def all_reduce(*args, **kwargs):
            _count[0] += 1
            if _count[0] == int(os.environ["KILL_AT"]):
                os.kill(os.getpid(), signal.SIGKILL)
            return _real(*args, **kwargs)
        dist.all_reduce = all_reduce
""")


@pytest.mark.slow  # two launches of two processes: about a minute on a busy 2-core machine
@pytest.mark.parametrize("rank", [1, 0])
def test_a_killed_worker_restarts_the_group_which_ends_like_an_undisturbed_run(tmp_path, rank):
    vae = ["train", "vae", "--data", "digits", "--limit", "256", "--batch-size", "32", "--latent-dim", "4",
           "--hidden", "32", "--likelihood", "gaussian", "--epochs", "3", "--nproc", "2", *CPU]
    whole = subprocess.run([sys.executable, "-m", "probgen", *vae, "--out", str(tmp_path / "whole")],
                           capture_output=True, text=True, env=ENV, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(KILLER)
    # 4 steps an epoch, and per step one all-reduce for the gradients and one for the loss:
    # the 12th is in the middle of the second epoch, after the first epoch's checkpoint
    env = {**ENV, "PYTHONPATH": str(tmp_path / "hook"), "KILL_RANK": str(rank), "KILL_AT": "12"}
    out = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-m", "probgen", *vae, "--max-restarts", "1", "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode == 0, killed.stderr[-3000:]
    assert "exitcode: -9" in killed.stderr  # the worker was killed, and the job went on by itself
    a = torch.load(tmp_path / "whole" / "checkpoints" / "latest.pt", weights_only=True)
    b = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    assert a["step"] == b["step"]
    for k, v in a["state"]["model"].items():
        assert torch.equal(v, b["state"]["model"][k]), k
    logged = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]
    assert Run.open(out).is_completed and not (out / LOCK_NAME).exists()
