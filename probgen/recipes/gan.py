"""``probgen train gan``: a GAN fitted by alternating discriminator and generator steps.

Images (28x28 or 32x32) get the DCGAN pair and pixels in [-1, 1]; toy and vector data get
MLPs. On the user's real-valued vectors the MLPs work in the training data's standard units
(``--preprocess standardize``, the default there): the discriminator judges ``(x - m) / s``
and the generator's output u becomes ``m + s u``, so that features of any scale train alike.
Every option left unset takes the default of its data kind (:data:`DEFAULTS`), and the
resolved values are written to the run's config.json.
"""

from __future__ import annotations

from probgen.checks import positive_float, positive_int
from probgen.recipes import RecipeConfig, option

HELP = "generative adversarial network (DCGAN for images, MLPs for toy data)"
DISTRIBUTED = True  # trains under torchrun (probgen.distributed)
TRAINS_BY = "steps"
# compare keeps the default --steps; the model's share of the budget stops it earlier where
# that is shorter, and the linear decay then ends with the budget (recipes.schedule_fraction)
FILLS_BUDGET = False
LIST_ORDER = 40
SMOKE = {"data": "ring8", "limit": 256, "steps": 4, "batch_size": 64, "width": 16, "depth": 2,
         "log_every": 1, "checkpoint_every": 2, "lr_decay": "none"}

# Defaults per data kind: "image" for 28x28/32x32 images (DCGAN pair), "toy" for the toy
# densities, "vector" for the rest (MLPs: 8x8 digits, the user's arrays). The toy defaults are
# those of examples/gan_toy.py's seed sweep; the vector defaults follow them. They use the
# minimax loss: with these settings the discriminator stays near D = 1/2, where the minimax
# generator gradient does not saturate, and the non-saturating loss -- whose gradient adds a
# mode-seeking reverse KL term (Arjovsky and Bottou, 2017) -- dropped 4 to 13 of grid25's 25
# modes on 5 of 5 seeds, against 0 on 3 of 5 seeds for the minimax loss. The R1 penalty (weight
# 1; Mescheder et al. 2018) keeps the minimax recipe from dropping modes: without it grid25
# seeds 0, 2, 4 got 25, 25, 17 modes (94, 90, 73 % high-quality samples), with it 25, 25, 25
# (91, 89, 90 %); weight 0.1 got 23 on seed 4 (77 %), and PacGAN4 packing at these learning
# rates none on seed 0. It costs 9.3 ms of CPU per step against 6.8. The samples settle on the
# modes only while the learning rates decay: on grid25 seed 2, 8-12 modes and 19-22 %
# high-quality samples through the 3,000 constant steps, then 25 and 93 % by step 6,000; so the
# toy defaults run 9,000 steps (4,500 constant, 4,500 of decay). Over grid25 seeds 0-9
# (examples/gan_toy.py --seeds 10) 6,000 steps covered 25 of 25 modes on every seed with
# 89.8 +- 2.1 % high-quality samples (86.2-92.9; under 90 % on four seeds); 9,000 steps covered 25 on
# nine seeds and 24 on seed 4, with 93.9 +- 1.4 % (90.6-95.5) and reverse KL 0.005 by PacGAN's
# nearest-mode histogram (0.065 with the off-mode bin, which charges the samples between the
# modes). Starting the decay earlier within 6,000 steps did worse (seed 2: 91.5 % from step
# 1,500, 90.0 % from step 0), as did a moving average of G (--ema 0.99: 89.8 against 90.0 on
# seed 0; 0.999: 87.2 against 91.8 on seed 1) and the non-saturating loss in the decay (89.9 on
# seed 0): with the learning rates decaying to 0 the last generator is already an average.
DEFAULTS = {
    "image": dict(arch="dcgan", loss="ns", batch_size=64, lr=2e-4, lr_d=None, beta1=0.5, beta2=0.999,
                  latent_dim=64, pack=1, width=64, depth=3, norm="batch", d_steps=1,
                  lr_decay="none", steps=5000, r1=0.0, ema=0.0),
    "toy": dict(arch="mlp", loss="minimax", batch_size=256, lr=1e-3, lr_d=None, beta1=0.5, beta2=0.9,
                latent_dim=2, pack=1, width=128, depth=3, norm="none", d_steps=1,
                lr_decay="linear", steps=9000, r1=1.0, ema=0.0),
    # 28x28/32x32 images with --arch mlp: MLPs on flattened pixels. On mnist-5k, 3000 steps
    # of 3x256 MLPs collapsed onto one digit (class entropy 0); PacGAN packing of 4 kept 0.40
    # of it -- the narrow DCGAN (--width 16) reached 0.86 in 2000 steps, so prefer that.
    "image-mlp": dict(arch="mlp", loss="ns", batch_size=64, lr=2e-4, lr_d=None, beta1=0.5, beta2=0.999,
                      latent_dim=64, pack=4, width=256, depth=3, norm="none", d_steps=1,
                      lr_decay="none", steps=5000, r1=0.0, ema=0.0),
    # Other vectors (8x8 digits, the user's arrays): the toy recipe (minimax, R1, linear decay)
    # at batch 64, so that small data sets (wine's 142 examples) hold a batch. With the
    # DCGAN-style settings (ns, lr 2e-4, 3x256, no penalty) a 20 s run (as in a compare of
    # 2 minutes) collapsed on digits on seeds 0, 1, 2 (normalised class entropy 0, 0.47, 0.26;
    # coverage 0.003, 0.06, 0); with these it covered 0.66, 0.61, 0.58 with entropy 0.98-0.995,
    # Frechet 10.8-12.1 against the validation data's 12.6. Energy distance of the samples on
    # wine (seeds 0, 1): 611 and 21.7 against 1.2 and -12.3; iris 1.71, 1.50 against 0.18,
    # -0.04; breast cancer (30-D) 535 against 23.7. On a 1-D array with two far modes both
    # recipes put every sample on one mode on one seed of two.
    "vector": dict(arch="mlp", loss="minimax", batch_size=64, lr=1e-3, lr_d=None, beta1=0.5,
                   beta2=0.9, latent_dim=16, pack=1, width=128, depth=3, norm="none", d_steps=1,
                   lr_decay="linear", steps=5000, r1=1.0, ema=0.0),
}
SNAPSHOT_FRACTIONS = (0.02, 0.1, 0.3, 1.0)
# the keys of probgen.inference.adversarial.LOSSES, known without importing torch (a test
# checks that the two agree)
LOSS_NAMES = ("ns", "minimax", "hinge", "wgan-gp")


