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

HELP = "probabilistic PCA (exact likelihood; closed form or SVI)"


def add_arguments(parser) -> None:
    from probgen.recipes import positive_float, positive_int

    parser.add_argument("--latent-dim", type=int, default=None,
                        help="size of z (default: 10, or one less than the data's dimension "
                             "where that is smaller)")
    parser.add_argument("--fit", choices=["closed-form", "svi"], default="closed-form",
                        help="maximum likelihood in closed form (default) or SVI on the ELBO")
    parser.add_argument("--guide", choices=["full", "diagonal"], default="full",
                        help="covariance of q(z|x) (default full: can equal the posterior)")
    parser.add_argument("--epochs", type=positive_int, default=20, help="SVI passes over the data (default 20)")
    parser.add_argument("--batch-size", type=positive_int, default=100, help="SVI examples per step (default 100)")
    parser.add_argument("--lr", type=positive_float, default=1e-2, help="SVI Adam learning rate (default 1e-2)")


def defaults_for_data(options: dict, kind: str, shape) -> dict:
    """``latent_dim`` where unset: 10, below the data's dimension (PPCA needs L < D)."""
    import math

    if options.get("latent_dim") is not None:
        return {}
    dim = math.prod(shape)
    options["latent_dim"] = max(1, min(10, dim - 1))
    if options["latent_dim"] == 10:
        return {}
    return {"latent_dim": {"value": options["latent_dim"],
                           "why": f"one less than the data's {dim} dimensions"}}


def data_options(args) -> dict:
    # images as 8-bit values dequantized: a density of raw grey values is not a likelihood
    return {"binarize": "none", "dequantize": "auto"}


def build(config: dict, data):
    from probgen.models.ppca import PPCA

    return PPCA(data.shape, config.get("latent_dim") or 10, guide=config.get("guide", "full"))


def _mean_log_prob(model, data, split: str, batch_size: int = 2000) -> float | None:
    """Mean log-likelihood of ``split``; on dequantized data the dequantization bound from one
    seeded noise draw."""
    import math

    import torch

    x = data.draw(split, torch.Generator(device=data.device).manual_seed(1))
    if x.shape[0] == 0:
        return None
    offset = 0.0 if data.bin_width is None else data.dim * math.log(data.bin_width)
    with torch.no_grad():
        return sum(float(model.log_prob(x[i:i + batch_size]).sum())
                   for i in range(0, x.shape[0], batch_size)) / x.shape[0] + offset


def train(run, data, config, device):
    import time

    import pyro

    from probgen.inference.svi import fit_svi

    pyro.clear_param_store()
    model = build(config, data).to(device)
    t0 = time.perf_counter()
    if config.get("fit", "closed-form") == "closed-form":
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
    from probgen.recipes import epoch_checkpoint, resume_epochs

    start_epoch, start_step, optim_state, resumed = resume_epochs(run, model, device)
    if not resumed:
        import torch

        with torch.no_grad():
            model.generative.mean.copy_(data.draw("train").reshape(n, -1).mean(0))

    def log_epoch(st) -> bool:
        import torch

        with torch.no_grad():
            val = _mean_log_prob(model, data, "val")
        run.log(st.step, epoch=st.epoch, train_elbo=-st.epoch_loss / n, val_log_likelihood=val,
                seconds=time.perf_counter() - t0)
        print(f"epoch {st.epoch:4d}  train ELBO {-st.epoch_loss / n:10.3f}  val log p(x) "
              f"{'--' if val is None else f'{val:.3f}'}", flush=True)
        return run.should_stop()

    if start_epoch < config["epochs"]:
        fit_svi(model.model, model.guide, data, model_kwargs={"num_data": n}, epochs=config["epochs"],
                batch_size=config.get("batch_size", 100), lr=config.get("lr", 1e-2),
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
