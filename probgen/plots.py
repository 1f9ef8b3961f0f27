"""The pictures: sample grids, scatter plots of 2-D data, density contours, learning curves.

matplotlib is imported here, with the non-interactive Agg backend, and only when a figure is
drawn. Every function writes a PNG and returns its path.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = ["samples_figure", "histogram_bins", "image_grid", "scatter_2d", "learning_curve", "density_contours",
           "likelihood_vs_samples", "pyplot", "save_figure"]


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend, imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Write ``fig`` to the PNG ``path`` (parent folders created), close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path




def flat_image_side(dim: int) -> int:
    """The side of the square grey image that ``dim`` values per example make, when they
    plausibly are one (a square of side 8 or more: flattened 8x8 digits, 28x28 MNIST), else 0.
    Vectors of 4, 9 or 16 values are features, not images, and are plotted as points."""
    side = math.isqrt(int(dim))
    return side if side >= 8 and side * side == dim else 0


def image_grid(x: torch.Tensor, path, *, shape=None, nrow: int | None = None, title: str | None = None,
               value_range=(0.0, 1.0)) -> Path:
    """A grid of images. ``x``: (N, C, H, W) or (N, D) with ``shape=(C, H, W)``."""
    import torchvision.utils as vutils

    x = x.detach().float().cpu()
    if shape is not None:
        x = x.reshape(-1, *shape)
    if x.dim() == 2:  # flat images: square ones
        side = flat_image_side(x.shape[1])
        if not side:
            raise ValueError(f"image_grid: {x.shape[1]} values per example are not a square "
                             "image; pass shape=(C, H, W).")
        x = x.reshape(-1, 1, side, side)
    lo, hi = value_range
    x = ((x - lo) / (hi - lo)).clamp(0, 1)
    nrow = nrow or max(1, int(round(x.shape[0] ** 0.5)))
    grid = vutils.make_grid(x, nrow=nrow, padding=2, pad_value=1.0)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(0.6 * nrow + 1, 0.6 * ((x.shape[0] + nrow - 1) // nrow) + 1))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def scatter_2d(points: dict[str, torch.Tensor], path, *, title: str | None = None, lim=None) -> Path:
    """Overlaid scatter plots of 2-D point sets, e.g. ``{"data": x, "model": s}``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, p in points.items():
        p = p.detach().cpu()
        ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.5, label=label)
    if lim is not None:
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
    ax.set_aspect("equal")
    ax.legend(markerscale=5, loc="upper right")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def density_contours(log_probs: dict, path, *, lim=(-5.0, 5.0), points=None, title=None,
                     resolution: int = 200) -> Path:
    """Contours of one or more 2-D log densities (callables (N, 2) -> (N,)) on a square grid.

    Levels are drawn in log density, 0.5, 2, 4.5 and 8 nats below each density's peak on the
    grid (1 to 4 standard deviations for a Gaussian), so narrow modes get rings around them
    rather than circles where the density rounds to zero.
    """
    plt = pyplot()
    g = torch.linspace(lim[0], lim[1], resolution)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    grid = torch.stack([xx.flatten(), yy.flatten()], dim=1)
    fig, ax = plt.subplots(figsize=(5, 5))
    if points is not None:
        p = points.detach().cpu()
        ax.scatter(p[:, 0], p[:, 1], s=1, c="0.7", alpha=0.5)
    colors = ["C0", "C1", "C3", "C2", "C4"]
    handles = []
    for (label, fn), c in zip(log_probs.items(), colors):
        with torch.no_grad():
            z = fn(grid).detach().double().cpu().reshape(resolution, resolution)
        top = float(z[torch.isfinite(z)].max())
        levels = [top - d for d in (8.0, 4.5, 2.0, 0.5)]
        ax.contour(xx.numpy(), yy.numpy(), z.clamp_min(top - 50).numpy(), levels=levels, colors=c)
        handles.append(plt.Line2D([], [], color=c, label=label))
    ax.legend(handles=handles, loc="upper right")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def learning_curve(records: list[dict], keys: list[str], path, *, xkey: str = "step",
                   title: str | None = None, ylabel: str = "") -> Path:
    """Lines of ``keys`` against ``xkey`` from a run's metrics log."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        pts = [(r[xkey], r[key]) for r in records if key in r and r[key] is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=key)
    ax.set_xlabel(xkey)
    ax.set_ylabel(ylabel)
    ax.legend()
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def histogram_bins(real: torch.Tensor, drawn: torch.Tensor, bin_width: float | None = None):
    """Bins of a histogram of 1-D data and samples: 80, or, for values on a grid of spacing
    ``bin_width`` (dequantized data, whose samples are given as values), one bar per value
    (edges at the values, which are the lower edges of their bins), so that no bar holds two
    values and none falls between them; 80 again where that would be over 400 bars."""
    if not bin_width or not (torch.isfinite(real).all() and torch.isfinite(drawn).all()):
        return 80
    w = float(bin_width)
    lo, hi = float(min(real.min(), drawn.min())), float(max(real.max(), drawn.max()))
    if (hi - lo) / w > 400:
        return 80
    return [lo + j * w for j in range(int(round((hi - lo) / w)) + 2)]


def samples_figure(x: torch.Tensor, data, path, *, title: str = "samples") -> Path:
    """Samples drawn the way the data looks: an image grid or a 2-D scatter over the data,
    titled ``title`` (the report names the model: "samples: vae"). On dequantized data each
    draw is shown as the value of its bin, as the data are (``Dataset.as_values``)."""
    x = data.as_values(x)
    if data.kind == "image":
        return image_grid(x[:100], path, shape=data.shape, value_range=data.value_range, title=title)
    if x.dim() == 2 and x.shape[1] == 2:
        return scatter_2d({"data": data.test, "samples": x}, path, title=title)
    if x.dim() == 2 and x.shape[1] == 1:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 3))
        real, drawn = data.test[:, 0].cpu(), x[:, 0].cpu()
        bins = histogram_bins(real, drawn, data.bin_width)
        ax.hist(real.numpy(), bins=bins, density=True, alpha=0.5, label="data")
        ax.hist(drawn.numpy(), bins=bins, density=True, alpha=0.5, label="samples")
        ax.legend()
        ax.set_title(title)
        return save_figure(fig, path)
    if x.dim() == 2 and flat_image_side(x.shape[1]):
        return image_grid(x[:100], path, title=title, value_range=data.value_range)
    return scatter_2d({"data": data.test[:, :2], "samples": x[:, :2]}, path,
                      title=f"{title} (first 2 of {x.shape[1]} dims)")


# the sample metrics the likelihood figure sets likelihoods against, first those the data has
_QUALITY_AXES = (("frechet_distance", "Frechet distance (lower is better)"),
                 ("precision", "precision (higher is better)"),
                 ("recall", "recall (higher is better)"),
                 ("coverage", "coverage (higher is better)"),
                 ("modes_covered", "modes covered (higher is better)"),
                 ("high_quality_fraction", "high-quality fraction (higher is better)"),
                 ("energy_distance", "energy distance (lower is better)"),
                 ("mmd", "MMD (lower is better)"))


def likelihood_vs_samples(results: dict, path, *, title: str | None = None) -> Path | None:
    """Likelihood against sample quality, one point per model labelled with its name.

    One row of panels per representation some model has a likelihood on (bits/dim on images,
    lower is better; nats on continuous data, higher is better), one column per sample metric
    the data has (Frechet distance, precision, recall, coverage on images; modes covered and
    the high-quality fraction on toy mixtures). Error bars are ± one standard error. The
    reference row (real validation data) is a point where its likelihood is known (the true
    density of toy data), else a dashed line at its sample metric. Models without a likelihood
    are named under the figure. Returns None when no model has both a likelihood and a sample
    metric.
    """
    from probgen import verdict as vd

    models = results["models"]
    ref = models.get(vd.REFERENCE_ROW_NAME) or {}
    names = [n for n in models if n != vd.REFERENCE_ROW_NAME]

    def metric(ev, key):
        m = (ev.get("metrics") or {}).get(key)
        return m if m and m.get("value") is not None else None

    axes_q = [(k, t) for k, t in _QUALITY_AXES if any(metric(models[n], k) for n in names)]
    reps = vd.representations(results)
    if not axes_q or not reps:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(reps), len(axes_q), figsize=(3.6 * len(axes_q), 3.2 * len(reps)),
                             squeeze=False)
    for i, rep in enumerate(reps):
        image = rep == "binary" or rep.startswith("dequantized")
        for j, (key, label) in enumerate(axes_q):
            ax = axes[i][j]
            for c, n in enumerate(names):
                lik = vd.model_likelihoods(models[n]).get(rep)
                q = metric(models[n], key)
                if lik is None or q is None:
                    continue
                y = lik.get("bits_per_dim") if image else lik["value"]
                yerr = lik.get("bits_per_dim_stderr") if image else lik.get("stderr")
                if y is None:
                    continue
                flagged = bool(models[n].get("flags"))
                ax.errorbar([q["value"]], [y], xerr=[q.get("stderr") or 0.0], yerr=[yerr or 0.0],
                            fmt="X" if flagged else "o", color=f"C{c % 10}", ms=8, capsize=3)
                ax.annotate(n + (" (flagged)" if flagged else ""), (q["value"], y),
                            textcoords="offset points", xytext=(6, 4), fontsize=8)
            # models without a likelihood: their sample quality as a tick on the x axis
            for c, n in enumerate(names):
                q = metric(models[n], key)
                if q is not None and not vd.model_likelihoods(models[n]):
                    ax.plot([q["value"]], [0.02], "^", color=f"C{c % 10}", ms=8,
                            transform=ax.get_xaxis_transform(), clip_on=False)
                    ax.annotate(f"{n} (no likelihood)", (q["value"], 0.06), rotation=90,
                                xycoords=("data", "axes fraction"), fontsize=7, va="bottom")
            rq = metric(ref, key)
            true_ll = metric(ref, "true_log_likelihood")
            if rq is not None and true_ll is not None and not image and \
                    (true_ll.get("representation") or "continuous") == rep:
                ax.plot([rq["value"]], [true_ll["value"]], "*", color="k", ms=12, zorder=0)
                ax.annotate("reference\n(true density)", (rq["value"], true_ll["value"]),
                            textcoords="offset points", xytext=(-4, -6), fontsize=7,
                            ha="right", va="top")
            elif rq is not None:
                ax.axvline(rq["value"], color="k", ls="--", lw=1)
                ax.annotate("reference", (rq["value"], 0.97), xycoords=("data", "axes fraction"),
                            fontsize=8, rotation=90, va="top", ha="right")
            xs = [metric(ev, key)["value"] for ev in [*(models[n] for n in names), ref] if metric(ev, key)]
            if key == "frechet_distance" and min(xs) > 0 and max(xs) > 20 * min(xs):
                ax.set_xscale("log")  # a collapsed model's distance is orders of magnitude away
            ax.set_xlabel(label, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{rep}\nbits/dim (lower is better)" if image
                              else f"{rep}\nlog-lik, nats (higher is better)", fontsize=9)
            ax.margins(0.25)
    head = title or f"Likelihood against sample quality on {results.get('data', '')}"
    fig.suptitle(head + "\n(one point per model, ± one standard error; X: flagged)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- GAN figures
def gan_progress(snapshots: dict, data, path, *, title: str = "samples over training") -> Path:
    """Samples from the same z at several training steps: ``{step: (n, *shape)}``.

    Points: one scatter per step, real data in grey under the samples (the mode-collapse
    figure; the first two coordinates of longer vectors). 1-D data: a histogram per step.
    Images (and flat square images): one row of samples per step.
    """
    plt = pyplot()
    steps = sorted(snapshots)
    first = snapshots[steps[0]]
    vector = data.kind != "image" and not flat_image_side(first[0].numel())
    if vector and first[0].numel() == 1:  # 1-D data: a histogram per step over the data's
        real = data.test[:2000].detach().cpu().reshape(-1)
        fig, axes = plt.subplots(1, len(steps), figsize=(3.2 * len(steps), 2.8), squeeze=False,
                                 sharex=True)
        for ax, s in zip(axes[0], steps):
            x = snapshots[s].detach().cpu().reshape(-1)
            x = x[torch.isfinite(x)]
            ax.hist(real.numpy(), bins=60, density=True, color="0.75", label="data")
            ax.hist(x.numpy(), bins=60, density=True, color="C3", alpha=0.6, label="generated")
            ax.set_title(f"step {s}")
            ax.set_yticks([])
        axes[0][0].legend(fontsize=7)
        fig.suptitle(title, y=1.04)
        return save_figure(fig, path)
    if vector:  # points: the first two coordinates
        if first.shape[-1] != 2:
            title = f"{title} (first 2 of {first.shape[-1]} dims)"
        snapshots = {s: v.reshape(v.shape[0], -1)[:, :2] for s, v in snapshots.items()}
        real = data.test[:2000].detach().cpu()
        real = real.reshape(real.shape[0], -1)[:, :2]
        lo = float(real.min()) - 0.5
        hi = float(real.max()) + 0.5
        span = hi - lo
        every = torch.cat([snapshots[s].detach().cpu() for s in steps])
        every = every[torch.isfinite(every).all(1)]
        if every.numel():  # show samples that left the data's square, up to one span beyond it
            lo = max(min(lo, float(every.min()) - 0.1), lo - span)
            hi = min(max(hi, float(every.max()) + 0.1), hi + span)
        fig, axes = plt.subplots(1, len(steps), figsize=(3.2 * len(steps), 3.4), squeeze=False)
        for ax, s in zip(axes[0], steps):
            x = snapshots[s].detach().cpu()
            ax.scatter(real[:, 0], real[:, 1], s=2, c="0.75", label="data")
            ax.scatter(x[:, 0], x[:, 1], s=2, c="C3", alpha=0.6, label="generated")
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_aspect("equal")
            ax.set_title(f"step {s}")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][0].legend(markerscale=4, loc="lower left", fontsize=7)
        fig.suptitle(title)
        return save_figure(fig, path)
    import torchvision.utils as vutils

    ncol = min(16, first.shape[0])
    lo, hi = data.value_range
    shape = data.shape if data.kind == "image" else (1,) + (flat_image_side(first[0].numel()),) * 2
    rows = [((snapshots[s][:ncol].detach().float().cpu().reshape(-1, *shape) - lo) / (hi - lo)).clamp(0, 1)
            for s in steps]
    grid = vutils.make_grid(torch.cat(rows), nrow=ncol, padding=2, pad_value=1.0)
    fig, ax = plt.subplots(figsize=(0.55 * ncol + 1, 0.6 * len(steps) + 1))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", interpolation="nearest")
    side = shape[-1] + 2
    ax.set_yticks([side * (i + 0.5) for i in range(len(steps))], [f"step {s}" for s in steps])
    ax.set_xticks([])
    ax.set_title(title)
    return save_figure(fig, path)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White, "Sampling generative networks", 2016).

    z0, z1 (L,) and t (T,) -> (T, L); falls back to linear interpolation for (anti)parallel ends.
    """
    a = z0 / z0.norm()
    b = z1 / z1.norm()
    omega = torch.arccos((a * b).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t.reshape(-1, 1)
    if so.abs() < 1e-6:
        return (1 - t) * z0 + t * z1
    return torch.sin((1 - t) * omega) / so * z0 + torch.sin(t * omega) / so * z1


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation: z0, z1 (L,) and t (T,) -> (T, L)."""
    t = t.reshape(-1, 1)
    return (1 - t) * z0 + t * z1


def latent_interpolation(model, data, path, *, pairs: int = 4, points: int = 9, seed: int = 0,
                         spherical: bool = True) -> Path:
    """Decoded paths between random latent pairs: image rows, or 2-D curves over the data."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(2 * pairs, model.latent_dim, generator=gen)
    t = torch.linspace(0, 1, points)
    interp = slerp if spherical else lerp
    paths = torch.stack([interp(z[2 * i], z[2 * i + 1], t) for i in range(pairs)])  # (P, T, L)
    with torch.no_grad():
        x = model.decode(paths.to(model.device)).detach().cpu()  # (P, T, *shape)
    kind = "spherical" if spherical else "linear"
    if data.kind == "image" or (x.dim() == 3 and flat_image_side(x.shape[-1])):
        return image_grid(x.reshape(pairs * points, *x.shape[2:]), path, nrow=points,
                          value_range=data.value_range, title=f"{kind} latent interpolation")
    x = x.reshape(pairs, points, -1)
    plt = pyplot()
    if x.shape[-1] == 1:  # 1-D data: each path's value along the interpolation
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for i in range(pairs):
            ax.plot(t.numpy(), x[i, :, 0].numpy(), "-o", ms=3)
        ax.set_xlabel("position on the path")
        ax.set_ylabel("x")
        ax.set_title(f"{kind} latent interpolation")
        return save_figure(fig, path)
    real = data.test[:2000].detach().cpu()
    real = real.reshape(real.shape[0], -1)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(real[:, 0], real[:, 1], s=2, c="0.75")
    for i in range(pairs):
        ax.plot(x[i, :, 0], x[i, :, 1], "-o", ms=3)
    if x.shape[-1] == 2:
        ax.set_aspect("equal")
        ax.set_title(f"{kind} latent interpolation")
    else:
        ax.set_xlabel("dim 1")
        ax.set_ylabel("dim 2")
        ax.set_title(f"{kind} latent interpolation (first 2 of {x.shape[-1]} dims)")
    return save_figure(fig, path)


def class_histogram(counts, path, *, title: str = "classes of the samples") -> Path:
    """Bar chart of how many samples a classifier puts in each class."""
    plt = pyplot()
    counts = [int(c) for c in counts]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(range(len(counts)), counts, color="C0")
    ax.axhline(sum(counts) / len(counts), color="k", ls="--", lw=1, label="uniform")
    ax.set_xticks(range(len(counts)))
    ax.set_xlabel("class")
    ax.set_ylabel("samples")
    ax.legend()
    ax.set_title(title)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- autoencoders
def reconstructions(x: torch.Tensor, recon: torch.Tensor, path, *, shape=None, value_range=(0.0, 1.0),
                    title: str = "originals (odd rows) and reconstructions (even rows)",
                    per_row: int = 10) -> Path:
    """Originals and their reconstructions in alternating rows: x, recon (N, *shape)."""
    x, recon = x.detach().float().cpu(), recon.detach().float().cpu()
    if shape is not None:
        x, recon = x.reshape(-1, *shape), recon.reshape(-1, *shape)
    n = (x.shape[0] // per_row) * per_row or x.shape[0]
    per_row = min(per_row, n)
    rows = []
    for start in range(0, n, per_row):
        rows += [x[start:start + per_row], recon[start:start + per_row]]
    return image_grid(torch.cat(rows), path, nrow=per_row, value_range=value_range, title=title)


def latent_scatter(codes: torch.Tensor, path, *, labels: torch.Tensor | None = None,
                   title: str | None = None) -> Path:
    """Codes (N, L) in the plane, coloured by label: L = 2 as is, L = 1 against a uniform
    jitter (the vertical axis carries no information), else the first two principal
    components (the axis labels say which)."""
    plt = pyplot()
    z = codes.detach().double().cpu().reshape(codes.shape[0], -1)
    if z.shape[1] == 2:
        xy, axes = z, ("z1", "z2")
    elif z.shape[1] == 1:
        g = torch.Generator().manual_seed(0)
        xy = torch.cat([z, torch.rand(z.shape[0], 1, generator=g, dtype=z.dtype)], dim=1)
        axes = ("z1", "jitter (no meaning)")
    else:
        zc = z - z.mean(0)
        _, s, vh = torch.linalg.svd(zc, full_matrices=False)
        xy = zc @ vh[:2].T
        var = (s ** 2 / (s ** 2).sum())[:2]
        axes = (f"PC1 ({100 * var[0]:.0f}% var.)", f"PC2 ({100 * var[1]:.0f}% var.)")
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if labels is not None:
        lab = labels.detach().cpu().numpy()
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=lab, cmap="tab10", s=3, alpha=0.7)
        fig.colorbar(sc, ax=ax, ticks=sorted(set(lab.tolist()))[:20], label="label")
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.7)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def encoded_interpolation(model, x: torch.Tensor, path, *, points: int = 9, value_range=(0.0, 1.0),
                          title: str = "interpolation between encoded images") -> Path:
    """Rows of decode((1 - t) encode(a) + t encode(b)) for consecutive pairs (a, b) of x (2P, ...)."""
    pairs = x.shape[0] // 2
    t = torch.linspace(0, 1, points, device=x.device).reshape(1, -1, 1)  # (1, T, 1)
    with torch.no_grad():
        z = model.encode(x[: 2 * pairs]).reshape(pairs, 2, 1, -1)  # (P, 2, 1, L)
        paths = (1 - t) * z[:, 0] + t * z[:, 1]  # (P, T, L)
        out = model.decode(paths).detach().cpu()  # (P, T, *shape)
    return image_grid(out.reshape(pairs * points, *out.shape[2:]), path, nrow=points,
                      value_range=value_range, title=title)
