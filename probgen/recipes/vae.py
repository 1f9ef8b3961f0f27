"""``probgen train vae``: a variational autoencoder fitted by SVI on the ELBO or a tighter bound.

    probgen train vae --data mnist --epochs 50 [--latent-dim 50] [--hidden 400]
        [--likelihood bernoulli|continuous-bernoulli|gaussian] [--arch mlp|conv]
        [--batch-size 100] [--lr 1e-3] [--objective elbo|iwae|dreg] [--particles K]
        [--stochastic-layers 1|2] [--preset iwae-paper]

``--objective`` picks what SVI maximises: the ELBO (Pyro's ``Trace_ELBO``, default), the
importance-weighted bound IWAE-K (Burda et al. 2016) or the same bound with the
doubly-reparametrised gradient DReG (Tucker et al. 2019), K = ``--particles``
(:mod:`probgen.inference.objectives`). ``--stochastic-layers 2`` trains the two-layer VAE of
:mod:`probgen.models.two_layer_vae` (Bernoulli pixels). ``--preset iwae-paper`` is the set-up
of Burda et al.'s Table 1: two tanh hidden layers of 200, 50 latents (with two stochastic
layers: 200-200-100 and 100-100-50), batch 20, Adam with epsilon 1e-4, and 3280 epochs in
eight stages of 3^i epochs at learning rate 1e-3 * 10^(-i/7); options given after it
override it.

A Bernoulli likelihood gets binarised pixels, resampled every batch (``--binarize dynamic``,
Burda et al. 2016's protocol); the validation split is binarised once with a fixed seed.
A Gaussian likelihood (learned or fixed ``--gaussian-scale``) gets 8-bit images dequantized,
``(k + u) / 256`` with fresh noise every batch, and is scored by the dequantization bound on
``log P(k)`` (:mod:`probgen.data.dequantize`), in bits/dim beside the other dequantized models.
On the user's real-valued vectors the Gaussian works in the training data's standard units
(``--preprocess standardize``, the default there; toy data and images keep their scale):
per-feature mean m and standard deviation s, the encoder seeing ``(x - m) / s`` and
p(x|z) = Normal(m + s mu(z), s sigma), so that features of any scale train alike and every
bound is still a density of x itself, in nats.
The discretized logistic (``--likelihood discretized-logistic``) gets the same data and gives
each pixel's level a probability, so its density is constant on each bin and the bound the
evaluation reports is its ELBO (or IWAE bound) on ``log P(k)`` itself.
Each epoch logs the training ELBO (the mean of the minibatch estimates) and the validation
ELBO to metrics.jsonl and writes a checkpoint (model, optimiser, epoch, RNG state), so
``--resume`` continues the same run.
"""

from __future__ import annotations

import argparse

from probgen.checks import int_list, positive_float, positive_int
from probgen.recipes import RecipeConfig, default_epochs_words, option

HELP = "variational autoencoder (Pyro model/guide, SVI on the ELBO, IWAE or DReG)"
DISTRIBUTED = True  # trains under torchrun (probgen.distributed)
TRAINS_BY = "epochs"
FILLS_BUDGET = True
LIST_ORDER = 10
SMOKE = {"data": "digits", "limit": 200, "latent_dim": 2, "hidden": [16], "batch_size": 50}

LIKELIHOOD_CHOICES = ("bernoulli", "continuous-bernoulli", "gaussian", "discretized-logistic")
OBJECTIVE_CHOICES = ("elbo", "iwae", "dreg")
PREPROCESS_CHOICES = ("standardize", "none")
DEFAULT_LATENT_DIM = 50  # on images; on vectors the data's dimension, at most this
DEFAULT_EPOCHS = 20  # or as many as probgen.recipes.MIN_DEFAULT_STEPS take on less data

# Burda, Grosse & Salakhutdinov (ICLR 2016), section 5: the set-up of their Table 1
IWAE_PAPER_STAGES = 8  # stage i: 3^i epochs at lr 1e-3 * 10^(-i/7)
PRESETS = {
    "iwae-paper": {"hidden": [200, 200], "latent_dim": 50, "activation": "tanh", "batch_size": 20,
                   "lr": 1e-3, "adam_eps": 1e-4, "lr_schedule": "iwae",
                   "epochs": sum(3**i for i in range(IWAE_PAPER_STAGES))},
}


