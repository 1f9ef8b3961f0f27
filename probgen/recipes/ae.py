"""``probgen train ae`` and ``probgen train dae``: plain and denoising autoencoders.

    probgen train ae  --data mnist --epochs 10 [--latent-dim 2] [--loss bce|mse]
    probgen train dae --data mnist --epochs 10 [--noise masking|gaussian] [--noise-level 0.3]

Both minimise a reconstruction loss (cross-entropy for pixels in [0, 1], squared error
otherwise; on the user's real-valued vectors in the training data's standard units,
``--preprocess standardize``) with Adam through :func:`probgen.inference.svi.fit_loss` (the
NaN-safe loop of SVI); ``dae`` corrupts the inputs in training (masking noise unless ``--noise`` says
otherwise). After training a Gaussian is fitted to the training codes, so ``probgen sample``
decodes draws from it. The figures show reconstructions and the code space (2-D directly,
else its first two principal components) coloured by label.
"""

from __future__ import annotations

from probgen.checks import int_list, positive_float, positive_int
from probgen.recipes import RecipeConfig, default_epochs_words, option

HELP = "autoencoder (ae) / denoising autoencoder (dae): reconstructions and a code space"
NAMES = ("ae", "dae")
TRAINS_BY = "epochs"
FILLS_BUDGET = True
LIST_ORDER = 20
SMOKE = {"data": "digits", "limit": 200, "hidden": [16], "batch_size": 50}
DEFAULT_EPOCHS = 10  # or as many as probgen.recipes.MIN_DEFAULT_STEPS take on less data


class Config(RecipeConfig):
    epochs: int | None = option(None, default_epochs_words(DEFAULT_EPOCHS), type=positive_int)
    latent_dim: int = option(2, "code size (default %(default)s: a planar embedding)", type=positive_int)
    hidden: list[int] | None = option(
        None, "hidden widths, comma-separated (default: 400 for mlp, 256 for conv)", type=int_list)
    arch: str = option("mlp", "encoder/decoder networks (default %(default)s)",
                       choices=("mlp", "conv"))
    activation: str = option("relu", "hidden activation (default %(default)s)",
                             choices=("softplus", "relu", "elu", "tanh"))
    loss: str | None = option(None, "reconstruction loss (default: bce for pixels in [0, 1], else mse)",
                              choices=("bce", "mse"))
    noise: str | None = option(None, "input corruption in training (default: none for ae, masking "
                               "for dae)", choices=("none", "gaussian", "masking"))
    noise_level: float = option(0.3, "masking probability or Gaussian standard deviation "
                                "(default %(default)s; in standard units with --preprocess "
                                "standardize)", type=float)
    preprocess: str | None = option(
        None, "standardize: networks, noise and loss in the training data's standard units "
        "(per-feature mean and standard deviation; squared error only), none: the values as they "
        "are (default: standardize for your own real-valued vectors, none for toy data and "
        "images)", choices=("standardize", "none"))
    batch_size: int = option(100, "examples per step (default %(default)s)", type=positive_int)
    lr: float = option(1e-3, "Adam learning rate (default %(default)s)", type=positive_float)
    on_nan: str = option("skip", "a NaN/inf loss skips its batch (default) or stops training",
                         choices=("skip", "stop"))


def data_options(args) -> dict:
    return {"binarize": "none"}


