"""Your own Pyro program as a probgen model: ``--model path/to/file.py:Name``.

``Name`` is a class with ``model(x)`` and ``guide(x)`` methods (optionally ``sample(n)``), an
instance of one, or a function returning one. A class that accepts a ``data_shape`` keyword
gets the per-example shape of the data. The examples live in a plate of the model (found as
the plate of the observed site, or named by a class attribute ``data_plate = "name"``), and
the representation of the data it models is a class attribute::

    class MyVAE:
        data_options = {"binarize": "dynamic"}   # Bernoulli pixels, resampled every batch
        def model(self, x): ...
        def guide(self, x): ...

(the keys of the data options a run records: ``binarize`` and ``value_range``; command-line
options override them).

:func:`load_program` imports the file and finds the name; :class:`Program` wraps what it
builds: each program has its own Pyro parameter store (``ParamStoreDict.scope``), so that two
programs that both name a parameter ``decoder$$$fc.weight`` can be trained and scored in the
same process, and it offers ``state_dict()``/``load_state_dict()`` of plain tensors for
checkpoints read with ``torch.load(weights_only=True)``. :func:`check_program` runs the
program once on a few examples and says what is missing before any training starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path

from probgen.errors import ConfigError, suggest

__all__ = ["ProgramSpec", "parse_program_spec", "is_program_spec", "load_program", "file_sha256",
           "refuse_while_importing", "program_data_options", "Program", "own_params",
           "build_program", "check_program", "check_unchanged"]

DATA_OPTION_KEYS = ("binarize", "value_range")


class ProgramSpec:
    """``path/to/file.py:Name``, split and resolved (the path made absolute)."""

    def __init__(self, path: str | Path, name: str):
        self.path = Path(path).expanduser().resolve()
        self.name = name

    def __str__(self) -> str:
        return f"{self.path}:{self.name}"


def is_program_spec(text: str) -> bool:
    """True for ``file.py:Name`` (and ``file.py``, which then lacks its name)."""
    head = str(text).split("(", 1)[0].strip()
    return head.endswith(".py") or (":" in head and head.rsplit(":", 1)[0].endswith(".py"))


def parse_program_spec(text: str) -> ProgramSpec:
    text = str(text).strip()
    if ":" not in text or not text.rsplit(":", 1)[1].strip():
        raise ConfigError(
            f"--model {text!r} names no program: give path/to/file.py:Name, where Name is the "
            "class (with model and guide) or the function that returns one."
        )
    path, name = text.rsplit(":", 1)
    if not path.endswith(".py"):
        raise ConfigError(f"--model {text!r}: the file must be a Python file (path/to/file.py:Name).")
    return ProgramSpec(path, name.strip())


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


_MODULES: dict[tuple[str, str], object] = {}
_IMPORTING: list[Path] = []  # the program files being imported, innermost last


def _main_module_object(spec: ProgramSpec):
    """The object ``spec`` names where its file is the script this process runs
    (``python my_script.py`` passing a class of its own to ``probgen.compare``): that
    script's own object, so that the file is not run a second time inside the first run."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not hasattr(main, spec.name):
        return None
    try:
        same = Path(path).resolve() == spec.path
    except OSError:
        return None
    return getattr(main, spec.name) if same else None


class NestedRunError(ConfigError):
    """A program file's top-level code started a run while probgen imported the file."""


def refuse_while_importing(what: str) -> None:
    """A :class:`ConfigError` when ``what`` (``probgen.compare``, ...) is called by a program
    file's top-level code while probgen imports that file to rebuild its model: the call
    would start a second run inside the first. Says how to guard it."""
    if _IMPORTING:
        path = _IMPORTING[-1]
        raise NestedRunError(
            f"the program file {path} calls {what} when it is imported, and probgen imports it "
            "to rebuild the model (to train, score or reload a run): that call would start a run "
            "inside this one. Put the calls of your script under `if __name__ == \"__main__\":`, "
            "or keep the model classes in a file of their own."
        )


