"""Run folders, checkpoints, seeds and devices.

A run folder holds everything one training run leaves behind::

    RUN_DIR/
      config.json        the options the run was started with (model, data, seed, ...)
      metrics.jsonl      one JSON object per logged step (losses, bounds, timings)
      progress.json      epochs and steps completed (written with each checkpoint)
      kept.json          which epoch's parameters the run yields (a flow: its best validation epoch)
      checkpoints/
        latest.pt        state dicts, optimizer state, step and RNG state -- nothing else
      figures/           PNG figures
      eval.json          written by ``probgen eval``

Checkpoints are written atomically (a temporary file in the same folder, flushed, fsync'd,
then ``os.replace``d over the old one), so a crash mid-write leaves the previous checkpoint
intact; a write that fails (disk full, I/O error, read-only file system) leaves it intact too
and stops with a :class:`~probgen.errors.WriteError` naming the last good checkpoint. They are
loaded with ``torch.load(weights_only=True)``: a checkpoint that holds anything but tensors
and plain containers is refused, never executed.

One process at a time writes into a run folder: the writer holds the folder's lock (an
advisory ``flock`` on ``RUN_DIR/.lock``, which names the holder), released when it is done or
when the process ends, however it ends. A second writer stops at once with a
:class:`~probgen.errors.RunLockedError` that names the holder; readers take no lock.

``config.json`` also records what the run depends on: a fingerprint of its data
(:func:`probgen.data.data_fingerprint`), checked when the run is resumed or evaluated, and,
once training has ended by its own budget, ``completed`` (with that budget), which tells a
finished run from one that was stopped or died half-way.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any

from probgen.devices import resolve_device  # noqa: F401 - part of this module's API
from probgen.errors import (
    CheckpointError,
    ConfigError,
    DataChangedError,
    RunLockedError,
    WriteError,
)

__all__ = [
    "Run",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "seed_everything",
    "resolve_device",
    "get_rng_state",
    "set_rng_state",
    "atomic_write_bytes",
    "atomic_write_json",
    "write_error",
    "StopControl",
    "LOCK_NAME",
    "acquire_lock",
    "release_lock",
    "check_unlocked",
    "locks_released_after",
    "reuse_decision",
    "elastic_restart",
]

CHECKPOINT_FORMAT = "probgen-checkpoint"
CHECKPOINT_VERSION = 1
_RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints", "figures", "eval.json", "progress.json",
              "kept.json")
LOCK_NAME = ".lock"
# what a resumed run takes from the new command; everything else comes from its config.json
_RESUME_UPDATES = ("epochs", "steps", "time_budget", "argv", "elastic_run_id")


# ----------------------------------------------------------------------------- files
def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux), since
    setting and restoring it races with other threads creating files."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The file gets the permissions an ordinary ``open(path, "w")`` would give (``0o666`` less
    the umask). When any step fails (no space left, an I/O error, a read-only file system)
    the temporary file is removed, the old file is left as it was, and a
    :class:`~probgen.errors.WriteError` (an ``OSError``) says which file and why.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes it 0600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise write_error(path, e) from e
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_error(path, e: OSError, advice: str = "") -> WriteError:
    """The :class:`~probgen.errors.WriteError` for the failed write of ``path``: what the
    system said (with its errno name), that the previous file is intact, and ``advice``."""
    what = f"{e.strerror} ({errno.errorcode.get(e.errno, e.errno)})" if e.strerror else str(e)
    advice = f" {advice[0].upper()}{advice[1:]}" if advice else ""
    err = WriteError(f"could not write {path}: {what}; the file it would have replaced is intact.{advice}")
    err.errno = e.errno  # (no strerror or filename: OSError would print those instead of the message)
    return err


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


# ----------------------------------------------------------------------------- seeds
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, torch (CPU and CUDA) and Pyro from one integer."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        import pyro

        pyro.set_rng_seed(seed)
    except ImportError:  # pragma: no cover - pyro is a hard dependency
        pass


def get_rng_state() -> dict:
    """Every RNG state a run depends on, as tensors and plain containers only."""
    import numpy as np
    import torch

    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": list(_listify(random.getstate())),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype("int64")),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    npst = state["numpy"]
    np.random.set_state(
        ("MT19937", npst["keys"].numpy().astype("uint32"), npst["pos"], npst["has_gauss"],
         npst["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _listify(x):
    return [_listify(v) for v in x] if isinstance(x, tuple | list) else x


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


# ----------------------------------------------------------------------------- devices
# ----------------------------------------------------------------------------- stopping
class StopControl:
    """Asks a training loop to stop cleanly: on SIGINT/SIGTERM, or when a time budget is spent.

    Used as a context manager around training; loops call ``run.should_stop()`` once per
    step and, when it is true, write a checkpoint and return. A second SIGINT interrupts at once.
    """

    def __init__(self, time_budget: float | None = None):
        import time

        self.time_budget = time_budget
        self.start = time.perf_counter()
        self.signal_name: str | None = None
        self._old = {}

    def __enter__(self) -> StopControl:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum, frame) -> None:
        import signal

        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    @property
    def reason(self) -> str | None:
        import time

        if self.signal_name:
            return f"received {self.signal_name}"
        if self.time_budget is not None and time.perf_counter() - self.start > self.time_budget:
            return f"time budget of {self.time_budget:g} s spent"
        return None


# ----------------------------------------------------------------------------- locks
# real path of a run folder -> [fd of its lock file, the holds taken in this process, lock file]
_HELD: dict[str, list] = {}


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and (argv[0].endswith(os.path.join("probgen", "__main__.py")) or Path(argv[0]).name == "probgen"):
        argv[0] = "probgen"
    text = " ".join(argv)
    return text if len(text) <= 300 else text[:297] + "..."


def _read_lock_info(fd: int) -> dict:
    try:
        raw = os.pread(fd, 8192, 0)
        info = json.loads(raw.decode()) if raw.strip() else {}
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _holder(info: dict) -> str:
    if not info.get("pid"):
        return "another process"
    return (f"process {info['pid']} on host {info.get('host', '?')} "
            f"(`{info.get('command', '?')}`, since {info.get('since', '?')})")


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (TypeError, ValueError, OSError):
        return False
    return True


def _try_flock(fd: int, shared: bool = False) -> bool:
    """Lock ``fd`` without waiting; True when this process now holds the lock.

    Where the file system offers no locks, the pid and host written in the lock file decide:
    a lock written on this host by a process that no longer runs is stale; one written on
    another host counts as held (its process cannot be seen from here).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system
        fcntl = None
    if fcntl is not None:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
    info = _read_lock_info(fd)
    if not info.get("pid") or info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        return True
    return info.get("host") == socket.gethostname() and not _pid_alive(info["pid"])