class Config(RecipeConfig):
    arch: str | None = option(
        None, "networks: dcgan (convolutional, 28x28/32x32 images only) or mlp (on flattened data) "
        "(default: dcgan for 28x28/32x32 images, else mlp)", choices=("dcgan", "mlp"))
    loss: str | None = option(None, "ns (non-saturating), minimax, hinge or wgan-gp "
                              "(default: ns for 28x28/32x32 images, else minimax)",
                              choices=LOSS_NAMES)
    steps: int | None = option(None, "generator steps (default: 9000 toy, 5000 otherwise)",
                               type=positive_int)
    batch_size: int | None = option(
        None, "real (and generated) examples per step (default: 256 toy, else 64)", type=positive_int)
    lr: float | None = option(None, "Adam learning rate of G (and D) (default: 2e-4 for "
                              "28x28/32x32 images, else 1e-3)", type=positive_float)
    lr_d: float | None = option(None, "Adam learning rate of D (default --lr)", type=positive_float)
    beta1: float | None = option(None, "Adam beta1 (default 0.5)", type=float)
    beta2: float | None = option(None, "Adam beta2 (default: 0.999 for 28x28/32x32 images, "
                                 "else 0.9)", type=float)
    latent_dim: int | None = option(None, "size of z (default: 64 images, 2 toy, 16 other vectors)",
                                    type=int)
    pack: int | None = option(None, "PacGAN packing: D judges this many samples at once (default 1)",
                              type=int)
    width: int | None = option(
        None, "first-layer channels (images, default 64) or hidden units (MLP: 256 on "
        "28x28/32x32 images, else 128)", type=int)
    depth: int | None = option(None, "hidden layers of the MLPs (default 3)", type=int)
    norm: str | None = option(
        None, "discriminator normalisation (default: batch for 28x28/32x32 images, else none)",
        choices=("batch", "spectral", "none"))
    d_steps: int | None = option(None, "discriminator steps per generator step (default 1)", type=int)
    lr_decay: str | None = option(
        None, "learning rates constant, or linearly down to 0 over the second half of --steps "
        "(of --time-budget where that stops the run sooner) (default: none for 28x28/32x32 "
        "images, else linear)",
        choices=("none", "linear"))
    r1: float | None = option(
        None, "weight gamma of the R1 penalty gamma/2 E||grad D(x)||^2 on real data "
        "(Mescheder et al. 2018; 0 for none; needs --norm none or spectral) (default: 0 for "
        "28x28/32x32 images, else 1)",
        type=float)
    preprocess: str | None = option(
        None, "standardize: the MLPs work in the training data's standard units (per-feature "
        "mean and standard deviation), none: on the values as they are (default: standardize "
        "for real-valued vectors, none for toy data and images)", choices=("standardize", "none"))
    ema: float | None = option(
        None, "decay of an exponential moving average of G's weights, sampled from instead of G "
        "(0 for none; e.g. 0.999) (default 0)", type=float)
    amp: bool = option(False, "bfloat16 autocast while training (meant for CUDA; runs, slowly, on "
                       "the CPU)")
    log_every: int = option(100, "steps between log lines", type=positive_int)
    checkpoint_every: int = option(1000, "steps between checkpoints", type=positive_int)


