"""``probgen train ppca``: probabilistic PCA, in closed form or by SVI.

    probgen train ppca --data digits --latent-dim 10 [--fit closed-form|svi] [--guide full|diagonal]

``closed-form`` (default) is the maximum-likelihood solution of Tipping & Bishop (1999,
eq. 7-8) from one eigen-decomposition of the sample covariance, with the guide set to the
exact posterior (``full``) or its best mean-field approximation (``diagonal``). ``svi``
fits the same Pyro model/guide by stochastic variational inference. Either way the model
has an exact ``log_prob``, so ``probgen eval`` reports ``log_likelihood`` beside ``elbo``
and ``iwae_K``: the gaps are the bounds' true slack.
"""

from __future__ import annotations

from probgen.checks import positive_float, positive_int
from probgen.recipes import RecipeConfig, default_epochs_words, option

HELP = "probabilistic PCA (exact likelihood; closed form or SVI)"
TRAINS_BY = "epochs"  # with --fit svi; the closed form is one epoch
QUICK = True          # the closed form is one eigen-decomposition
LIST_ORDER = 30
SMOKE = {"data": "digits", "limit": 200, "latent_dim": 3, "fit": "svi", "batch_size": 50}
DEFAULT_LATENT_DIM = 10
DEFAULT_EPOCHS = 20  # of --fit svi, or as many as probgen.recipes.MIN_DEFAULT_STEPS take on less data


class Config(RecipeConfig):
    latent_dim: int | None = option(
        None, "size of z (default: 10, or one less than the data's dimension where that is smaller)",
        type=positive_int)
    fit: str = option("closed-form", "maximum likelihood in closed form (default) or SVI on the ELBO",
                      choices=("closed-form", "svi"))
    guide: str = option("full", "covariance of q(z|x) (default full: can equal the posterior)",
                        choices=("full", "diagonal"))
    epochs: int | None = option(None, "SVI " + default_epochs_words(DEFAULT_EPOCHS),
                                type=positive_int)
    batch_size: int = option(100, "SVI examples per step (default %(default)s)", type=positive_int)
    lr: float = option(1e-2, "SVI Adam learning rate (default %(default)s)", type=positive_float)


def defaults_for_data(options: dict, kind: str, shape) -> dict:
    """``latent_dim`` where unset: 10, below the data's dimension (PPCA needs L < D)."""
    import math

    from probgen.errors import ConfigError

    dim = math.prod(shape)
    if dim < 2:
        raise ConfigError(
            f"ppca needs data of at least 2 dimensions (its latent size must be below the data's "
            f"dimension), and this {kind} data has {dim}. Leave ppca out; gmm or flow give a "
            f"density of 1-D data.")
    if options.get("latent_dim") is not None:
        return {}
    options["latent_dim"] = max(1, min(DEFAULT_LATENT_DIM, dim - 1))
    if options["latent_dim"] == DEFAULT_LATENT_DIM:
        return {}
    return {"latent_dim": {"value": options["latent_dim"],
                           "why": f"one less than the data's {dim} dimensions"}}


def data_options(args) -> dict:
    # images as 8-bit values dequantized: a density of raw grey values is not a likelihood
    return {"binarize": "none", "dequantize": "auto"}


def build(config: dict, data):
    from probgen.models.ppca import PPCA

    c = Config.read(config)
    return PPCA(data.shape, DEFAULT_LATENT_DIM if c.latent_dim is None else c.latent_dim, guide=c.guide)


def _mean_log_prob(model, data, split: str, batch_size: int = 2000) -> float | None:
    """Mean log-likelihood of ``split``; on dequantized data the dequantization bound from one
    seeded noise draw."""

    import torch

    x = data.draw(split, torch.Generator(device=data.device).manual_seed(1))
    if x.shape[0] == 0:
        return None
    offset = data.bound_offset
    with torch.no_grad():
        return sum(float(model.log_prob(x[i:i + batch_size]).sum())
                   for i in range(0, x.shape[0], batch_size)) / x.shape[0] + offset


def train(run, data, config, device):
    import time

    import pyro

    from probgen.inference.svi import fit_svi

    c = Config.read(config)
    pyro.clear_param_store()
    model = build(config, data).to(device)
    t0 = time.perf_counter()
    if c.fit == "closed-form":
        import torch

        # dequantized data: the closed form of one seeded draw of the noise
        model.fit(data.draw("train", torch.Generator(device=data.device).manual_seed(config.get("seed", 0))))
        run.log(1, epoch=1, train_log_likelihood=_mean_log_prob(model, data, "train"),
                val_log_likelihood=_mean_log_prob(model, data, "val"), seconds=time.perf_counter() - t0)
        run.save_checkpoint({"model": model.state_dict(), "epoch": 1}, step=1)
        from probgen.recipes import record_progress

        record_progress(run, epochs=1, steps=1, requested=1)
        return model

    n = int(data.train.shape[0])
    from probgen.recipes import epoch_checkpoint, resolve_epochs, resume_epochs

    c.epochs = resolve_epochs(run, c, n, DEFAULT_EPOCHS)
    # on dequantized data the logged ELBO is, like the validation log p(x), a bound on log P of
    # the discrete values (the training draws are densities of the values with their noise)
    offset = data.bound_offset

    start_epoch, start_step, optim_state, resumed = resume_epochs(run, model, device)
    if not resumed:
        import torch

        with torch.no_grad():
            model.generative.mean.copy_(data.draw("train").reshape(n, -1).mean(0))

    def log_epoch(st) -> bool:
        import torch

        with torch.no_grad():
            val = _mean_log_prob(model, data, "val")
        train_elbo = -st.epoch_loss / n + offset
        run.log(st.step, epoch=st.epoch, train_elbo=train_elbo, val_log_likelihood=val,
                seconds=time.perf_counter() - t0)
        print(f"epoch {st.epoch:4d}  train ELBO {train_elbo:10.3f}  val log p(x) "
              f"{'--' if val is None else f'{val:.3f}'}", flush=True)
        return run.should_stop()

    if start_epoch < c.epochs:
        fit_svi(model.model, model.guide, data, model_kwargs={"num_data": n}, epochs=c.epochs,
                batch_size=c.batch_size, lr=c.lr,
                callbacks=[log_epoch], checkpoint=epoch_checkpoint(run, model), start_epoch=start_epoch,
                start_step=start_step, optim_state=optim_state,
                progress=getattr(run, "progress", run.writer), seed=config.get("seed", 0))
    model.fitted_ = True
    return model


def load(run, data, device):
    from probgen.recipes import load_model_state

    model = build(run.config, data).to(device)
    load_model_state(run, model, device, "a PPCA")
    model.fitted_ = True
    return model


def figures(model, data, run) -> list:
    from probgen.recipes.vae import latent_model_figures

    return latent_model_figures(model, data, run, curves={
        "nats per example": ["train_elbo", "val_log_likelihood", "train_log_likelihood"]})