def _locked_error(folder: Path, info: dict) -> RunLockedError:
    return RunLockedError(
        f"{folder} is being written by {_holder(info)}: one process at a time writes into a run "
        "folder. Wait for it to end (or stop it), or choose another folder. Reading the run "
        "meanwhile is fine: `probgen sample`, and `probgen eval --out FILE`, which writes elsewhere."
    )


def acquire_lock(folder: str | os.PathLike) -> object:
    """Take the write lock of the run folder ``folder`` (which must exist), or raise
    :class:`~probgen.errors.RunLockedError` at once, naming the process that holds it.

    The lock is an advisory ``flock`` on ``folder/.lock``, which also records the holder's pid,
    host, command and start time for that message. The kernel drops it when the holder's
    process ends, however it ends (SIGKILL included), so a lock file left by a dead process is
    taken over. Within one process the lock is re-entrant: each :func:`acquire_lock` returns
    a hold, given back by :func:`release_lock`; the last one given back unlocks.
    """
    folder = Path(folder)
    key = os.path.realpath(folder)
    hold = object()
    if key in _HELD:
        _HELD[key][1].add(hold)
        return hold
    lock = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:  # another user's lock file: reading is enough to lock it
            fd = os.open(lock, os.O_RDONLY)
        try:
            got = _try_flock(fd)
            if not got:
                raise _locked_error(folder, _read_lock_info(fd))
            try:  # the holder may have removed the file between our open and our lock
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command_line(),
            "since": _now()}
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    _HELD[key] = [fd, {hold}, lock]
    return hold