def data_options(args) -> dict:
    # DCGAN's tanh output: pixels in [-1, 1]. Toy data ignore the value range.
    return {"binarize": "none", "value_range": [-1.0, 1.0]}


def _kind(data) -> str:
    shape = tuple(data.shape)
    if data.kind == "image" and len(shape) == 3 and shape[1] == shape[2] and shape[1] in (28, 32):
        return "image"
    return "toy" if data.kind == "toy" else "vector"


def resolve_config(config: dict, data) -> dict:
    """Fill the options left unset with the defaults of the data kind; check them."""
    from probgen.checks import check_positive_int
    from probgen.errors import ConfigError

    out = Config.complete(config)
    kind = _kind(data)
    if kind == "image" and out.get("arch") == "mlp":
        kind = "image-mlp"
    for key, default in DEFAULTS[kind].items():
        if out.get(key) is None:
            out[key] = default
    for key in ("steps", "batch_size", "latent_dim", "pack", "width", "depth", "d_steps"):
        check_positive_int(f"--{key.replace('_', '-')}", int(out[key]))
    if out["batch_size"] % out["pack"]:
        raise ConfigError(
            f"--batch-size must be a multiple of --pack={out['pack']}; got {out['batch_size']}. "
            f"Try --batch-size {out['batch_size'] - out['batch_size'] % out['pack'] or out['pack']}."
        )
    if out.get("preprocess") is None:
        out["preprocess"] = "standardize" if data.kind == "vector" else "none"
    elif out["preprocess"] == "standardize" and data.kind == "image":
        raise ConfigError("--preprocess standardize is for vectors: images are scaled to the "
                          "generator's output range. Drop --preprocess.")
    if out["arch"] == "dcgan" and _kind(data) != "image":
        raise ConfigError(
            f"--arch dcgan needs 28x28 or 32x32 images; {config.get('data', 'the data')} has shape "
            f"{tuple(data.shape)}. Use --arch mlp."
        )
    if out["loss"] == "wgan-gp" and out["norm"] == "batch":
        raise ConfigError(
            "--loss wgan-gp needs a discriminator without BatchNorm (the gradient penalty is per "
            "example); got --norm batch. Use --norm none or --norm spectral."
        )
    if not 0.0 <= float(out["ema"]) < 1.0:
        raise ConfigError(f"--ema must be in [0, 1) (0: no moving average; 0.999 is usual); got {out['ema']}.")
    if not float(out["r1"]) >= 0:
        raise ConfigError(f"--r1 must be >= 0 (0: no R1 penalty); got {out['r1']}.")
    if float(out["r1"]) and out["norm"] == "batch":
        raise ConfigError(
            "--r1 penalises the gradient of D at each real example, which BatchNorm in the "
            "discriminator breaks (its output depends on the batch); got --norm batch. Use "
            "--norm none or --norm spectral, or --r1 0."
        )
    return out


def check(config: dict, data, device) -> None:
    """Refuse what :func:`resolve_config` refuses (options that do not fit the data or each
    other) before the run folder is written."""
    resolve_config(config, data)


def build(config: dict, data, device, processes=None):
    """The GAN model and its trainer, on ``device`` (across ``processes``, a
    :class:`~probgen.inference.loop.ProcessGroup`, when given)."""
    from probgen.inference.adversarial import GANTrainer
    from probgen.models.gan import GAN
    from probgen.models.nets import gan_networks

    value_range = data.value_range if data.kind == "image" else None
    g, d = gan_networks(data.shape, config["latent_dim"], value_range=value_range,
                        pack=config["pack"], norm=config["norm"], width=config["width"],
                        depth=config["depth"], arch=config["arch"])
    if config.get("preprocess") == "standardize":  # the same units for a resumed run, whose
        for net in (g, d):                          # checkpoint then holds the same values
            net.standardize_by(data.train.reshape(data.train.shape[0], -1))
    g, d = g.to(device), d.to(device)
    trainer = GANTrainer(g, d, latent_dim=config["latent_dim"], loss=config["loss"],
                         lr=config["lr"], lr_d=config["lr_d"],
                         betas=(config["beta1"], config["beta2"]), amp=config["amp"], r1=config["r1"],
                         ema=config.get("ema") or 0.0,
                         **({} if processes is None else {"processes": processes}))
    # samples come from the moving average of G when one is kept
    model = GAN(trainer.sampler, d, latent_dim=config["latent_dim"], data_shape=data.shape)
    return model, trainer


