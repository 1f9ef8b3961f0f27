"""``probgen train gmm``: a Gaussian mixture fitted by maximum likelihood with EM.

Defaults follow the data: on a toy mixture (``ring8``, ``grid25``, ``bimodal1d``) ``K`` is
the true number of components; on other toy and vector data 10. Covariances are full,
except on images, where a full ``D x D`` matrix per component is too much for a baseline:
there they are diagonal, ``reg_covar`` is 1e-3 instead of 1e-6 (pixels that are constant,
like MNIST's border, would otherwise get a variance of 1e-6 and a spike of density; 1e-5 on
dequantized images, whose noise bounds the density), and images are flattened. Images are
dequantized by default (``--dequantize auto``): the mixture is fitted to one seeded draw of
``(k + u) / 256`` and scored by the dequantization bound on ``log P(k)``
(:mod:`probgen.data.dequantize`), not as a density of raw grey values. Initialisation: k-means (greedy k-means++ seeding, then Lloyd), best of
``--n-init`` EM runs (3 by default; the narrow, well-separated modes of ``grid25`` need a
seeding that puts one centre in each of them).

The run's model is the fitted mixture seen through the evaluation protocol
(:class:`probgen.models.gmm.MixtureDensity`): ``log_prob(x)`` exact, ``sample(n)``.
The checkpoint holds the parameters as tensors only.
"""

from __future__ import annotations

from probgen.recipes import RecipeConfig, option

HELP = "Gaussian mixture fitted by EM (k-means initialisation, exact log-likelihood)"
DISTRIBUTED = True  # EM across processes under torchrun: sufficient statistics all-reduced
QUICK = True        # EM converges well inside any share of a budget
LIST_ORDER = 50
SMOKE = {"data": "ring8", "limit": 400, "components": 8, "n_init": 1, "max_iter": 20}

COVARIANCE_CHOICES = ("full", "tied", "diag", "spherical")
INIT_CHOICES = ("kmeans", "k-means++", "random", "random_from_data")
DTYPE_CHOICES = ("float64", "float32")


class Config(RecipeConfig):
    components: int | None = option(
        None, "mixture components (default: the true number on toy mixtures, else 10)", type=int,
        metavar="K")
    covariance_type: str | None = option(
        None, "covariance of each component (default: diag on images, else full)",
        choices=COVARIANCE_CHOICES)
    n_init: int = option(3, "EM runs from different k-means seeds; the best is kept "
                         "(default %(default)s)", type=int, metavar="N")
    max_iter: int = option(200, "EM iterations per run at most (default %(default)s)", type=int,
                           metavar="N")
    tol: float = option(1e-3, "stop when the mean log-likelihood changes less (default %(default)s)",
                        type=float)
    reg_covar: float | None = option(
        None, "added to covariance diagonals (default: 1e-5 on dequantized images, 1e-3 on raw "
        "ones, else 1e-6)", type=float)
    init: str = option("kmeans", "initial responsibilities (default %(default)s)", choices=INIT_CHOICES)
    dtype: str = option("float64", "compute dtype (default %(default)s; float32 is faster on a GPU)",
                        choices=DTYPE_CHOICES)


def data_options(args) -> dict:
    # images as 8-bit values dequantized: a density of raw grey values is not a likelihood
    return {"binarize": "none", "dequantize": "auto"}


def resolve_config(config: dict, data) -> dict:
    """Fill the options left unset with the defaults of the data kind; check them."""

    out = Config.complete(config)
    image = data.kind == "image"
    if out.get("components") is None:
        out["components"] = int(getattr(data.density, "n_components", 0) or 10)
    if out.get("covariance_type") is None:
        out["covariance_type"] = "diag" if image else "full"
    if out.get("reg_covar") is None:
        # dequantized pixels vary at least by their noise (variance 1 / (12 * 256^2)); 1e-5
        # scored best on held-out mnist-5k among 1e-3 .. 1e-6
        out["reg_covar"] = (1e-5 if data.bin_width is not None else 1e-3) if image else 1e-6
    return check_mixture_options(out, data, non_negative=("tol", "reg_covar"))