def release_lock(folder: str | os.PathLike, hold: object | None = None) -> None:
    """Give back ``hold`` (any one hold when ``None``) of the lock of ``folder`` taken by
    :func:`acquire_lock`; the last one removes the lock file and unlocks it. A hold given
    back already is ignored."""
    key = os.path.realpath(folder)
    entry = _HELD.get(key)
    if entry is None or (hold is not None and hold not in entry[1]):
        return
    if hold is None:
        entry[1].pop()
    else:
        entry[1].discard(hold)
    if entry[1]:
        return
    _unlock(key)


def _unlock(key: str) -> None:
    fd, _, lock = _HELD.pop(key)
    try:
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                os.unlink(lock)  # still locked: whoever opened it meanwhile sees it vanish
    finally:
        os.close(fd)


@contextlib.contextmanager
def locks_released_after():
    """Give back, when the block ends however it ends, every lock first taken inside it.

    A command's locks must not outlive it, and an error's traceback can keep the
    :class:`Run` that holds one alive until the garbage collector runs (in a process that goes
    on, such as a comparison that trains several models)."""
    before = set(_HELD)
    try:
        yield
    finally:
        for key in [k for k in _HELD if k not in before]:
            _unlock(key)


def check_unlocked(folder: str | os.PathLike) -> None:
    """Raise :class:`~probgen.errors.RunLockedError` if another process holds the write lock
    of ``folder``; take nothing and change nothing. A quick check before slow work: only
    :func:`acquire_lock` makes a process the writer."""
    folder = Path(folder)
    lock = folder / LOCK_NAME
    if os.path.realpath(folder) in _HELD:
        return
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:  # no lock file (or none we may read): nobody holds it, or the writer decides
        return
    try:
        if not _try_flock(fd, shared=True):
            raise _locked_error(folder, _read_lock_info(fd))
    finally:
        os.close(fd)  # drops the shared lock taken to look


