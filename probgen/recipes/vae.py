"""``probgen train vae``: a variational autoencoder fitted by SVI on the ELBO.

    probgen train vae --data mnist --epochs 50 [--latent-dim 50] [--hidden 400]
        [--likelihood bernoulli|continuous-bernoulli|gaussian] [--arch mlp|conv]
        [--batch-size 100] [--lr 1e-3]

A Bernoulli likelihood gets binarised pixels, resampled every batch (``--binarize dynamic``,
Burda et al. 2016's protocol); the validation split is binarised once with a fixed seed.
Each epoch logs the training ELBO (the mean of the minibatch estimates) and the validation
ELBO to metrics.jsonl and writes a checkpoint (model, optimiser, epoch, RNG state), so
``--resume`` continues the same run.
"""

from __future__ import annotations

HELP = "variational autoencoder (Pyro model/guide, SVI on the ELBO)"
DISTRIBUTED = True  # trains under torchrun (probgen.distributed)

LIKELIHOOD_CHOICES = ("bernoulli", "continuous-bernoulli", "gaussian")


def _ints(text: str) -> list[int]:
    import argparse

    try:
        out = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 400 or 512,256; got {text!r}") from None
    if not out or any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"layer widths must be positive integers; got {text!r}")
    return out


def _scale(text: str):
    import argparse

    if text == "learned":
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'learned' or a positive number; got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"the Gaussian pixel scale must be positive; got {text!r}")
    return v


def add_arguments(parser) -> None:
    from probgen.recipes import positive_float, positive_int

    parser.add_argument("--epochs", type=positive_int, default=20, help="passes over the training set (default 20)")
    parser.add_argument("--latent-dim", type=int, default=None,
                        help="size of z (default: 50 for images, the data's dimension up to 50 "
                             "for vectors)")
    parser.add_argument("--hidden", type=_ints, default=None,
                        help="hidden widths, comma-separated (default: 400 for mlp, 256 for conv)")
    parser.add_argument("--arch", choices=["mlp", "conv"], default="mlp",
                        help="encoder/decoder networks (default mlp)")
    parser.add_argument("--activation", choices=["softplus", "relu", "elu", "tanh"], default=None,
                        help="hidden activation (default: softplus for mlp, relu for conv)")
    add_likelihood_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=100, help="examples per step (default 100)")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--loss", choices=["trace", "mean-field"], default="trace",
                        help="Trace_ELBO (default) or TraceMeanField_ELBO (analytic KL)")
    parser.add_argument("--num-particles", type=int, default=1, help="samples per ELBO estimate (default 1)")
    parser.add_argument("--on-nan", choices=["skip", "stop"], default="skip",
                        help="a NaN/inf loss skips its batch (default) or stops training")
    parser.add_argument("--val-limit", type=int, default=None, metavar="N",
                        help="validation ELBO on the first N validation examples (default: all)")
    parser.add_argument("--amp", action="store_true",
                        help="bfloat16 autocast for the networks while training (meant for CUDA; "
                             "runs, slowly, on the CPU); every likelihood is evaluated in float32")


def add_likelihood_arguments(parser) -> None:
    parser.add_argument("--likelihood", choices=LIKELIHOOD_CHOICES, default=None,
                        help="p(x|z): bernoulli for binarised pixels, continuous-bernoulli or "
                        "gaussian for grey values (default: bernoulli for images, gaussian for "
                        "real-valued vectors)")
    parser.add_argument("--gaussian-scale", type=_scale, default=None, metavar="learned|S",
                        help="pixel standard deviation of the gaussian likelihood (default: learned)")


def defaults_for_data(options: dict, kind: str, shape) -> dict:
    """Fill ``likelihood`` and ``latent_dim`` where unset: a Bernoulli over binarised pixels
    and 50 latents for images; a Gaussian over the values as they are (no binarisation) and
    as many latents as dimensions, up to 50, for real-valued vectors. Returns what it chose."""
    import math

    notes = {}
    image = kind == "image"
    if options.get("likelihood") is None:
        options["likelihood"] = "bernoulli" if image else "gaussian"
        notes["likelihood"] = {"value": options["likelihood"], "why": (
            "pixels binarised afresh every batch" if image else
            "real-valued vectors: no binarisation")}
    if options.get("latent_dim") is None:
        dim = math.prod(shape)
        options["latent_dim"] = 50 if image else min(50, dim)
        notes["latent_dim"] = {"value": options["latent_dim"], "why": (
            "the image default" if image else f"the data's {dim} dimension(s), at most 50")}
    return notes


def data_options(args) -> dict:
    if args.likelihood in ("bernoulli", None):
        return {"binarize": "dynamic", "value_range": [0.0, 1.0]}
    if args.likelihood == "continuous-bernoulli":
        return {"binarize": "none", "value_range": [0.0, 1.0]}
    return {"binarize": "none"}


def build(config: dict, data):
    from probgen.models.vae import VAE

    return VAE(data.shape, config.get("latent_dim") or 50, config.get("hidden"),
               arch=config.get("arch", "mlp"), likelihood=config.get("likelihood") or "bernoulli",
               activation=config.get("activation"), gaussian_scale=config.get("gaussian_scale"))


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

    from probgen.inference.svi import fit_svi

    pyro.clear_param_store()
    model = build(config, data).to(device)
    from probgen.recipes import epoch_checkpoint, resume_epochs

    start_epoch, start_step, optim_state, _ = resume_epochs(run, model, device)
    n = int(data.train.shape[0])
    t0 = time.perf_counter()

    def log_epoch(st) -> bool:
        val = validation_elbo(model, data, limit=config.get("val_limit"))
        run.log(st.step, epoch=st.epoch, train_elbo=-st.epoch_loss / n, val_elbo=val,
                seconds=time.perf_counter() - t0, skipped=len(st.result.skipped))
        val_text = f"{val:.2f}" if val is not None else "--"
        if run.writer:
            print(f"epoch {st.epoch:4d}  train ELBO {-st.epoch_loss / n:9.2f}  val ELBO {val_text}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        return run.should_stop()

    if config.get("amp"):
        import torch

        model.autocast_dtype = torch.bfloat16
    if start_epoch < config["epochs"]:
        fit_svi(model.model, model.guide, data, loss=config.get("loss", "trace"),
                num_particles=config.get("num_particles", 1), model_kwargs={"num_data": n},
                epochs=config["epochs"], batch_size=config.get("batch_size", 100),
                lr=config.get("lr", 1e-3), on_nan=config.get("on_nan", "skip"),
                callbacks=[log_epoch], checkpoint=epoch_checkpoint(run, model), start_epoch=start_epoch,
                start_step=start_step, optim_state=optim_state, progress=getattr(run, "progress", run.writer),
                seed=config["seed"])
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
    return latent_model_figures(model, data, run, curves={"ELBO (nats per example)": ["train_elbo", "val_elbo"]})


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