def load_program(spec: ProgramSpec | str):
    """Import the file of ``spec`` (once per content) and return the object it names."""
    if not isinstance(spec, ProgramSpec):
        spec = parse_program_spec(spec)
    if not spec.path.is_file():
        raise ConfigError(f"the program file {spec.path} does not exist. Give path/to/file.py:Name "
                          "with a path relative to the current folder, or an absolute one.")
    own = _main_module_object(spec)
    if own is not None:
        return own
    digest = file_sha256(spec.path)
    key = (str(spec.path), digest)
    module = _MODULES.get(key)
    if module is None:
        mod_spec = importlib.util.spec_from_file_location(
            f"probgen_program_{spec.path.stem}_{digest[:12]}", spec.path)
        module = importlib.util.module_from_spec(mod_spec)
        folder = str(spec.path.parent)
        # the file may import its neighbours; they come after the installed modules, so that a
        # file named like one (glob.py, types.py) does not stand in for it while torch or pyro
        # import it
        added = folder not in sys.path
        if added:
            sys.path.append(folder)
        _IMPORTING.append(spec.path)
        try:
            mod_spec.loader.exec_module(module)
        except NestedRunError:  # said as it is: the file's own top level started a run
            raise
        except Exception as e:
            raise ConfigError(f"importing the program file {spec.path} failed: {type(e).__name__}: "
                              f"{e}. Fix the file (run `python {spec.path}` to see the traceback).") from e
        finally:
            _IMPORTING.pop()
            if added:
                with contextlib.suppress(ValueError):
                    sys.path.remove(folder)
        _MODULES[key] = module
    if not hasattr(module, spec.name):
        names = [n for n, v in vars(module).items() if not n.startswith("_")
                 and (inspect.isclass(v) or inspect.isfunction(v)) and getattr(v, "__module__", None) == module.__name__]
        raise ConfigError(
            f"{spec.path} defines no {spec.name!r}.{suggest(spec.name, names)} It defines: "
            f"{', '.join(names) or 'no classes or functions'}. Give path/to/file.py:Name with the "
            "name of the class that has model and guide (or of a function returning one)."
        )
    return getattr(module, spec.name)


def program_data_options(obj, where: str = "the program") -> dict:
    """The ``data_options`` class attribute of a program, checked (``{}`` when it has none)."""
    opts = getattr(obj, "data_options", None)
    if opts is None:
        return {}
    if not isinstance(opts, dict):
        raise ConfigError(f"{where}: data_options must be a dict such as {{'binarize': 'dynamic'}}; "
                          f"got {opts!r}.")
    out = {}
    for key, value in opts.items():
        if key not in DATA_OPTION_KEYS:
            raise ConfigError(f"{where}: data_options has an unknown key {key!r}."
                              f"{suggest(key, DATA_OPTION_KEYS)} Known keys: {', '.join(DATA_OPTION_KEYS)}.")
        if key == "binarize" and value not in ("none", "fixed", "dynamic"):
            raise ConfigError(f"{where}: data_options['binarize'] must be 'none', 'fixed' or "
                              f"'dynamic'; got {value!r}.")
        if key == "value_range":
            if value is not None:
                value = [float(v) for v in value]
                if value not in ([0.0, 1.0], [-1.0, 1.0]):
                    raise ConfigError(f"{where}: data_options['value_range'] must be (0, 1) or "
                                      f"(-1, 1); got {opts[key]!r}.")
        out[key] = value
    return out