def iwae_schedule_lr(epoch: int, base_lr: float = 1e-3) -> float:
    """Learning rate of (0-based) ``epoch`` in Burda et al.'s schedule: stage i (3^i epochs,
    starting at epoch (3^i - 1) / 2) runs at ``base_lr * 10^(-i/7)``; after the eighth stage
    the last rate stays."""
    i, start = 0, 0
    while i < IWAE_PAPER_STAGES - 1 and epoch >= start + 3**i:
        start += 3**i
        i += 1
    return base_lr * 10 ** (-i / 7)


class PresetAction(argparse.Action):
    """Sets the preset's values on the options still at their defaults; options that come
    after --preset on the command line override it."""

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, value)
        for key, v in PRESETS[value].items():
            if getattr(namespace, key, None) == parser.get_default(key):
                setattr(namespace, key, list(v) if isinstance(v, list) else v)


def gaussian_scale(text: str):
    """argparse type of ``--gaussian-scale``: ``learned`` (None) or a positive number."""
    if text == "learned":
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'learned' or a positive number; got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"the Gaussian pixel scale must be positive; got {text!r}")
    return v


class Config(RecipeConfig):
    epochs: int | None = option(None, default_epochs_words(DEFAULT_EPOCHS), type=positive_int)
    latent_dim: int | None = option(
        None, "size of z (default: 50 for images, the data's dimension up to 50 for vectors)",
        type=positive_int)
    hidden: list[int] | None = option(
        None, "hidden widths, comma-separated (default: 400 for mlp, 256 for conv)", type=int_list)
    arch: str = option("mlp", "encoder/decoder networks (default %(default)s)",
                       choices=("mlp", "conv"))
    activation: str | None = option(
        None, "hidden activation (default: softplus for mlp, relu for conv)",
        choices=("softplus", "relu", "elu", "tanh"))
    likelihood: str | None = option(
        None, "p(x|z): bernoulli for binarised pixels, continuous-bernoulli for grey values, "
        "gaussian or discretized-logistic (the probability of each 8-bit level) for dequantized "
        "pixels (default: bernoulli for images, gaussian for real-valued vectors)",
        choices=LIKELIHOOD_CHOICES)
    gaussian_scale: float | None = option(
        None, "pixel standard deviation of the gaussian likelihood (default: learned)",
        type=gaussian_scale, metavar="learned|S")
    preprocess: str | None = option(
        None, "standardize: the gaussian likelihood works in the training data's standard units "
        "(per-feature mean and standard deviation; the bounds stay densities of the data on its "
        "own scale), none: on the values as they are (default: standardize for your own "
        "real-valued vectors, none for toy data and images)", choices=PREPROCESS_CHOICES)
    batch_size: int = option(200, "examples per step (default %(default)s)", type=positive_int)
    lr: float = option(2e-3, "Adam learning rate (default %(default)s; the peak of the cosine "
                       "schedule)", type=positive_float)
    loss: str = option("trace", "the ELBO objective's estimator: Trace_ELBO (default) or "
                       "TraceMeanField_ELBO (analytic KL)", choices=("trace", "mean-field"))
    objective: str = option(
        "elbo", "what SVI maximises: elbo (default), iwae (the importance-weighted bound IWAE-K) "
        "or dreg (the same bound, doubly-reparametrised gradient); K = --particles",
        choices=OBJECTIVE_CHOICES)
    particles: int = option(
        1, "samples per example per step: of the ELBO estimate, or the K of IWAE-K "
        "(default %(default)s)", aliases=("--num-particles",), type=positive_int, metavar="K")
    stochastic_layers: int = option(
        1, "1: the VAE (default); 2: z1 and z2 as in Burda et al. 2016 (mlp, bernoulli only; "
        "--hidden gives the x-z1 widths)", type=int, choices=(1, 2))
    lr_schedule: str = option(
        "cosine", "cosine (default): from lr down to lr/100 over --epochs (reproducible bit for "
        "bit), or, where --time-budget sets the length (no --epochs), over the budget (the run "
        "has annealed when it stops; its rates then depend on the wall clock); constant; iwae: "
        "stages of 3^i epochs at lr * 10^(-i/7)",
        choices=("constant", "iwae", "cosine"))
    adam_eps: float = option(1e-8, "Adam's epsilon (default %(default)s; the IWAE paper used 1e-4)",
                             type=positive_float)
    preset: str | None = option(
        None, "iwae-paper: Burda et al. 2016's set-up (200-200 tanh, 50 latents, batch 20, Adam "
        "eps 1e-4, 3280 epochs on the 3^i schedule)", choices=sorted(PRESETS), action=PresetAction)
    on_nan: str = option("skip", "a NaN/inf loss skips its batch (default) or stops training",
                         choices=("skip", "stop"))
    val_limit: int | None = option(
        None, "validation ELBO on the first N validation examples (default: all)", type=positive_int,
        metavar="N")
    amp: bool = option(False, "bfloat16 autocast for the networks while training (meant for "
                       "CUDA; runs, slowly, on the CPU); every likelihood is evaluated in float32")


