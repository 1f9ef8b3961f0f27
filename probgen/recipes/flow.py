"""``probgen train flow``: a normalizing flow (Zuko) fitted by maximum likelihood through SVI.

    probgen train flow --data banana [--flow nsf|maf|realnvp] [--transforms 5] [--hidden 128,128]
        [--bins 32] [--preprocess auto|standardize|logit|none] [--epochs 40] [--batch-size 256]
        [--lr 3e-3] [--clip 0] [--keep best|last]
        (on images: --flow realnvp --transforms 10 --hidden 256 --lr 1e-3 --clip 0.001
        --epochs 50 by default)

The flow is a Pyro program with an empty guide (:class:`probgen.models.flow.Flow`), trained
by :func:`probgen.inference.svi.fit_svi` on the negative log-likelihood; the learning rate
follows a cosine from ``--lr`` to ``--lr / 100`` over ``--epochs`` (a function of the epoch,
so ``--resume`` continues it bit for bit). With ``--anneal budget`` it follows the
``--time-budget`` as well where that comes first (as a ``compare`` share does): set at each
epoch's end from the larger of the fractions of epochs and of the budget spent, so that a run
stopped by its budget has annealed; the rates then depend on the wall clock, so such a run is
not reproducible bit for bit. On images it sees dequantized 8-bit values (``(k + u) / 256``,
fresh noise every batch) through a logit with its Jacobian, and ``probgen eval`` reports the
dequantization bound on ``log P(k)`` in bits/dim (:mod:`probgen.data.dequantize`); on vector
and toy data it is the exact density of the standardised values (with the Jacobian of the
standardisation).

The run yields the parameters of the epoch with the highest validation log-likelihood
(``--keep best``, the default; ``--keep last`` for those of the last epoch): the validation
split is scored after every epoch, the best parameters so far are saved in the checkpoint
beside the last ones (which ``--resume`` continues from, so a resumed run keeps the same epoch
as an uninterrupted one), reloaded by ``probgen eval`` and ``compare``, and the kept epoch is
recorded in the run's ``kept.json``. On mnist-5k a flow over-fits its 3,500 training images
well within 50 epochs: a few held-out images get log-densities far below the rest, and the
mean with them (MAF: validation 3.64 bits/dim at its best epoch, 27, and 4.47 at epoch 50;
RealNVP, 10 layers of 512: 3.87 at epoch 22, 29.6 at epoch 39).

Defaults follow the data: a neural spline flow on vector and toy data; on images affine
coupling layers (RealNVP: 10 layers of one 256-wide hidden layer, learning rate 1e-3) with
every step's gradient rescaled to a fixed norm (``--clip 0.001``, far below the gradient norms
of 1e3 to 4e4 nats per example measured on mnist-5k: Adam then takes steps of one size, which
one bad batch cannot throw off). Measured on mnist-5k, one seed each, test bits/dim of the
best validation epoch: this default 3.45 ± 0.05 (epoch 19 of 24 in a 170 s share of
``compare``); 512 wide 3.52 ± 0.05 (epoch 22 of 39, twice the cost per epoch); at 16 epochs, 512 wide, without clipping 4.07 ± 0.02, with it
(learning rate 5e-4) 3.64 ± 0.03. A masked autoregressive flow (``--flow maf``, 5 layers of
512, the cost per epoch of 10 coupling layers of 512) reached 3.46 ± 0.09 with clipping
(epoch 23), but samples one pixel per pass (784 passes: two minutes for 500 samples on one CPU
thread, against under a second), and 5 of 500 samples of one trained without clipping came
out NaN; the coupling layers' samples all stayed finite.
"""

from __future__ import annotations

from probgen.checks import int_list, non_negative_float, positive_float, positive_int
from probgen.recipes import RecipeConfig, default_epochs, option

HELP = "normalizing flow (Zuko: neural spline, MAF or RealNVP; exact log-likelihood)"
TRAINS_BY = "epochs"
# the cosine learning rate is a function of --epochs: an unbounded count would hold it at
# --lr, so compare trains the flow for its epochs (the budget stops it where that is shorter)
FILLS_BUDGET = False
LIST_ORDER = 70
SMOKE = {"data": "banana", "limit": 300, "transforms": 2, "hidden": [16], "batch_size": 100}