def resolve(config: dict, data) -> dict:
    out = dict(config)
    if out.get("noise") is None:
        out["noise"] = "masking" if out.get("model") == "dae" else "none"
    lo, hi = data.value_range
    in_unit = lo >= 0 and hi <= 1 and float(data.train.min()) >= 0 and float(data.train.max()) <= 1
    if out.get("loss") is None:
        out["loss"] = "bce" if in_unit else "mse"
    elif out["loss"] == "bce" and not in_unit:
        from probgen.errors import ConfigError

        raise ConfigError(
            f"--loss bce takes values in [0, 1] (a sigmoid output against targets in [0, 1]); the "
            f"training data lie in [{float(data.train.min()):.4g}, {float(data.train.max()):.4g}]. "
            "Use --loss mse (the default for such data), or scale the data to [0, 1].")
    if out.get("preprocess") is None:
        out["preprocess"] = "standardize" if data.kind == "vector" and out["loss"] == "mse" else "none"
    elif out["preprocess"] == "standardize" and (data.kind == "image" or out["loss"] != "mse"):
        from probgen.errors import ConfigError

        raise ConfigError("--preprocess standardize is for real-valued vectors with --loss mse; "
                          f"this run has {data.kind} data and --loss {out['loss']}. Drop --preprocess.")
    return out


def check(config: dict, data, device) -> None:
    """Refuse what :func:`resolve` refuses before the run folder is written."""
    resolve(config, data)


def build(config: dict, data):
    from probgen.models.autoencoder import Autoencoder

    c = Config.read(resolve(config, data))
    return Autoencoder(data.shape, c.latent_dim, c.hidden, arch=c.arch, activation=c.activation,
                       loss=c.loss, noise=c.noise, noise_level=c.noise_level)


def _val_loss(model, data, batch_size: int = 1000) -> float | None:
    import torch

    x = data.val
    if x.shape[0] == 0:
        return None
    with torch.no_grad():
        total = sum(float(model.reconstruction_error(x[i:i + batch_size]).sum())
                    for i in range(0, x.shape[0], batch_size))
    return total / x.shape[0]


def train(run, data, config, device):
    import time

    from probgen.inference.svi import fit_loss

    if "preprocess" not in config and run.checkpoint_path.exists():
        config = {**config, "preprocess": "none"}  # resuming a run from before --preprocess
    config = resolve(config, data)
    run.config = config
    run.write_json("config.json", config)
    model = build(config, data).to(device)
    from probgen.recipes import epoch_checkpoint, resolve_epochs, resume_epochs

    start_epoch, start_step, optim_state, resumed = resume_epochs(run, model, device)
    if config["preprocess"] == "standardize" and not resumed:  # resumed: in the checkpoint
        model.standardize_by(data.train)
    t0 = time.perf_counter()

    def log_epoch(st) -> bool:
        model.eval()
        val = _val_loss(model, data)
        model.train()
        run.log(st.step, epoch=st.epoch, train_loss=st.epoch_loss, val_loss=val,
                seconds=time.perf_counter() - t0)
        print(f"epoch {st.epoch:4d}  train loss {st.epoch_loss:9.3f}  val loss "
              f"{'--' if val is None else f'{val:.3f}'}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        return run.should_stop()

    c = Config.read(config)
    c.epochs = resolve_epochs(run, c, data.train.shape[0], DEFAULT_EPOCHS)
    model.train()
    if start_epoch < c.epochs:
        fit_loss(model.loss, list(model.parameters()), data, epochs=c.epochs,
                 batch_size=c.batch_size, lr=c.lr,
                 on_nan=c.on_nan, callbacks=[log_epoch], checkpoint=epoch_checkpoint(run, model),
                 start_epoch=start_epoch, start_step=start_step, optim_state=optim_state,
                 progress=getattr(run, "progress", run.writer), seed=config.get("seed", 0))
    model.eval()
    model.fit_code_distribution(data.train)
    # the code distribution is part of the fitted model: checkpoint it too
    ckpt = run.load_checkpoint(map_location=device)
    if ckpt is not None:
        state = ckpt["state"]
        state["model"] = model.state_dict()
        run.save_checkpoint(state, step=ckpt["step"])
    return model


def load(run, data, device):
    from probgen.recipes import load_model_state

    model = build(run.config, data).to(device)
    load_model_state(run, model, device, "an autoencoder")
    model.eval()
    return model


def figures(model, data, run) -> list:
    from probgen.recipes.vae import latent_model_figures

    return latent_model_figures(model, data, run,
                                curves={"reconstruction loss per example": ["train_loss", "val_loss"]})
