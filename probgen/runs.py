"""Run folders, checkpoints, seeds and devices.

A run folder holds everything one training run leaves behind::

    RUN_DIR/
      config.json        the options the run was started with (model, data, seed, ...)
      metrics.jsonl      one JSON object per logged step (losses, bounds, timings)
      progress.json      epochs and steps completed (written with each checkpoint)
      checkpoints/
        latest.pt        state dicts, optimizer state, step and RNG state -- nothing else
      figures/           PNG figures
      eval.json          written by ``probgen eval``

Checkpoints are written atomically (a temporary file in the same folder, flushed, fsync'd,
then ``os.replace``d over the old one), so a crash mid-write leaves the previous checkpoint
intact. They are loaded with ``torch.load(weights_only=True)``: a checkpoint that holds
anything but tensors and plain containers is refused, never executed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from probgen.errors import CheckpointError, ConfigError

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
    "StopControl",
]

CHECKPOINT_FORMAT = "probgen-checkpoint"
CHECKPOINT_VERSION = 1
_RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints", "figures", "eval.json", "progress.json")


# ----------------------------------------------------------------------------- files
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


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
def resolve_device(name: str | None = "auto"):
    """``"auto"`` -> CUDA when present, else CPU; ``"cuda"`` without a GPU is an error."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name} was asked for, but torch sees no CUDA device on this machine "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). "
                "Use --device cpu, or --device auto to take a GPU only where there is one."
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"--device must be one of cpu, cuda, cuda:N, auto; got {name!r}.")


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
        model and data must match) or ``overwrite`` (delete its files first) is given.
        """
        path = Path(path)
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite exclude each other: pick one.")
        cfg_file = path / "config.json"
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--out {path} is a file, not a folder. Choose a folder for the run.")
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
                merged = {**old, **{k: v for k, v in config.items() if k in ("epochs", "steps")}}
                run = cls(path, merged)
                atomic_write_json(cfg_file, merged)
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
        atomic_write_json(cfg_file, config)
        return cls(path, config)

    @classmethod
    def open(cls, path, *, writer: bool = True) -> Run:
        """Open an existing run folder for reading (evaluation, sampling); ``writer=False``
        makes every write a no-op (the processes other than rank 0 of a distributed run)."""
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            raise ConfigError(
                f"{path} is not a run folder (no config.json). Give the --out folder of a "
                "`probgen train` run."
            )
        return cls(path, _read_json(cfg_file, "run config"), writer=writer)

    # -- metrics
    def log(self, step: int, **values) -> None:
        """Append one JSON line ``{"step": step, **values}`` to metrics.jsonl."""
        if not self.writer:
            return
        rec = {"step": int(step), **{k: _plain(v) for k, v in values.items()}}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

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
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(m) + "\n" for m in kept).encode())

    def write_json(self, name: str, obj: Any) -> Path:
        p = self.path / name
        if not self.writer:
            return p
        atomic_write_json(p, obj)
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
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())
        return self.checkpoint_path

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


def _never_started(path: Path) -> bool:
    """True when ``path`` holds only what :meth:`Run.create` writes before training starts
    (config.json and an empty checkpoints/ folder): a start refused for its data or options.
    Such a folder holds nothing to lose, and the corrected command may take it over."""
    for p in path.iterdir():
        if p.name == "config.json" and p.is_file():
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