FLOW_CHOICES = ("auto", "nsf", "maf", "realnvp")
# Measured with benchmarks/flow_toy_targets.py: with 16 bins grid25 seed 1 stayed 0.117 nats
# from its true test log-likelihood at 40 and at 80 epochs (a flow spends mass on bridges
# between the 25 sharp modes; finer splines narrow them); with 32 bins and 40 epochs every
# run measured came within its target (ring8 and grid25 seeds 0-2, banana and checkerboard
# seed 0; the largest gaps 0.047 on banana and grid25).
TOY_EPOCHS = 40
# ... which is about 3,000 steps on a toy set's 20,000 examples (batches of 256): smaller data
# get as many epochs as that many steps take. On a 1-D array of 700 training values 40 epochs
# were 120 steps, and the flow put mass where no data lie (samples at -1,100 and +1,000 around
# modes at -300 and +500; energy distance 225 against 0 for real data, log-likelihood -6.95);
# 1,000 epochs (3,000 steps, 44 s) gave -5.40 and an energy distance within noise of 0.
TOY_STEPS = 3000
TOY_BINS = 32
IMAGE_CLIP = 1e-3
IMAGE_TRANSFORMS = 10
IMAGE_HIDDEN = 256
PREPROCESS_CHOICES = ("auto", "standardize", "logit", "none")
KEEP_CHOICES = ("best", "last")


class Config(RecipeConfig):
    flow: str = option("auto", "nsf (neural spline), maf or realnvp (default auto: nsf on vectors, "
                       "realnvp on images)", choices=FLOW_CHOICES)
    transforms: int | None = option(None, f"flow layers (default 5 on vectors, {IMAGE_TRANSFORMS} "
                                    "on images)", type=positive_int, metavar="N")
    hidden: list[int] | None = option(
        None, f"hidden widths of each layer's MLP (default 128,128 on vectors, {IMAGE_HIDDEN} on "
        "images)",
        type=int_list, metavar="W[,W...]")
    bins: int = option(TOY_BINS, "spline bins of nsf (default %(default)s: the 25 sharp modes of "
                       "grid25 need more than 16)", type=positive_int)
    preprocess: str = option("auto", "map before the flow, Jacobian included (default auto: logit "
                             "on dequantized images, standardize otherwise)",
                             choices=PREPROCESS_CHOICES)
    epochs: int | None = option(None, f"passes over the data (default {TOY_EPOCHS} on vectors and "
                                f"toy data, or as many as {TOY_STEPS:,} steps take on fewer "
                                "examples; 50 on images)", type=positive_int)
    batch_size: int = option(256, "examples per step (default %(default)s)", type=positive_int)
    lr: float | None = option(None, "initial Adam learning rate, annealed to lr/100 (default 3e-3 "
                              "on vectors, 1e-3 on images)", type=positive_float)
    clip: float | None = option(
        None, "largest L2 norm of the gradient of the mean loss per example (nats) before each "
        "step, 0 for none (default 0.001 on images: every step is rescaled to it; 0 on vectors)",
        type=non_negative_float, metavar="NORM")
    keep: str = option(
        "best", "which parameters the run yields: best (default: those of the epoch with the "
        "highest validation log-likelihood, kept in the checkpoint beside the last, which "
        "--resume continues from) or last", choices=KEEP_CHOICES)
    anneal: str = option(
        "epochs", "what the cosine learning rate follows: epochs (default; reproducible bit for "
        "bit) or budget (also the --time-budget spent, so that a run its budget stops has "
        "annealed; the rates then depend on the wall clock)", choices=("epochs", "budget"))


def data_options(args) -> dict:
    # images as dequantized 8-bit values; toy and vector data as they are
    return {"binarize": "none", "dequantize": "auto"}


def resolve_config(config: dict, data) -> dict:
    """Fill the options left at ``auto`` or unset from the kind of data."""
    from probgen.errors import ConfigError

    out = Config.complete(config)
    image = data.kind == "image"
    if out["flow"] == "auto":
        out["flow"] = "realnvp" if image else "nsf"
    if out.get("lr") is None:
        out["lr"] = 1e-3 if image else 3e-3
    if out.get("epochs") is None:
        if image:
            out["epochs"] = 50
        else:  # 40 epochs, or as many as TOY_STEPS steps take on smaller data
            out["epochs"] = default_epochs(data.train.shape[0], out["batch_size"], TOY_EPOCHS,
                                           min_steps=TOY_STEPS)
    if out.get("clip") is None:
        out["clip"] = IMAGE_CLIP if image else 0.0
    if out.get("transforms") is None:
        out["transforms"] = IMAGE_TRANSFORMS if image else 5
    if out.get("hidden") is None:
        out["hidden"] = [IMAGE_HIDDEN] if image else [128, 128]
    if out["preprocess"] == "auto":
        out["preprocess"] = "logit" if data.bin_width is not None and image else "standardize"
    if out["preprocess"] == "logit" and data.bin_width is None:
        raise ConfigError("--preprocess logit needs dequantized pixels in [0, 1] (image data with "
                          "--dequantize auto or on); use --preprocess standardize.")
    return out


