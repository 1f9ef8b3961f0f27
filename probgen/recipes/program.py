"""``probgen train program --model path/to/file.py:Name``: your own Pyro model/guide pair.

    probgen train program --model my_vae.py:MyVAE --data mnist-5k --out runs/mine
        [--epochs 20] [--batch-size 100] [--lr 1e-3] [--loss auto|trace|mean-field|enum]

``Name`` is a class with ``model(x)`` and ``guide(x)`` (see :mod:`probgen.programs`); it is
fitted by :func:`probgen.inference.svi.fit_svi` on the ELBO (``TraceEnum_ELBO`` when the model
marks discrete sites for enumeration). config.json records the file and its sha256, and
``eval``, ``sample`` and ``--resume`` refuse a run whose file has changed since
(``--allow-changed-model`` goes on). Checkpoints hold the program's parameters as plain
tensors, read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from probgen.checks import positive_float, positive_int
from probgen.recipes import RecipeConfig, default_epochs_words, option

HELP = "your own Pyro program: --model path/to/file.py:Name (a class with model and guide)"
TRAINS_BY = "epochs"
FILLS_BUDGET = True
LIST_ORDER = 90
SMOKE = {"data": "digits", "limit": 200, "program": "examples/vampprior_vae.py:VampPriorVAE",
         "batch_size": 50, "val_limit": 50}
DEFAULT_EPOCHS = 20  # or as many as probgen.recipes.MIN_DEFAULT_STEPS take on less data
LOSS_CHOICES = ("auto", "trace", "mean-field", "enum")


class Config(RecipeConfig):
    program: str | dict | None = option(
        None, "the file and the name in it of a class with model(x) and guide(x) (or of a function "
        "returning one)", flag="--model", metavar="FILE.py:NAME", required=True)
    epochs: int | None = option(None, default_epochs_words(DEFAULT_EPOCHS), type=positive_int)
    batch_size: int = option(100, "examples per step (default %(default)s)", type=positive_int)
    lr: float = option(1e-3, "Adam learning rate (default %(default)s)", type=positive_float)
    loss: str = option("auto", "ELBO estimator: Trace_ELBO, TraceMeanField_ELBO or TraceEnum_ELBO "
                       "(default auto: enum when the model marks a site for enumeration, else trace)",
                       choices=LOSS_CHOICES)
    num_particles: int = option(1, "samples per ELBO estimate (default %(default)s)", type=positive_int)
    on_nan: str = option("skip", "a NaN/inf loss skips its batch (default) or stops training",
                         choices=("skip", "stop"))
    val_limit: int = option(1000, "validation ELBO on the first N validation examples "
                            "(default %(default)s)", type=positive_int, metavar="N")
    allow_changed_model: bool = option(
        False, "--resume even though the program file has changed since the run began")


def _spec(config_or_args):
    from probgen.programs import parse_program_spec

    get = config_or_args.get if isinstance(config_or_args, dict) else lambda k: getattr(config_or_args, k, None)
    rec = get("program")
    if isinstance(rec, dict):
        return parse_program_spec(f"{rec['file']}:{rec['name']}")
    return parse_program_spec(rec)


def data_options(args) -> dict:
    """The program's own ``data_options`` class attribute (grey values by default)."""
    from probgen.programs import load_program, program_data_options

    spec = _spec(args)
    return {"binarize": "none", **program_data_options(load_program(spec), where=str(spec))}


def prepare_config(config: dict) -> dict:
    """Record the program as ``{"file", "name", "sha256"}`` in place of the FILE:NAME text."""
    from probgen.programs import file_sha256, load_program

    out = dict(config)
    if not isinstance(out.get("program"), dict):
        spec = _spec(out)
        load_program(spec)  # the file exists and defines the name
        out["program"] = {"file": str(spec.path), "name": spec.name, "sha256": file_sha256(spec.path)}
    return out


def _first_batch(data, n: int = 8):
    import torch

    x = data.train[:n]
    if data.binarize == "dynamic":
        x = torch.bernoulli(x, generator=torch.Generator(device=x.device).manual_seed(0))
    return x