def check_mixture_options(config: dict, data, *, non_negative: tuple[str, ...]) -> dict:
    """Refuse counts below 1, the ``non_negative`` options below 0 (or not finite) and more
    components than training examples, naming the flag; returns ``config``."""
    import math

    from probgen.checks import check_positive_int
    from probgen.errors import ConfigError

    for key in ("components", "n_init", "max_iter"):
        check_positive_int(f"--{key.replace('_', '-')}", config[key])
    for key in non_negative:
        if not (math.isfinite(float(config[key])) and float(config[key]) >= 0):
            raise ConfigError(f"--{key.replace('_', '-')} must be a finite number >= 0; "
                              f"got {config[key]}.")
    n = int(data.train.shape[0])
    if config["components"] > n:
        raise ConfigError(f"--components {config['components']} is more than the {n} training "
                          "examples; use fewer components (or more data: drop --limit).")
    return config


def build(config: dict, device):
    """An unfitted :class:`~probgen.models.gmm.GaussianMixture` from a resolved config."""

    from probgen.models.gmm import GaussianMixture

    return GaussianMixture(
        config["components"], covariance_type=config["covariance_type"],
        tol=config["tol"], reg_covar=config["reg_covar"], max_iter=config["max_iter"],
        n_init=config["n_init"], init_params=config["init"], random_state=config["seed"],
        device=device, dtype=torch_dtype(config["dtype"]),
    )


def torch_dtype(name: str):
    """The torch dtype of a ``--dtype`` choice."""
    import torch

    return getattr(torch, name)


def train(run, data, config, device):
    config = resolve_config(config, data)
    return fit_mixture(run, data, config, device, build(config, device),
                       values=lambda split, seed: _values(data, split, seed),
                       offset=data.bound_offset)


def fit_mixture(run, data, config: dict, device, mixture, *, values, offset: float = 0.0):
    """The training of an EM recipe (gmm, bmm): fit the unfitted ``mixture`` to
    ``values("train", seed)`` (an (N, D) tensor) in one go, log its objective per iteration
    and its train and validation log-likelihoods (plus ``offset``: the dequantization bound's
    ``D log(bin width)``), checkpoint it, and return it seen through the evaluation protocol.
    A run that already holds a checkpoint (``--resume`` of a finished fit: EM has nothing to
    continue) is reloaded instead."""
    import warnings

    from probgen.inference.em import ConvergenceWarning

    run.config = config
    run.write_json("config.json", config)
    ckpt = run.load_checkpoint(map_location=device)
    if ckpt is not None:
        mixture.load_state_dict(ckpt["state"])
        return mixture.as_density(event_shape=data.shape)

    from probgen.distributed import process_group

    x = values("train", config["seed"])                        # (N, D)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        mixture.fit(x, processes=process_group(), progress=getattr(run, "progress", run.writer))
    if not run.writer:  # across processes: rank 0 scores, logs and saves the same fit
        return mixture.as_density(event_shape=data.shape)
    for it, lb in enumerate(mixture.lower_bounds_, start=1):
        run.log(it, lower_bound=lb)
    val = values("val", config["seed"] + 1)
    summary = {"train_log_likelihood": mixture.score(x) + offset, "converged": mixture.converged_,
               "bic": mixture.bic(x)}
    if val.shape[0]:
        summary["val_log_likelihood"] = mixture.score(val) + offset
    run.log(mixture.n_iter_, **summary)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            print(f"note: {w.message}")
    run.save_checkpoint(mixture.state_dict(), step=mixture.n_iter_)
    val_text = (f", validation {summary['val_log_likelihood']:.4f}"
                if "val_log_likelihood" in summary else "")
    print(f"EM: {mixture.n_iter_} iterations (best of {config['n_init']}), "
          f"converged={mixture.converged_}, train log-likelihood "
          f"{summary['train_log_likelihood']:.4f}{val_text} nats per example")
    return mixture.as_density(event_shape=data.shape)