def build(config: dict, data):
    from probgen.models.flow import Flow

    return Flow(data.shape, kind=config["flow"], transforms=config["transforms"],
                hidden=config["hidden"], bins=config["bins"], preprocess=config["preprocess"])


def lr_at(config: dict, epoch: int, time_fraction: float = 0.0) -> float:
    """The cosine from ``lr`` to ``lr / 100`` (:func:`probgen.recipes.cosine_lr`) at ``epoch``,
    or further along where the ``time_fraction`` of a time budget already spent is further: a
    run stopped by its budget has annealed by then."""
    from probgen.recipes import cosine_lr

    epochs = int(config["epochs"])
    return cosine_lr(float(config["lr"]), max(min(epoch, epochs) / epochs, float(time_fraction)))


def clipped_adam(params, *, lr: float, max_norm: float):
    """Adam whose ``step()`` first scales the gradient down to L2 norm ``max_norm`` where it
    is longer (``torch.nn.utils.clip_grad_norm_`` over all its parameters); plain Adam for
    ``max_norm`` 0. Its state dict is Adam's, so a checkpoint resumes either way."""
    import torch

    if not max_norm:
        return torch.optim.Adam(params, lr=lr)

    class ClippedAdam(torch.optim.Adam):
        def step(self, closure=None):
            torch.nn.utils.clip_grad_norm_([p for g in self.param_groups for p in g["params"]],
                                           max_norm)
            return super().step(closure)

    return ClippedAdam(params, lr=lr)


def val_log_likelihood(model, data, batch_size: int = 1000) -> float | None:
    """Mean log-likelihood of the validation split (on dequantized data the bound, from one
    seeded noise draw)."""

    import torch

    x = data.draw("val", torch.Generator(device=data.device).manual_seed(1))
    if x.shape[0] == 0:
        return None
    offset = data.bound_offset
    with torch.no_grad():
        total = sum(float(model.log_prob(x[i:i + batch_size]).double().sum())
                    for i in range(0, x.shape[0], batch_size))
    return total / x.shape[0] + offset


