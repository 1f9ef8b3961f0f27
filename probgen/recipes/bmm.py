"""``probgen train bmm``: a mixture of Bernoullis fitted by EM, the baseline for binary images.

The data are binarised once, with a fixed seed (``--binarize fixed`` by default): EM
maximises the likelihood of one fixed data set, so the dynamic binarisation that a VAE
trains on (fresh 0/1 pixels every batch) does not fit it and is refused. The test and
validation splits are binarised with the same fixed seed whatever the mode, so a mixture
and a Bernoulli VAE are scored on the same 0/1 test images. Data that are already 0/1
(a user array) pass through unchanged; grey values with ``--binarize none`` are refused
with a message that says to binarise.

``K`` is by default one component per 30 training examples, at most 100 (``mnist-5k``:
100; on its validation split the log-likelihood rises from K = 10 to about K = 100 and is
flat to K = 200). Each probability has a Beta(1 + alpha, 1 + alpha) prior (``--alpha``, 0.1
by default, the best of 0.001, 0.01, 0.1 and 1 on ``mnist-5k``'s validation split at K = 10
and 50; see :class:`probgen.models.bmm.BernoulliMixture`), so that a test pixel that no
training image of a component had on still has a finite probability.
Initialisation: k-means on the 0/1 vectors, best of ``--n-init`` EM runs.

The run's model is the fitted mixture seen through the evaluation protocol
(:class:`probgen.models.gmm.MixtureDensity`): ``log_prob(x)`` exact (nats per image, of the
0/1 image), ``sample(n)`` 0/1 draws. The checkpoint holds the parameters as tensors only.
"""

from __future__ import annotations

from probgen.recipes import RecipeConfig, option
from probgen.recipes.gmm import DTYPE_CHOICES, INIT_CHOICES

HELP = "mixture of Bernoullis fitted by EM on binarised data (exact log-likelihood)"
DISTRIBUTED = True  # EM across processes under torchrun: sufficient statistics all-reduced
LIST_ORDER = 60
SMOKE = {"data": "digits", "limit": 200, "components": 4, "max_iter": 20}

EXAMPLES_PER_COMPONENT = 30     # the default K: one component per 30 training examples,
MAX_DEFAULT_COMPONENTS = 100    # at most 100


class Config(RecipeConfig):
    components: int | None = option(
        None, "mixture components (default: one per 30 training examples, at most 100)", type=int,
        metavar="K")
    alpha: float = option(0.1, "Beta(1+alpha, 1+alpha) prior on each probability, keeping it away "
                          "from 0 and 1 (default %(default)s; 0 is maximum likelihood)", type=float)
    n_init: int = option(1, "EM runs from different k-means seeds; the best is kept "
                         "(default %(default)s)", type=int, metavar="N")
    max_iter: int = option(200, "EM iterations per run at most (default %(default)s)", type=int,
                           metavar="N")
    tol: float = option(1e-3, "stop when the objective per image changes less (default %(default)s)",
                        type=float)
    init: str = option("kmeans", "initial responsibilities (default %(default)s)", choices=INIT_CHOICES)
    dtype: str = option("float64", "compute dtype (default %(default)s; float32 is faster on a GPU)",
                        choices=DTYPE_CHOICES)


def data_options(args) -> dict:
    # one fixed binarisation: EM fits one data set, not a fresh draw per batch
    return {"binarize": "fixed", "value_range": [0.0, 1.0]}


def resolve_config(config: dict, data) -> dict:
    """Fill in the default K, check the options against the data; refuse a dynamic
    binarisation."""
    from probgen.errors import ConfigError
    from probgen.recipes.gmm import check_mixture_options

    out = Config.complete(config)
    n = int(data.train.shape[0])
    if out.get("components") is None:
        out["components"] = max(1, min(MAX_DEFAULT_COMPONENTS, n // EXAMPLES_PER_COMPONENT))
    if data.binarize == "dynamic":
        raise ConfigError("bmm is fitted by EM to one fixed data set, so it cannot use "
                          "--binarize dynamic (a fresh binarisation every batch). Use "
                          "--binarize fixed (the default), or data that are already 0/1 with "
                          "--binarize none.")
    return check_mixture_options(out, data, non_negative=("tol", "alpha"))


def build(config: dict, device):
    """An unfitted :class:`~probgen.models.bmm.BernoulliMixture` from a resolved config."""
    from probgen.models.bmm import BernoulliMixture
    from probgen.recipes.gmm import torch_dtype

    return BernoulliMixture(
        config["components"], alpha=config["alpha"], tol=config["tol"],
        max_iter=config["max_iter"], n_init=config["n_init"], init_params=config["init"],
        random_state=config["seed"], device=device, dtype=torch_dtype(config["dtype"]),
    )


def train(run, data, config, device):
    from probgen.recipes.gmm import fit_mixture

    config = resolve_config(config, data)

    def values(split: str, seed: int):  # (N, D): images flattened; the 0/1 values as they are
        x = data.split(split)
        return x.reshape(x.shape[0], -1)

    return fit_mixture(run, data, config, device, build(config, device), values=values)


def load(run, data, device):
    from probgen.recipes.gmm import load_mixture

    return load_mixture(run, data, device, build(resolve_config(run.config, data), device))


def figures(model, data, run) -> list:
    """Images: the components' probabilities as an image grid, and samples; other data:
    samples; always the penalised objective per EM iteration."""
    import torch

    from probgen import plots

    out = []
    figs = run.figures_dir
    bm = model.mixture
    with torch.no_grad():
        samples = model.sample(min(2000, max(100, data.test.shape[0]))).cpu()
    if data.kind == "image":
        means = bm.means_.detach().float().cpu()
        out.append(plots.image_grid(means, figs / "means.png", shape=data.shape,
                                    value_range=(0.0, 1.0),
                                    title=f"pixel probabilities of the {bm.n_components} "
                                          "components"))
    out.append(plots.samples_figure(samples, data, figs / "samples.png"))
    recs = [r for r in run.metrics() if "lower_bound" in r]
    if recs:
        out.append(plots.learning_curve(
            recs, ["lower_bound"], figs / "lower_bound.png",
            title="EM: penalised log-likelihood per iteration (MAP objective)",
            ylabel="nats per example"))
    return out
