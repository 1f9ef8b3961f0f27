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

HELP = "mixture of Bernoullis fitted by EM on binarised data (exact log-likelihood)"
DISTRIBUTED = True  # EM across processes under torchrun: sufficient statistics all-reduced

INIT_CHOICES = ("kmeans", "k-means++", "random", "random_from_data")
EXAMPLES_PER_COMPONENT = 30     # the default K: one component per 30 training examples,
MAX_DEFAULT_COMPONENTS = 100    # at most 100


def add_arguments(parser) -> None:
    parser.add_argument("--components", type=int, default=None, metavar="K",
                        help="mixture components (default: one per 30 training examples, "
                             "at most 100)")
    parser.add_argument("--alpha", type=float, default=0.1,
                        help="Beta(1+alpha, 1+alpha) prior on each probability, keeping it "
                             "away from 0 and 1 (default 0.1; 0 is maximum likelihood)")
    parser.add_argument("--n-init", type=int, default=1, metavar="N",
                        help="EM runs from different k-means seeds; the best is kept (default 1)")
    parser.add_argument("--max-iter", type=int, default=200, metavar="N",
                        help="EM iterations per run at most (default 200)")
    parser.add_argument("--tol", type=float, default=1e-3,
                        help="stop when the objective per image changes less (default 1e-3)")
    parser.add_argument("--init", choices=INIT_CHOICES, default="kmeans",
                        help="initial responsibilities (default kmeans)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                        help="compute dtype (default float64; float32 is faster on a GPU)")


def data_options(args) -> dict:
    # one fixed binarisation: EM fits one data set, not a fresh draw per batch
    return {"binarize": "fixed", "value_range": [0.0, 1.0]}


def resolve_config(config: dict, data) -> dict:
    """Fill in the default K, check the options against the data; refuse a dynamic
    binarisation."""
    import math

    from probgen.errors import ConfigError

    out = dict(config)
    n = int(data.train.shape[0])
    if out.get("components") is None:
        out["components"] = max(1, min(MAX_DEFAULT_COMPONENTS, n // EXAMPLES_PER_COMPONENT))
    if data.binarize == "dynamic":
        raise ConfigError("bmm is fitted by EM to one fixed data set, so it cannot use "
                          "--binarize dynamic (a fresh binarisation every batch). Use "
                          "--binarize fixed (the default), or data that are already 0/1 with "
                          "--binarize none.")
    for key in ("components", "n_init", "max_iter"):
        if int(out[key]) < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be a positive integer; "
                              f"got {out[key]}.")
    for key in ("tol", "alpha"):
        if not (math.isfinite(float(out[key])) and float(out[key]) >= 0):
            raise ConfigError(f"--{key.replace('_', '-')} must be a finite number >= 0; "
                              f"got {out[key]}.")
    if out["components"] > n:
        raise ConfigError(f"--components {out['components']} is more than the {n} training "
                          "examples; use fewer components (or more data: drop --limit).")
    return out


def build(config: dict, device):
    """An unfitted :class:`~probgen.models.bmm.BernoulliMixture` from a resolved config."""
    import torch

    from probgen.models.bmm import BernoulliMixture

    return BernoulliMixture(
        config["components"], alpha=config["alpha"], tol=config["tol"],
        max_iter=config["max_iter"], n_init=config["n_init"], init_params=config["init"],
        random_state=config["seed"], device=device,
        dtype={"float64": torch.float64, "float32": torch.float32}[config["dtype"]],
    )


def train(run, data, config, device):
    import warnings

    from probgen.inference.em import ConvergenceWarning

    config = resolve_config(config, data)
    run.config = config
    run.write_json("config.json", config)
    bm = build(config, device)
    ckpt = run.load_checkpoint(map_location=device)
    if ckpt is not None:  # --resume of a finished fit: EM runs in one go, nothing to continue
        bm.load_state_dict(ckpt["state"])
        return bm.as_density(event_shape=data.shape)

    x = data.train.reshape(data.train.shape[0], -1)            # (N, D): images flattened
    from probgen.distributed import process_group

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        bm.fit(x, processes=process_group(), progress=getattr(run, "progress", run.writer))
    if not run.writer:  # across processes: rank 0 scores, logs and saves the same fit
        return bm.as_density(event_shape=data.shape)
    for it, lb in enumerate(bm.lower_bounds_, start=1):
        run.log(it, lower_bound=lb)
    val = data.val.reshape(data.val.shape[0], -1)
    summary = {"train_log_likelihood": bm.score(x), "converged": bm.converged_,
               "bic": bm.bic(x)}
    if val.shape[0]:
        summary["val_log_likelihood"] = bm.score(val)
    run.log(bm.n_iter_, **summary)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            print(f"note: {w.message}")
    run.save_checkpoint(bm.state_dict(), step=bm.n_iter_)
    val_text = (f", validation {summary['val_log_likelihood']:.4f}"
                if "val_log_likelihood" in summary else "")
    print(f"EM: {bm.n_iter_} iterations (best of {config['n_init']}), "
          f"converged={bm.converged_}, train log-likelihood "
          f"{summary['train_log_likelihood']:.4f}{val_text} nats per example")
    return bm.as_density(event_shape=data.shape)


def load(run, data, device):
    config = resolve_config(run.config, data)
    bm = build(config, device)
    ckpt = run.load_checkpoint(map_location=device, required=True)
    bm.load_state_dict(ckpt["state"])
    return bm.as_density(event_shape=data.shape)


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