def defaults_for_data(options: dict, kind: str, shape) -> dict:
    """Fill ``likelihood``, ``latent_dim`` and ``preprocess`` where unset: a Bernoulli over
    binarised pixels and 50 latents for images; a Gaussian (no binarisation) and as many
    latents as dimensions, up to 50, for real-valued vectors, in the data's standard units on
    the user's own vectors. Returns what it chose."""
    import math

    from probgen.errors import ConfigError

    notes = {}
    image = kind == "image"
    if options.get("likelihood") is None:
        options["likelihood"] = "bernoulli" if image else "gaussian"
        notes["likelihood"] = {"value": options["likelihood"], "why": (
            "pixels binarised afresh every batch" if image else
            "real-valued vectors: no binarisation")}
    if options.get("latent_dim") is None:
        dim = math.prod(shape)
        options["latent_dim"] = DEFAULT_LATENT_DIM if image else min(DEFAULT_LATENT_DIM, dim)
        notes["latent_dim"] = {"value": options["latent_dim"], "why": (
            "the image default" if image else f"the data's {dim} dimension(s), at most 50")}
    if options.get("preprocess") is None:
        standardize = kind == "vector" and options["likelihood"] == "gaussian"
        options["preprocess"] = "standardize" if standardize else "none"
        if standardize:
            notes["preprocess"] = {"value": "standardize", "why": (
                "your own real-valued vectors: the networks work in standard units whatever the "
                "features' scales")}
    elif options["preprocess"] == "standardize":
        if image:
            raise ConfigError("--preprocess standardize is for vectors: images are scaled to "
                              "--value-range. Drop --preprocess.")
        if options["likelihood"] != "gaussian":
            raise ConfigError(f"--preprocess standardize works inside the gaussian likelihood; "
                              f"--likelihood is {options['likelihood']}. Use --likelihood gaussian, "
                              "or drop --preprocess.")
    return notes


def data_options(args) -> dict:
    if args.likelihood in ("bernoulli", None):
        return {"binarize": "dynamic", "value_range": [0.0, 1.0]}
    if args.likelihood == "continuous-bernoulli":
        return {"binarize": "none", "value_range": [0.0, 1.0]}
    # gaussian, discretized-logistic: images as dequantized 8-bit values, scored by the
    # dequantization bound (exactly log P(k) for the discretized logistic's p(x|z))
    return {"binarize": "none", "dequantize": "auto"}


def pixel_levels(config: dict, data) -> int | None:
    """The number of levels the discretized logistic bins (None for other likelihoods)."""
    from probgen.errors import ConfigError

    if config.get("likelihood") != "discretized-logistic":
        return None
    if data.bin_width is None or not data.levels:
        raise ConfigError(
            f"--likelihood discretized-logistic needs pixels of known levels, dequantized (8-bit "
            f"images, or images of L levels, with --dequantize auto); {data.name!r} is "
            f"{data.representation}. Use --likelihood gaussian for real values.")
    return int(data.levels)