def snapshot_steps(steps: int, log_every: int) -> list[int]:
    """The steps at which fixed-z samples are kept for the progress figure (log steps)."""
    out = {max(log_every, round(steps * f / log_every) * log_every) for f in SNAPSHOT_FRACTIONS}
    return sorted(min(s, steps) for s in out | {steps})


def train(run, data, config, device):
    import io

    import torch

    from probgen.distributed import process_group
    from probgen.inference.adversarial import fit_gan
    from probgen.progress import write
    from probgen.recipes import record_progress, schedule_fraction
    from probgen.runs import atomic_write_bytes

    if "preprocess" not in config and run.checkpoint_path.exists():
        config = {**config, "preprocess": "none"}  # resuming a run from before --preprocess
    config = resolve_config(config, data)
    run.config = config
    run.write_json("config.json", config)
    model, trainer = build(config, data, device, process_group())

    snap_path = run.path / "snapshots.pt"
    snapshots: dict = {"z": torch.randn(512 if _kind(data) == "toy" else 64, config["latent_dim"],
                                        generator=torch.Generator().manual_seed(config["seed"]))}
    ckpt = run.load_checkpoint(map_location=device, restore_rng=True)
    if ckpt is not None:
        trainer.load_state_dict(ckpt["state"])
        run.truncate_metrics(trainer.step_count)
        if snap_path.exists():
            snapshots = torch.load(snap_path, map_location="cpu", weights_only=True)
            snapshots = {k: v for k, v in snapshots.items() if k == "z" or int(k) <= trainer.step_count}
    keep = set(snapshot_steps(config["steps"], config["log_every"]))

    def save(step):
        run.save_checkpoint(trainer.state_dict(), step=step)
        record_progress(run, steps=step)
        if not run.writer:
            return
        buf = io.BytesIO()
        torch.save(snapshots, buf)
        atomic_write_bytes(snap_path, buf.getvalue())

    def callback(step, rec):
        run.log(step, **{k: v for k, v in rec.items() if k != "step"})
        if step in keep and run.writer:
            snapshots[str(step)] = model.decode(snapshots["z"].to(device)).detach().cpu()
        if run.writer:
            write(f"step {step:6d}  loss_d {rec['loss_d']:.4f}  loss_g {rec['loss_g']:.4f}  "
                  f"D(x) {rec['d_real']:.3f}  D(G(z)) {rec['d_fake']:.3f}")

    def on_step(step):
        if step % config["checkpoint_every"] == 0 or step == config["steps"]:
            save(step)

    stop = getattr(run, "should_stop", None)
    fit_gan(trainer, data, config["steps"], batch_size=config["batch_size"], seed=config["seed"],
            d_steps=config["d_steps"],
            log_every=config["log_every"], callback=callback, should_stop=stop,
            lr_schedule=config["lr_decay"], on_step=on_step,
            # the decay ends where the run does: at its steps, or at its time budget if sooner
            schedule_fraction=lambda step: schedule_fraction(run, step, config["steps"]),
            progress=getattr(run, "progress", run.writer))
    if trainer.step_count < config["steps"]:  # stopped early: keep the last step
        save(trainer.step_count)
    return model


def load(run, data, device):
    from probgen.errors import CheckpointError

    # a run from before --preprocess trained on the values as they were
    config = resolve_config({"preprocess": "none", **run.config}, data)
    model, trainer = build(config, data, device)
    ckpt = run.load_checkpoint(map_location=device, required=True)
    try:
        trainer.load_state_dict(ckpt["state"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(
            f"the checkpoint of {run.path} does not fit a GAN built from its config.json "
            f"({type(e).__name__}: {str(e).splitlines()[0]}). Was config.json edited? Retrain."
        ) from e
    model.eval()
    return model


def figures(model, data, run):
    """Samples over training, final samples, latent interpolation and the learning curves."""
    import torch

    from probgen import plots

    paths = []
    snap_path = run.path / "snapshots.pt"
    if snap_path.exists():
        snaps = torch.load(snap_path, map_location="cpu", weights_only=True)
        steps = {int(k): v for k, v in snaps.items() if k != "z"}
        if steps:
            paths.append(plots.gan_progress(steps, data, run.figures_dir / "samples_over_training.png"))
    with torch.no_grad():
        x = model.sample(2500 if _kind(data) == "toy" else 100).cpu()
    paths.append(plots.samples_figure(x, data, run.figures_dir / "samples.png"))
    paths.append(plots.latent_interpolation(model, data, run.figures_dir / "latent_interpolation.png"))
    recs = run.metrics()
    if recs:
        paths.append(plots.learning_curve(recs, ["loss_d", "loss_g"], run.figures_dir / "losses.png",
                                          title="GAN losses", ylabel="loss"))
        paths.append(plots.learning_curve(recs, ["d_real", "d_fake"], run.figures_dir / "d_outputs.png",
                                          title="D(x) and D(G(z))", ylabel="mean output"))
    return paths