class Program:
    """A user's model/guide pair with its own Pyro parameter store.

    ``model(x)``, ``guide(x)`` and ``sample(n)`` run the user's methods with the program's
    parameters in the param store; anything else is looked up on the user's object.
    """

    def __init__(self, obj, *, name: str = "program", template=None):
        self.program = obj
        self.name = name
        self._store_state = {"params": {}, "constraints": {}}
        self._active = False
        self.template = template  # examples whose shapes sample(n) copies when the program has no sample
        self.info: dict | None = None  # what check_program found: observed site, data plate, enumeration

    # -- the program's own parameter store
    @contextlib.contextmanager
    def active(self):
        """Inside the block the global param store is this program's."""
        if self._active:
            yield self
            return
        import pyro

        with pyro.get_param_store().scope(self._store_state):
            self._active = True
            try:
                yield self
            finally:
                self._active = False

    def model(self, *args, **kwargs):
        with self.active():
            return self.program.model(*args, **kwargs)

    def guide(self, *args, **kwargs):
        with self.active():
            return self.program.guide(*args, **kwargs)

    def __getattr__(self, name):
        if name in ("program", "_store_state", "_active", "template", "name", "info"):
            raise AttributeError(name)
        return getattr(self.program, name)

    def sample(self, n: int):
        """``n`` draws of the observed site: the program's own ``sample(n)`` where it has one,
        else the model run forwards (latents from the prior, ``poutine.uncondition``) on
        ``n`` template examples, whose values serve only for their shapes. Global latents
        that the bounds hold at the guide's mean (``global_latents = "condition"``) are held
        there too, so that the samples come from the model the likelihoods score."""
        import torch

        with self.active():
            if callable(getattr(self.program, "sample", None)):
                return self.program.sample(n)
            if self.template is None:
                raise ConfigError(f"{self.name} has no sample(n) method, and no data to copy the "
                                  "shapes of its examples from.")
            from pyro import poutine

            t = self.template
            idx = torch.arange(n, device=t.device) % t.shape[0]
            x = t[idx]
            model = poutine.uncondition(self.program.model)
            with torch.no_grad():
                if (self.info or {}).get("conditioned"):
                    from probgen.inference.program_bounds import as_program
                    from probgen.inference.program_bounds import check_program as check_structure

                    fixed = check_structure(as_program(self.program), t[:16]).conditioned
                    model = poutine.condition(model, data=fixed)
                tr = poutine.trace(model).get_trace(x)
            name = (self.info or {}).get("observed")
            if name is None or name not in tr.nodes:
                raise ConfigError(f"{self.name}: run check_program first (it finds the observed site).")
            return tr.nodes[name]["value"].detach().reshape(n, *t.shape[1:])

    # -- plain-tensor state for checkpoints
    def state_dict(self) -> dict:
        """The unconstrained values of the program's Pyro parameters, and the buffers and
        parameters of the program itself where it is a ``torch.nn.Module``."""
        import torch

        state = {"params": {k: v.detach().clone() for k, v in self._store_state["params"].items()}}
        if isinstance(self.program, torch.nn.Module):
            state["module"] = self.program.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Load :meth:`state_dict`; the parameters must have been created first (run the
        program once, e.g. by :func:`check_program`)."""
        import torch

        if isinstance(self.program, torch.nn.Module) and "module" in state:
            self.program.load_state_dict(state["module"])
        params = self._store_state["params"]
        missing = sorted(set(state["params"]) - set(params))
        if missing:
            raise KeyError(f"parameters {missing[:5]} of the checkpoint were not created by the program")
        with torch.no_grad():
            for k, v in state["params"].items():
                params[k].copy_(v)

    def to(self, device):
        import torch

        if isinstance(self.program, torch.nn.Module):
            self.program.to(device)
        return self

    def eval(self):
        if callable(getattr(self.program, "eval", None)):
            self.program.eval()
        return self

    def train(self, mode: bool = True):
        if callable(getattr(self.program, "train", None)):
            self.program.train(mode)
        return self


def own_params(model):
    """A user program's own Pyro parameters in the param store for the whole block (one
    switch instead of one per call of its model and guide); nothing for other models."""
    return model.active() if isinstance(model, Program) else contextlib.nullcontext()


def build_program(obj, data_shape, *, name: str = "program", template=None) -> Program:
    """Instantiate what ``load_program`` returned: a class or function is called (with
    ``data_shape=`` where it takes that keyword); an instance is used as it is."""
    if inspect.isclass(obj) or inspect.isfunction(obj):
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            params = {}
        kwargs = {"data_shape": tuple(data_shape)} if "data_shape" in params else {}
        try:
            made = obj(**kwargs)
        except TypeError as e:
            raise ConfigError(f"{name}: calling {getattr(obj, '__name__', obj)}({', '.join(kwargs)}) "
                              f"failed ({e}). A program class must be constructible without "
                              "arguments (or with data_shape=).") from e
    else:
        made = obj
    for method in ("model", "guide"):
        if not callable(getattr(made, method, None)):
            raise ConfigError(f"{name} has no {method}() method: a program needs model(x) and "
                              "guide(x) (and may have sample(n)).")
    return Program(made, name=name, template=template)


def observed_site(trace, x):
    """The observed site that holds the data ``x`` (its value has as many numbers as ``x``)."""
    obs = [s for s in trace.nodes.values() if s["type"] == "sample" and s["is_observed"]
           and not s["name"].startswith("_")]
    for s in obs:
        if s["value"] is x or s["value"].numel() == x.numel():
            return s
    return obs[0] if obs else None


def check_program(program: Program, x, *, name: str = "the program") -> dict:
    """Run the program once on the examples ``x`` and refuse what cannot be trained and scored.

    The structure is checked by :func:`probgen.inference.program_bounds.check_program` (an
    observed site, a data plate that holds it, every latent of the model in the guide or
    enumerated, observed values inside their distribution's support, such as grey values fed
    to a Bernoulli); beyond it, a model or guide that fails on the data is reported as such. Returns ``{"observed": site name,
    "plate": plate name, "enumerate": bool, "vectorized": bool, "unvectorized_why": str}``
    (also kept as ``program.info``; ``vectorized``: whether its particles can be drawn at once,
    :class:`probgen.inference.program_bounds.ProgramStructure`).
    """
    from pyro import poutine

    from probgen.inference.program_bounds import as_program
    from probgen.inference.program_bounds import check_program as check_structure

    n = int(x.shape[0])
    with program.active():
        try:
            guide_tr = poutine.trace(program.program.guide).get_trace(x)
        except Exception as e:
            raise ConfigError(f"{name}: guide(x) failed on a batch of {n} examples of shape "
                              f"{tuple(x.shape)}: {type(e).__name__}: {e}") from e
        try:
            model_tr = poutine.trace(poutine.replay(program.program.model, trace=guide_tr)).get_trace(x)
        except Exception as e:
            raise ConfigError(f"{name}: model(x) failed on a batch of {n} examples of shape "
                              f"{tuple(x.shape)}: {type(e).__name__}: {e}") from e
        try:
            structure = check_structure(as_program(program.program), x)
        except ConfigError as e:
            raise ConfigError(f"{name}: {e}") from e
    observed = observed_site(model_tr, x)
    program.info = {"observed": observed["name"] if observed else structure.observed[0],
                    "plate": structure.data_plate, "enumerate": bool(structure.enumerated),
                    "vectorized": structure.vectorized, "unvectorized_why": structure.unvectorized_why,
                    "conditioned": sorted(structure.conditioned)}
    return program.info


def check_unchanged(config: dict, *, allow_changed: bool = False) -> None:
    """Refuse a program run whose file is missing or has changed since it was trained."""
    rec = config.get("program") or {}
    path = Path(rec.get("file", ""))
    if not path.is_file():
        raise ConfigError(f"the program file {path} of this run is missing: restore it (the run "
                          "holds only the program's parameters, not its code).")
    now = file_sha256(path)
    if now != rec.get("sha256") and not allow_changed:
        raise ConfigError(
            f"the program file {path} has changed since this run was trained (sha256 "
            f"{str(rec.get('sha256'))[:12]}... then, {now[:12]}... now): the saved parameters may "
            "not fit the code, or mean something else. Restore the file, or pass "
            "--allow-changed-model (allow_changed_model=True) to go on with the file as it is now."
        )