def check(config: dict, data, device) -> None:
    """Refuse the options :func:`build` refuses before the run folder is written."""
    _check_two_layers(Config.read(config), config, data)


def _check_two_layers(c, config: dict, data) -> None:
    from probgen.errors import ConfigError

    if c.stochastic_layers != 2:
        return
    if c.arch != "mlp" or (c.likelihood or "bernoulli") != "bernoulli":
        if data.kind != "image":
            raise ConfigError(
                f"--stochastic-layers 2 models binary pixels (a Bernoulli likelihood), and "
                f"{config.get('data', 'these data')} are real-valued {data.kind} data. Use "
                "--stochastic-layers 1 (the default), whose Gaussian likelihood fits them.")
        raise ConfigError("--stochastic-layers 2 is an MLP with Bernoulli pixels: use --arch mlp "
                          "and --likelihood bernoulli (the defaults on images).")
    if c.amp:
        raise ConfigError("--amp is not offered with --stochastic-layers 2: drop --amp.")


def build(config: dict, data):
    """The VAE of ``config`` (or, with ``stochastic_layers=2``, the two-layer VAE)."""
    c = Config.read(config)
    latent = DEFAULT_LATENT_DIM if c.latent_dim is None else c.latent_dim
    _check_two_layers(c, config, data)
    if c.stochastic_layers == 2:
        from probgen.models.two_layer_vae import TwoLayerVAE

        hidden = c.hidden or [200, 200]
        upper = [100, 100] if list(hidden) == [200, 200] else [max(1, h // 2) for h in hidden]
        return TwoLayerVAE(data.shape, (2 * latent, latent), (hidden, upper),
                           activation=c.activation or "tanh")
    from probgen.models.vae import VAE

    return VAE(data.shape, latent, c.hidden, arch=c.arch, likelihood=c.likelihood or "bernoulli",
               activation=c.activation, gaussian_scale=c.gaussian_scale,
               levels=pixel_levels(config, data))


def validation_elbo(model, data, *, limit: int | None = None, batch_size: int = 1000) -> float | None:
    """Mean single-sample ELBO per example on the validation split (None if it is empty).
    Across processes each scores its share of the examples and the sums are pooled."""
    import torch

    from probgen import distributed as pdist

    x = data.val if limit is None else data.val[:limit]
    n = x.shape[0]
    if n == 0:
        return None
    dist = pdist.info()
    x = x.tensor_split(dist.world_size)[dist.rank]  # (about n / world, *shape)
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            total += model.elbo(x[start:start + batch_size], num_samples=1).total.sum().double().cpu()
    return float(pdist.all_reduce_sum(total)) / n


def train(run, data, config, device):
    import time

    import pyro
    import torch

    from probgen.distributed import process_group
    from probgen.inference.loop import adam as fused_adam
    from probgen.inference.svi import fit_svi
    from probgen.recipes import (
        UNBOUNDED_LENGTH,
        cosine_lr,
        epoch_checkpoint,
        resolve_epochs,
        resume_epochs,
        schedule_fraction,
    )

    c = Config.read(config)
    if "particles" not in config and "num_particles" in config:  # config.json of older runs
        c.particles = config["num_particles"]
    if "lr_schedule" not in config:  # a run from before the schedule: its rate was constant
        c.lr_schedule = "constant"
    pyro.clear_param_store()
    model = build(config, data).to(device)
    start_epoch, start_step, optim_state, resumed = resume_epochs(run, model, device)
    if config.get("preprocess") == "standardize" and not resumed:  # resumed: in the checkpoint
        model.standardize_by(data.train)
    n = int(data.train.shape[0])
    c.epochs = resolve_epochs(run, c, n, DEFAULT_EPOCHS)
    t0 = time.perf_counter()

    # the training loss is the negative objective: the ELBO, or IWAE-K for iwae and dreg
    train_key, train_label = (("train_elbo", "train ELBO") if c.objective == "elbo"
                              else ("train_iwae", f"train IWAE-{c.particles}"))

    def log_epoch(st) -> bool:
        val = validation_elbo(model, data, limit=c.val_limit)
        run.log(st.step, epoch=st.epoch, **{train_key: -st.epoch_loss / n}, val_elbo=val,
                seconds=time.perf_counter() - t0, skipped=len(st.result.skipped))
        val_text = f"{val:.2f}" if val is not None else "--"
        if run.writer:
            print(f"epoch {st.epoch:4d}  {train_label} {-st.epoch_loss / n:9.2f}  val ELBO {val_text}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        return run.should_stop()

    if c.amp:
        model.autocast_dtype = torch.bfloat16
    callbacks = [log_epoch]
    staged = c.lr_schedule != "constant"

    def lr_at(epoch: int) -> float:  # the rate of (0-based) epoch ``epoch``
        if c.lr_schedule == "iwae":
            return iwae_schedule_lr(epoch, c.lr)
        if c.lr_schedule == "cosine":  # over the epochs, or the budget where that is the length
            return cosine_lr(c.lr, schedule_fraction(run, epoch, c.epochs,
                                                     follow_budget=c.epochs >= UNBOUNDED_LENGTH))
        return c.lr

    if staged:
        def set_scheduled_lr(st) -> None:  # the rate of the next epoch, saved with the optimiser
            for group in st.optimizer.param_groups:
                group["lr"] = lr_at(st.epoch)

        callbacks.insert(0, set_scheduled_lr)
        if optim_state:  # a resumed run follows the schedule of the --epochs it is given now
            for group in optim_state["param_groups"]:
                group["lr"] = lr_at(start_epoch)
    default_eps = Config.options()["adam_eps"].default

    def adam(params):
        return fused_adam(params, lr=lr_at(start_epoch), eps=c.adam_eps)

    if start_epoch < c.epochs:
        fit_svi(model.model, model.guide, data, loss=c.loss, objective=c.objective,
                num_particles=c.particles, model_kwargs={"num_data": n}, epochs=c.epochs,
                batch_size=c.batch_size, lr=c.lr,
                optim=adam if c.adam_eps != default_eps or staged else None,
                on_nan=c.on_nan, callbacks=callbacks,
                checkpoint=epoch_checkpoint(run, model), start_epoch=start_epoch,
                start_step=start_step, optim_state=optim_state, progress=getattr(run, "progress", run.writer),
                seed=config["seed"], processes=process_group())
    model.autocast_dtype = None
    model.eval()
    return model


def load(run, data, device):
    from probgen.recipes import load_model_state

    model = build(run.config, data).to(device)
    load_model_state(run, model, device, "a VAE")
    model.eval()
    return model


def figures(model, data, run) -> list:
    return latent_model_figures(model, data, run, curves={
        "bound (nats per example)": ["train_elbo", "train_iwae", "val_elbo"]})


def latent_model_figures(model, data, run, *, curves: dict[str, list[str]]) -> list:
    """Samples, reconstructions, interpolations, the latent scatter and learning curves."""
    import torch

    from probgen import plots

    out = []
    d = run.figures_dir
    x = data.test[:2000]
    y = data.labels("test")
    with torch.no_grad():
        if callable(getattr(model, "sample", None)):
            s = model.sample(64, mean=True)
            out.append(plots.samples_figure(s.detach().cpu(), data, d / "samples.png"))
        if data.kind == "image":
            out.append(plots.reconstructions(x[:30], model.reconstruct(x[:30]), d / "reconstructions.png",
                                             value_range=data.value_range))
            out.append(plots.encoded_interpolation(model, x[:8], d / "interpolation.png",
                                                   value_range=data.value_range))
        codes = model.encode(x)
    out.append(plots.latent_scatter(codes, d / "latent.png", labels=None if y is None else y[:2000],
                                    title=f"test codes ({model.latent_dim}-D)"))
    recs = run.metrics()
    for ylabel, keys in curves.items():
        if any(k in r for r in recs for k in keys):
            name = keys[0].split("_", 1)[-1]
            out.append(plots.learning_curve(recs, keys, d / f"learning_curve_{name}.png", xkey="epoch",
                                            ylabel=ylabel))
    return out