def train(run, data, config, device):
    import math
    import time

    import pyro
    import torch

    from probgen.inference.svi import fit_svi
    from probgen.recipes import epoch_checkpoint, resume_epochs, schedule_fraction

    config = resolve_config(config, data)
    run.config = config
    run.write_json("config.json", config)
    pyro.clear_param_store()
    model = build(config, data).to(device)
    start_epoch, start_step, optim_state, resumed = resume_epochs(run, model, device)
    # with --keep best, the parameters of the best validation epoch so far ({} before the
    # first), saved in the checkpoint so that a resumed run keeps the same ones as an
    # uninterrupted run
    best: dict = {}
    if resumed:
        best = dict(run.load_checkpoint(map_location=device)["state"].get("best") or {})
    else:
        model.fit_preprocessing(data.draw("train", torch.Generator(device=data.device).manual_seed(
            int(config.get("seed", 0)))))
    n = int(data.train.shape[0])
    bits = data.representation.startswith("dequantized")
    # on dequantized data the logged log-likelihoods are bounds on log P of the discrete values
    offset = data.bound_offset
    t0 = time.perf_counter()

    def set_lr(param_groups, epoch: int) -> None:
        # with --anneal budget the schedule also follows the time spent: by the budget's end
        # the rate has come down, wherever --epochs would have put it
        spent = schedule_fraction(run, epoch, config["epochs"],
                                  follow_budget=config.get("anneal") == "budget")
        for group in param_groups:
            group["lr"] = lr_at(config, epoch, spent)

    if optim_state:  # a resumed run follows the schedule of the --epochs and --lr it has now
        set_lr(optim_state["param_groups"], start_epoch)

    def log_epoch(st) -> bool:
        val = val_log_likelihood(model, data)
        train_ll = -st.epoch_loss / n + offset
        rec = {"epoch": st.epoch, "train_log_likelihood": train_ll, "val_log_likelihood": val,
               "lr": st.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0,
               "skipped": len(st.result.skipped)}
        if bits and val is not None:
            rec["val_bits_per_dim"] = -val / (data.dim * math.log(2))
        if config["keep"] == "best" and val is not None and math.isfinite(val) \
                and val > best.get("val_log_likelihood", -math.inf):
            best.update(epoch=st.epoch, val_log_likelihood=val,
                        model={k: v.detach().clone() for k, v in model.state_dict().items()})
        run.log(st.step, **rec)
        set_lr(st.optimizer.param_groups, st.epoch)  # the rate of the next epoch
        if run.writer:
            extra = f"  ({rec['val_bits_per_dim']:.4f} bits/dim)" if "val_bits_per_dim" in rec else ""
            val_text = "--" if val is None else f"{val:.4f}"
            print(f"epoch {st.epoch:4d}  train log p(x) {train_ll:10.4f}  val log p(x) "
                  f"{val_text}{extra}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        return run.should_stop()

    def make_optim(params):
        # the loss is the negative log-likelihood summed over the n training examples
        return clipped_adam(params, lr=lr_at(config, start_epoch), max_norm=config["clip"] * n)

    last_epoch = start_epoch
    if start_epoch < config["epochs"]:
        last_epoch = fit_svi(
            model.model, model.guide, data, model_kwargs={"num_data": n}, epochs=config["epochs"],
            batch_size=config["batch_size"], optim=make_optim, callbacks=[log_epoch],
            checkpoint=epoch_checkpoint(run, model, lambda: {"best": best} if best else {}),
            start_epoch=start_epoch, start_step=start_step, optim_state=optim_state,
            progress=getattr(run, "progress", run.writer), seed=config["seed"]).epochs
    kept = keep_parameters(model, config, best, last_epoch=last_epoch)
    run.write_json("kept.json", kept)
    if run.writer and kept["epoch"] is not None and kept["epoch"] != kept["last_epoch"]:
        print(f"kept the parameters of epoch {kept['epoch']} (best validation log p(x) "
              f"{kept['val_log_likelihood']:.4f}), not those of the last, epoch "
              f"{kept['last_epoch']}", flush=True)
    model.eval()
    return model


def keep_parameters(model, config: dict, best: dict, *, last_epoch: int) -> dict:
    """Load the best validation epoch's parameters into ``model`` (with ``keep: best`` and a
    best epoch recorded) and return the record of what was kept (the run's ``kept.json``):
    ``{"keep", "epoch", "last_epoch", "val_log_likelihood"}``, ``epoch`` the epoch whose
    parameters the model now holds: the last with ``keep: last``, None where ``keep: best``
    found no finite validation score (no validation split, or every score NaN) and the last
    parameters stay."""
    keep = config.get("keep", "best")
    use_best = keep == "best" and bool(best)
    if use_best:
        model.load_state_dict(best["model"])
    epoch = int(best["epoch"]) if use_best else (int(last_epoch) if keep == "last" else None)
    return {"keep": keep, "epoch": epoch, "last_epoch": int(last_epoch),
            "val_log_likelihood": float(best["val_log_likelihood"]) if use_best else None}


def load(run, data, device):
    from probgen.recipes import load_model_state

    config = resolve_config(run.config, data)
    model = build(config, data).to(device)
    ckpt = load_model_state(run, model, device, "a flow")
    best = ckpt["state"].get("best")
    if config["keep"] == "best" and best:  # the parameters train() returned
        model.load_state_dict(best["model"])
    model.eval()
    return model


def figures(model, data, run) -> list:
    """2-D: fitted and true density contours and samples; images and other vectors: samples;
    the learning curve."""
    import torch

    from probgen import plots

    out = []
    figs = run.figures_dir
    # images show 64 samples, and an autoregressive flow (maf) samples one pixel per pass
    n = 64 if data.kind == "image" else min(2000, max(64, data.test.shape[0]))
    with torch.no_grad():
        samples = model.sample(n).cpu()
    if data.kind != "image" and data.dim == 2:
        test = data.test.detach().cpu()
        lo, hi = float(test.min()) - 0.5, float(test.max()) + 0.5
        fns = {"flow": lambda g: model.log_prob(g.to(data.device))}
        if data.density is not None:
            fns["true density"] = lambda g: data.density.log_prob(g.to(data.test.device))
        out.append(plots.density_contours(fns, figs / "density.png", lim=(lo, hi), points=test,
                                          title=f"{model.kind} flow on {data.name}", resolution=300))
        out.append(plots.scatter_2d({"data": test, "samples": samples}, figs / "samples.png",
                                    title=f"data and {model.kind} flow samples", lim=(lo, hi)))
    elif data.kind == "image":
        out.append(plots.samples_figure(samples[:64].clamp(0, 1), data, figs / "samples.png"))
    else:  # other vectors: over the data, the first two coordinates (1-D: histograms)
        out.append(plots.samples_figure(samples, data, figs / "samples.png"))
    recs = run.metrics()
    if any("val_log_likelihood" in r for r in recs):
        out.append(plots.learning_curve(recs, ["train_log_likelihood", "val_log_likelihood"],
                                        figs / "learning_curve.png", xkey="epoch",
                                        ylabel="log-likelihood (nats per example)"))
    return out