def load_mixture(run, data, device, mixture):
    """The fitted mixture of ``run``'s checkpoint (``mixture``: an unfitted one built from the
    run's config), seen through the evaluation protocol."""
    ckpt = run.load_checkpoint(map_location=device, required=True)
    mixture.load_state_dict(ckpt["state"])
    return mixture.as_density(event_shape=data.shape)


def _values(data, split: str, seed: int):
    """``split`` flattened to (N, D); on dequantized data with one seeded draw of noise."""
    import torch

    gen = torch.Generator(device=data.device).manual_seed(int(seed))
    x = data.draw(split, gen)
    return x.reshape(x.shape[0], -1)


def load(run, data, device):
    return load_mixture(run, data, device, build(resolve_config(run.config, data), device))


def figures(model, data, run) -> list:
    """2-D: fitted and true density contours over the data, and samples; 1-D: histogram
    with the fitted density; images: the component means and samples; always the lower
    bound per EM iteration."""
    import torch

    from probgen import plots

    out = []
    figs = run.figures_dir
    gm = model.mixture
    with torch.no_grad():
        samples = model.sample(min(2000, max(100, data.test.shape[0]))).cpu()
    d = data.dim
    if data.kind != "image" and d == 2:
        test = data.test.detach().cpu()
        lo = float(test.min()) - 0.5
        hi = float(test.max()) + 0.5
        # grid fine enough to resolve the narrowest fitted component
        sd = float(gm.covariances_.min().clamp_min(1e-12).sqrt()) if gm.covariance_type != "full" \
            else float(torch.linalg.eigvalsh(gm.covariances_).min().clamp_min(1e-12).sqrt())
        res = int(min(600, max(200, (hi - lo) / max(sd, 1e-6) / 2)))
        fns = {"fitted mixture": lambda g: model.log_prob(g.to(gm.means_.device))}
        if data.density is not None:
            fns["true density"] = lambda g: data.density.log_prob(g.to(data.test.device))
        out.append(plots.density_contours(fns, figs / "density.png", lim=(lo, hi), points=test,
                                          title=f"{gm.n_components}-component mixture on "
                                                f"{data.name}", resolution=res))
        out.append(plots.scatter_2d({"data": test, "samples": samples}, figs / "samples.png",
                                    title="data and mixture samples", lim=(lo, hi)))
    elif data.kind != "image" and d == 1:
        out.append(_density_1d(model, data, samples, figs / "density.png"))
    elif data.kind == "image":
        lo, hi = data.value_range
        means = gm.means_.detach().float().cpu().clamp(lo, hi)
        out.append(plots.image_grid(means, figs / "means.png", shape=data.shape,
                                    value_range=data.value_range,
                                    title=f"means of the {gm.n_components} components"))
        out.append(plots.samples_figure(samples.clamp(lo, hi), data, figs / "samples.png"))
    else:
        out.append(plots.samples_figure(samples, data, figs / "samples.png"))
    recs = [r for r in run.metrics() if "lower_bound" in r]
    if recs:
        out.append(plots.learning_curve(recs, ["lower_bound"], figs / "lower_bound.png",
                                        title="EM: mean log-likelihood per iteration",
                                        ylabel="nats per example"))
    return out


def _density_1d(model, data, samples, path):
    """Histogram of the test data and of samples, with the fitted (and true) density."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = data.test.detach().cpu()[:, 0]
    lo, hi = float(test.min()) - 1.0, float(test.max()) + 1.0
    grid = torch.linspace(lo, hi, 800).unsqueeze(1)             # (800, 1)
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.hist(test.numpy(), bins=80, density=True, alpha=0.35, color="0.5", label="test data")
    ax.hist(samples[:, 0].numpy(), bins=80, density=True, histtype="step", color="C1",
            label="mixture samples")
    with torch.no_grad():
        ax.plot(grid[:, 0], model.log_prob(grid).exp().cpu(), "C0", lw=2, label="fitted density")
        if data.density is not None:
            ax.plot(grid[:, 0], data.density.log_prob(grid).exp(), "k--", lw=1,
                    label="true density")
    ax.set_xlim(lo, hi)
    ax.legend()
    ax.set_title(f"{model.n_components}-component mixture on {data.name}")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