# ----------------------------------------------------------------------------- runs
class Run:
    """A run folder: config, metrics log, checkpoints and figures.

    Use :meth:`Run.create` to start (or resume) a training run and :meth:`Run.open` to
    read one back for evaluation or sampling.
    """

    def __init__(self, path: str | os.PathLike, config: dict, *, writer: bool = True):
        self.path = Path(path)
        self.config = config
        self.stop: StopControl | None = None
        # Across processes only rank 0 writes: the others hold a Run with writer=False, whose
        # log, write_json and save_checkpoint do nothing (they read the same folder).
        self.writer = writer
        self._lock: weakref.finalize | None = None
        self._checkpoint_step: int | None = None  # the step of the last checkpoint written here
        # a resumed run's config.json is rewritten with its first write, so that a resume
        # refused after Run.create (other data, say) leaves the folder as it was
        self._config_pending = False

    def should_stop(self) -> bool:
        """True once training should checkpoint and return (a signal, or the time budget).

        Across processes the answer is the same on all of them (true when any process
        says so), so that they stop at the same step.
        """
        from probgen import distributed as pdist

        return pdist.any_true(self.stop is not None and self.stop.reason is not None)

    # -- locations
    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "latest.pt"

    @property
    def figures_dir(self) -> Path:
        d = self.path / "figures"
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    # -- construction
    @classmethod
    def create(cls, path, config: dict, *, resume: bool = False, overwrite: bool = False) -> Run:
        """Start a run in ``path``, or continue the one there with ``resume=True``.

        A folder that already holds a run is refused unless ``resume`` (continue it; the
        model and data must match) or ``overwrite`` (delete its files first) is given. The
        returned run holds the folder's write lock (see :meth:`lock`); a folder another
        process writes is refused with :class:`~probgen.errors.RunLockedError` before
        anything in it is read or changed.
        """
        path = Path(path)
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite exclude each other: pick one.")
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--out {path} is a file, not a folder. Choose a folder for the run.")
        if resume and not (path / "config.json").exists():
            raise ConfigError(f"--resume was given, but {path} holds no run (no config.json).")
        try:
            path.mkdir(parents=True, exist_ok=True)
            hold = acquire_lock(path)  # before anything in the folder is read or changed
        except OSError as e:
            raise ConfigError(
                f"cannot write to the run folder {path}: {e.strerror or e}. "
                "Choose a folder you can write to with --out."
            ) from e
        try:
            run = cls._create_locked(path, config, resume=resume, overwrite=overwrite)
        except BaseException:
            release_lock(path, hold)
            raise
        run._lock = weakref.finalize(run, release_lock, str(path), hold)
        return run

    @classmethod
    def _create_locked(cls, path: Path, config: dict, *, resume: bool, overwrite: bool) -> Run:
        cfg_file = path / "config.json"
        config = {**config, **_elastic_record()}
        if cfg_file.exists():
            if resume:
                old = _read_json(cfg_file, "run config")
                for key in ("model", "data"):
                    if old.get(key) != config.get(key):
                        raise ConfigError(
                            f"cannot resume {path}: it holds a run with {key}={old.get(key)!r}, "
                            f"but {key}={config.get(key)!r} was asked for. Resume with the "
                            "same options, or choose another --out."
                        )
                run = cls(path, _resumed_config(old, config))
                run._config_pending = True
                return run
            if not overwrite and not _never_started(path):
                raise ConfigError(
                    f"{path} already holds a run (model={_peek_model(cfg_file)!r}). "
                    "Pass --resume to continue it, --overwrite to replace it, or choose another --out."
                )
            for name in _RUN_FILES:
                p = path / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        elif resume:
            raise ConfigError(f"--resume was given, but {path} holds no run (no config.json).")
        try:
            (path / "checkpoints").mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise ConfigError(
                f"cannot write to the run folder {path}: {e.strerror or e}. "
                "Choose a folder you can write to with --out."
            ) from e
        run = cls(path, config)
        run._write_config()
        return run

    @classmethod
    def open(cls, path, *, writer: bool = True, lock: bool = False,
             resumed_with: dict | None = None) -> Run:
        """Open an existing run folder for reading (evaluation, sampling); ``writer=False``
        makes every write a no-op (the processes other than rank 0 of a distributed run).
        ``lock=True`` takes the folder's write lock first (see :meth:`lock`): for a command
        that writes into the folder, such as ``probgen eval``. ``resumed_with``: the config
        of a command that resumes the run, as :meth:`create` merges it (for the processes
        that read a run which rank 0 resumes)."""
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            raise ConfigError(
                f"{path} is not a run folder (no config.json). Give the --out folder of a "
                "`probgen train` run."
            )
        if lock:
            hold = acquire_lock(path)
            try:
                run = cls(path, _read_json(cfg_file, "run config"), writer=writer)
            except BaseException:
                release_lock(path, hold)
                raise
            run._lock = weakref.finalize(run, release_lock, str(path), hold)
            return run
        config = _read_json(cfg_file, "run config")
        if resumed_with is not None:
            config = _resumed_config(config, resumed_with)
        return cls(path, config, writer=writer)

    # -- the write lock
    def lock(self) -> Run:
        """Hold the folder's write lock (see :func:`acquire_lock`) until :meth:`unlock`, until
        this object is garbage-collected, or until the process ends; returns ``self``.
        Raises :class:`~probgen.errors.RunLockedError` when another process holds it."""
        if not self.locked:
            hold = acquire_lock(self.path)
            self._lock = weakref.finalize(self, release_lock, str(self.path), hold)
        return self

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock()

    @property
    def locked(self) -> bool:
        """Whether this object holds the folder's write lock."""
        if self._lock is None or not self._lock.alive:
            return False
        entry = _HELD.get(os.path.realpath(self.path))
        return entry is not None and self._lock.peek()[2][1] in entry[1]  # (obj, fn, (path, hold), {})

    def _write_config(self) -> None:
        if self.writer:
            self._write(self.path / "config.json", (json.dumps(self.config, indent=2) + "\n").encode(),
                        "free some space (or make the folder writable) and run the command again.")

    def _write(self, path: Path, data: bytes, advice: str | None = None) -> None:
        """Atomically write a file of the run; a failed write is a clear
        :class:`~probgen.errors.WriteError` that leaves the previous file intact."""
        self._flush_config()
        try:
            atomic_write_bytes(path, data)
        except WriteError as e:
            cause = e.__cause__ if isinstance(e.__cause__, OSError) else e
            raise self._write_failed(path, cause, advice) from cause

    def _flush_config(self) -> None:
        if self._config_pending and self.writer:
            self._config_pending = False
            self._write_config()

    def _write_failed(self, path: Path, e: OSError, advice: str | None = None) -> WriteError:
        if advice is None:
            if self._checkpoint_step is not None:
                last = f"The last good checkpoint is {self.checkpoint_path} (step {self._checkpoint_step})"
            elif self.checkpoint_path.exists():
                last = f"The last good checkpoint is {self.checkpoint_path}"
            else:
                last = "No checkpoint was written before it"
            advice = (f"{last}. Free some space (or make the folder writable) and continue with "
                      "--resume." if "checkpoint is" in last else
                      f"{last}: free some space (or make the folder writable) and start again.")
        return write_error(path, e, advice)

    # -- metrics
    def log(self, step: int, **values) -> None:
        """Append one JSON line ``{"step": step, **values}`` to metrics.jsonl."""
        if not self.writer:
            return
        rec = {"step": int(step), **{k: _plain(v) for k, v in values.items()}}
        self._flush_config()
        try:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        except OSError as e:  # a cut line is skipped when the log is read back
            raise self._write_failed(self.metrics_path, e) from e

    def metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill: skip it
                    continue
        return out

    def truncate_metrics(self, step: int) -> None:
        """Drop logged lines past ``step`` (they were written after the checkpoint resumed from)."""
        if not self.writer:
            return
        kept = [m for m in self.metrics() if m.get("step", 0) <= step]
        self._write(self.metrics_path, "".join(json.dumps(m) + "\n" for m in kept).encode())

    def write_json(self, name: str, obj: Any) -> Path:
        """Atomically write ``RUN_DIR/name``; a failed write (disk full, ...) raises
        :class:`~probgen.errors.WriteError` and leaves the previous file intact."""
        p = self.path / name
        if not self.writer:
            return p
        self._write(p, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode(),
                    "free some space (or make the folder writable) and run the command again."
                    if name != "train.json" else None)
        return p

    # -- checkpoints
    def save_checkpoint(self, state: dict, *, step: int, rng: bool = True) -> Path:
        """Atomically write ``state`` (tensors and plain containers) with the step and RNG state."""
        if not self.writer:
            return self.checkpoint_path
        import io

        import torch

        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": self.config.get("model"),
            "step": int(step),
            "state": state,
        }
        if rng:
            payload["rng"] = get_rng_state()
        buf = io.BytesIO()
        torch.save(payload, buf)
        try:
            self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._write_failed(self.checkpoint_path, e) from e
        self._write(self.checkpoint_path, buf.getvalue())
        self._checkpoint_step = int(step)
        return self.checkpoint_path

    # -- the data it was trained on
    def check_data(self, data, *, allow_changed: bool = False, action: str = "eval") -> list[str]:
        """Check that ``data`` (a :class:`~probgen.data.Dataset`) are the data this run
        was trained on, by the fingerprint in config.json (:func:`probgen.data.data_fingerprint`).

        Returns the differences, as sentences (``[]`` when there are none). With differences,
        raises :class:`~probgen.errors.DataChangedError` saying what changed, unless
        ``allow_changed``: then the differences are recorded in config.json under
        ``data_changes`` (with ``action``, e.g. ``"train"`` or ``"eval"``) when this object holds
        the folder's lock, and a run that trains on (``action="train"``) takes the new
        fingerprint. A run that recorded no fingerprint (an older probgen) gets this one
        recorded when it trains, and is not checked.
        """
        from probgen.data import data_fingerprint, fingerprint_changes

        new = data_fingerprint(data)
        old = self.config.get("data_fingerprint")
        training = action == "train"
        changes = [] if old is None else fingerprint_changes(old, new)
        if changes and not allow_changed:
            doing = ("Resuming would continue training on other data" if training else
                     f"{action.capitalize()} would score the model on other data than it was trained on")
            raise DataChangedError(
                f"the data behind the run {self.path} changed since it was trained: "
                f"{'; '.join(changes)}. {doing}. Give it the data it was trained on (config.json "
                "records their fingerprint), or pass --allow-changed-data to go on anyway (the "
                "run records it)."
            )
        if changes:
            self.config.setdefault("data_changes", []).append(
                {"at": _now(), "action": action, "changes": changes})
        if training and (changes or old is None):
            self.config["data_fingerprint"] = new
        if (changes or (training and old is None)) and self.locked:
            self._write_config()
        return changes

    # -- completion
    def mark_completed(self, budget: dict, *, stopped_by: str | None = None) -> None:
        """Record in config.json that training ended by its own budget (not by a signal, an
        error or a kill): ``budget`` is what it was given (epochs, steps, time budget, ...),
        ``stopped_by`` what ended it (``None``: its schedule ran to the end)."""
        self.config["completed"] = {"budget": {k: v for k, v in budget.items() if v is not None},
                                    "stopped_by": stopped_by or "its schedule ran to the end",
                                    "step": self._checkpoint_step, "at": _now()}
        self._write_config()

    @property
    def is_completed(self) -> bool:
        """True when training ended by its own budget (see :meth:`mark_completed`); a run
        stopped by a signal, an error or a kill, or resumed since, is not completed."""
        return bool(self.config.get("completed"))

    def resume_argv(self) -> list[str]:
        """The ``probgen`` arguments that continue this run: its last training command, with
        ``--resume`` (and as many processes as it ran in)."""
        argv = self.config.get("argv")
        if not argv:
            raise ConfigError(
                f"{self.path} records no training command (it was written by an older probgen): "
                f"continue it by hand with `probgen train {self.config.get('model')} ... --out "
                f"{self.path} --resume`."
            )
        out, skip = [], False
        for a in argv:
            if skip:
                skip = False
            elif a in ("--out", "--nproc"):
                skip = True
            elif a not in ("--resume", "--overwrite") and not a.startswith(("--out=", "--nproc=")):
                out.append(a)
        out += ["--out", str(self.path), "--resume"]
        if int(self.config.get("world_size", 1)) > 1:
            out += ["--nproc", str(self.config["world_size"])]
        return out

    def load_checkpoint(self, *, map_location="cpu", required: bool = False,
                        restore_rng: bool = False) -> dict | None:
        """Load the latest checkpoint, or ``None`` if there is none (error if ``required``)."""
        if not self.checkpoint_path.exists():
            if required:
                raise CheckpointError(
                    f"{self.path} has no checkpoint ({self.checkpoint_path} is missing): the run "
                    "did not reach its first checkpoint. Train it first, or resume it."
                )
            return None
        payload = load_checkpoint_file(
            self.checkpoint_path, map_location=map_location, expected_model=self.config.get("model")
        )
        if restore_rng and "rng" in payload:
            set_rng_state(payload["rng"])
        return payload


