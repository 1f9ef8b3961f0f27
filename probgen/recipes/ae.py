"""``probgen train ae`` and ``probgen train dae``: plain and denoising autoencoders.

    probgen train ae  --data mnist --epochs 10 [--latent-dim 2] [--loss bce|mse]
    probgen train dae --data mnist --epochs 10 [--noise masking|gaussian] [--noise-level 0.3]

Both minimise a reconstruction loss (cross-entropy for pixels in [0, 1], squared error
otherwise) with Adam through :func:`probgen.inference.svi.fit_loss` (the NaN-safe loop of
SVI); ``dae`` corrupts the inputs in training (masking noise unless ``--noise`` says
otherwise). After training a Gaussian is fitted to the training codes, so ``probgen sample``
decodes draws from it. The figures show reconstructions and the code space (2-D directly,
else its first two principal components) coloured by label.
"""

from __future__ import annotations

HELP = "autoencoder (ae) / denoising autoencoder (dae): reconstructions and a code space"


def add_arguments(parser) -> None:
    from probgen.recipes import positive_float, positive_int
    from probgen.recipes.vae import _ints

    parser.add_argument("--epochs", type=positive_int, default=10, help="passes over the training set (default 10)")
    parser.add_argument("--latent-dim", type=int, default=2, help="code size (default 2: a planar embedding)")
    parser.add_argument("--hidden", type=_ints, default=None,
                        help="hidden widths, comma-separated (default: 400 for mlp, 256 for conv)")
    parser.add_argument("--arch", choices=["mlp", "conv"], default="mlp")
    parser.add_argument("--activation", choices=["softplus", "relu", "elu", "tanh"], default="relu",
                        help="hidden activation (default relu)")
    parser.add_argument("--loss", choices=["bce", "mse"], default=None,
                        help="reconstruction loss (default: bce for pixels in [0, 1], else mse)")
    parser.add_argument("--noise", choices=["none", "gaussian", "masking"], default=None,
                        help="input corruption in training (default: none for ae, masking for dae)")
    parser.add_argument("--noise-level", type=float, default=0.3,
                        help="masking probability or Gaussian standard deviation (default 0.3)")
    parser.add_argument("--batch-size", type=positive_int, default=100, help="examples per step (default 100)")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--on-nan", choices=["skip", "stop"], default="skip")


def data_options(args) -> dict:
    return {"binarize": "none"}


def resolve(config: dict, data) -> dict:
    out = dict(config)
    if out.get("noise") is None:
        out["noise"] = "masking" if out.get("model") == "dae" else "none"
    if out.get("loss") is None:
        lo, hi = data.value_range
        in_unit = lo >= 0 and hi <= 1 and float(data.train.min()) >= 0 and float(data.train.max()) <= 1
        out["loss"] = "bce" if in_unit else "mse"
    return out


def build(config: dict, data):
    from probgen.models.autoencoder import Autoencoder

    c = resolve(config, data)
    return Autoencoder(data.shape, c.get("latent_dim", 2), c.get("hidden"), arch=c.get("arch", "mlp"),
                       activation=c.get("activation"), loss=c["loss"], noise=c["noise"],
                       noise_level=c.get("noise_level", 0.3))


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

    config = resolve(config, data)
    run.config = config
    run.write_json("config.json", config)
    model = build(config, data).to(device)
    from probgen.recipes import epoch_checkpoint, resume_epochs

    start_epoch, start_step, optim_state, _ = resume_epochs(run, model, device)
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

    model.train()
    if start_epoch < config["epochs"]:
        fit_loss(model.loss, list(model.parameters()), data, epochs=config["epochs"],
                 batch_size=config.get("batch_size", 100), lr=config.get("lr", 1e-3),
                 on_nan=config.get("on_nan", "skip"), callbacks=[log_epoch], checkpoint=epoch_checkpoint(run, model),
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