def build(config: dict, data, *, check: bool = True):
    """The program of ``config``, with its parameters created (by one run on a few examples)."""
    from probgen.programs import build_program, check_program, load_program

    spec = _spec(config)
    program = build_program(load_program(spec), data.shape, name=spec.name, template=data.val[:1000]
                            if data.val.shape[0] else data.train[:1000])
    program.to(data.device)
    info = check_program(program, _first_batch(data), name=f"{spec.name} ({spec.path.name})")
    program.info = info
    return program


def check(config: dict, data, device) -> None:
    """Everything :func:`train` would refuse, found before a run folder is written."""
    import pyro

    from probgen.runs import seed_everything

    seed_everything(config.get("seed", 0))
    with pyro.get_param_store().scope():
        build(config, data)


def validation_elbo(program, data, *, loss, limit: int, batch_size: int = 500) -> float | None:
    import torch

    x = data.val[:limit]
    if x.shape[0] == 0:
        return None
    total = 0.0
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            total += -float(loss.loss(program.model, program.guide, x[start:start + batch_size]))
    return total / x.shape[0]


def _elbo(config: dict, info: dict):
    loss = Config.read(config).loss
    if loss == "auto":
        loss = "enum" if info["enumerate"] else "trace"
    return loss


def train(run, data, config, device):
    import time

    from probgen.inference.svi import elbo_loss, fit_svi
    from probgen.recipes import epoch_checkpoint, resolve_epochs, resume_epochs

    c = Config.read(config)
    program = build(config, data)
    loss_name = _elbo(config, program.info)
    if run.writer and c.loss == "auto":
        print(f"{program.name}: ELBO by {loss_name} (observed site {program.info['observed']!r} in "
              f"plate {program.info['plate']!r})", flush=True)
    vectorized = program.info.get("vectorized", True)
    if run.writer and not vectorized and c.num_particles > 1:
        print(f"{program.name}: its {c.num_particles} particles are drawn one run of the program at a "
              f"time, since it does not broadcast over a leading particle dimension "
              f"({program.info.get('unvectorized_why')}); reshape over the last dimensions "
              f"(x.shape[:-1] + ..., not .view(-1, ...)) to draw them at once.", flush=True)
    val_loss = elbo_loss(loss_name)
    start_epoch, start_step, optim_state, _ = resume_epochs(run, program, device)
    n = int(data.train.shape[0])
    c.epochs = resolve_epochs(run, c, n, DEFAULT_EPOCHS)
    t0 = time.perf_counter()

    def log_epoch(st) -> bool:
        val = validation_elbo(program, data, loss=val_loss, limit=c.val_limit)
        train_elbo = -st.loss_per_example  # each step's loss sums over its batch
        run.log(st.step, epoch=st.epoch, train_elbo=train_elbo, val_elbo=val,
                seconds=time.perf_counter() - t0, skipped=len(st.result.skipped))
        if run.writer:
            val_text = f"{val:.2f}" if val is not None else "--"
            print(f"epoch {st.epoch:4d}  train ELBO {train_elbo:9.2f}  val ELBO {val_text}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        return run.should_stop()

    with program.active():
        program.train()
        if start_epoch < c.epochs:
            fit_svi(program.model, program.guide, data, loss=loss_name,
                    num_particles=c.num_particles, vectorize_particles=vectorized, epochs=c.epochs,
                    batch_size=min(c.batch_size, n), lr=c.lr, on_nan=c.on_nan, callbacks=[log_epoch],
                    checkpoint=epoch_checkpoint(run, program), start_epoch=start_epoch,
                    start_step=start_step, optim_state=optim_state,
                    progress=getattr(run, "progress", run.writer),
                    seed=config["seed"])
    program.eval()
    return program


def load(run, data, device):
    from probgen.recipes import load_model_state

    program = build(run.config, data)
    load_model_state(run, program, device, f"the program {program.name}")
    program.eval()
    return program


def figures(model, data, run) -> list:
    import torch

    from probgen import plots

    out = []
    with torch.no_grad():
        s = model.sample(64)
    out.append(plots.samples_figure(s.detach().cpu().float(), data, run.figures_dir / "samples.png"))
    recs = run.metrics()
    if any("train_elbo" in r for r in recs):
        out.append(plots.learning_curve(recs, ["train_elbo", "val_elbo"], run.figures_dir / "learning_curve_elbo.png",
                                        xkey="epoch", ylabel="ELBO (nats per example)"))
    return out