def load_checkpoint_file(path, *, map_location="cpu", expected_model: str | None = None) -> dict:
    """Load a probgen checkpoint safely (``weights_only=True``) and check what it holds."""
    import pickle
    import warnings

    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # a foreign file's pickle protocol is not worth a warning: it is refused below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refused to load {path}: it holds objects other than tensors and plain containers "
            f"(torch.load(weights_only=True) said: {str(e).splitlines()[0]}). probgen never loads "
            "checkpoints with weights_only=False; a file like this can run code when unpickled."
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated or corrupt ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'}). Delete it and resume from an "
            "earlier copy, or retrain."
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a probgen checkpoint (no '{CHECKPOINT_FORMAT}' marker).")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} was written by checkpoint format version {payload.get('version')!r}; this "
            f"probgen reads version {CHECKPOINT_VERSION}. Retrain, or load it with the probgen that wrote it."
        )
    if expected_model is not None and payload.get("model") != expected_model:
        raise CheckpointError(
            f"{path} holds a {payload.get('model')!r} model, but the run is a {expected_model!r} run."
        )
    return payload


def reuse_decision(path, argv: list[str] | None = None) -> tuple[str, str]:
    """What a comparison does with the run folder ``path``: ``("reuse", why)`` when it holds a
    completed run (trained by ``argv``, when given: the same command but for --overwrite and
    --resume), ``("resume", why)`` when it holds a run that did not complete but has a
    checkpoint, ``("train", why)`` otherwise. ``why`` is a sentence for the user."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        return "train", f"{path} holds no run yet"
    cfg = _read_json(cfg_file, "run config")
    if argv is not None and _command_key(cfg.get("argv")) != _command_key(argv):
        return "train", f"the run in {path} was trained by another command"
    done = cfg.get("completed")
    if done:
        budget = ", ".join(f"{k}={v}" for k, v in done.get("budget", {}).items()) or "its defaults"
        return "reuse", f"the run in {path} completed ({budget}; ended by {done.get('stopped_by')})"
    if (path / "checkpoints" / "latest.pt").exists():
        return "resume", f"the run in {path} did not complete (it was stopped, failed or killed)"
    return "train", f"the run in {path} did not complete and has no checkpoint"


def _resumed_config(old: dict, new: dict) -> dict:
    """The config of a resumed run: its own, with the latest command's budget and launch, and
    the options it changes on purpose (``new["_resume_changes"]``: the learning rate, the NaN
    policy, which :func:`probgen.training.resume_changes` allows), and no longer complete."""
    keys = set(_RESUME_UPDATES) | set(new.get("_resume_changes", ()))
    merged = {**old, **{k: v for k, v in {**new, **_elastic_record()}.items() if k in keys}}
    merged.pop("completed", None)
    merged.pop("_resume_changes", None)
    return merged


def _command_key(argv) -> list[str] | None:
    return None if argv is None else [a for a in argv if a not in ("--overwrite", "--resume")]


def elastic_restart(path) -> bool:
    """True in a worker that torchrun's elastic agent started again after a worker of the same
    job failed, once the job has created its run in ``path``: the worker then continues from
    the run's last checkpoint, as ``--resume`` would."""
    count = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    cfg_file = Path(path) / "config.json"
    if count < 1 or not run_id or not cfg_file.exists():
        return False
    try:
        return json.loads(cfg_file.read_text()).get("elastic_run_id") == run_id
    except (OSError, json.JSONDecodeError):
        return False


def _elastic_record() -> dict:
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return {"elastic_run_id": run_id} if run_id else {}


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _never_started(path: Path) -> bool:
    """True when ``path`` holds only what :meth:`Run.create` writes before training starts
    (config.json and an empty checkpoints/ folder): a start refused for its data or options.
    Such a folder holds nothing to lose, and the corrected command may take it over."""
    for p in path.iterdir():
        if p.name in ("config.json", LOCK_NAME) and p.is_file():
            continue
        if p.name in ("checkpoints", "figures") and p.is_dir() and not any(p.iterdir()):
            continue
        return False
    return True


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"the {what} {path} is not valid JSON ({e}).") from e


def _peek_model(cfg_file: Path) -> str | None:
    try:
        return json.loads(cfg_file.read_text()).get("model")
    except (OSError, json.JSONDecodeError):
        return None


def _plain(v):
    """Turn tensors and NumPy scalars into JSON numbers."""
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        return v.item()
    return v
