"""The feature network for sample metrics: a small classifier trained here, on the data set.

Frechet and kernel distances, precision/recall and density/coverage compare samples with
real data in the feature space of a network. The Inception network of FID (Heusel et al.,
2017) was trained on ImageNet and cannot be downloaded offline; its numbers also do not
transfer to 28x28 digits. probgen instead trains a small classifier on the training split
of the data set itself -- a CNN for 28x28 and 32x32 images, an MLP for anything else (the
8x8 digits) -- and uses its penultimate layer (128 units). Its numbers are named for it
(``frechet_distance``, not FID) and are comparable only between models scored with the same
network; its test accuracy is reported beside them.

The network sees pixels in [0, 1]: data in [-1, 1] are mapped there first, so a GAN trained
on [-1, 1] pixels and a VAE trained on [0, 1] pixels of the same data set share one network.
It is trained once per data set and cached in ``$PROBGEN_CACHE/features`` (default
``~/.cache/probgen/features``) as ``<dataset>-<hash>.pt``, where the hash covers the
training pixels, the labels and the architecture; the file is written atomically and loaded
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from probgen.errors import DataError

__all__ = ["FeatureNet", "FeatureNetwork", "feature_network", "canonical_pixels", "cache_dir",
           "ARCH_VERSION"]

ARCH_VERSION = 1
FEATURE_DIM = 128


class FeatureNet(nn.Module):
    """x (B, *shape) in [0, 1] -> class logits (B, num_classes); ``features`` -> (B, 128).

    28x28/32x32 images: two 3x3 conv layers (32, 64 channels) with ReLU and 2x2 max-pooling,
    a 128-unit ReLU layer (the features), a linear classifier. Other shapes: an MLP
    D -> 256 -> 128 (the features) -> classes.
    """

    def __init__(self, shape, num_classes: int):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        conv = len(self.shape) == 3 and self.shape[1] == self.shape[2] and self.shape[1] in (28, 32)
        if conv:
            c, h, _ = self.shape
            side = h // 4
            self.body = nn.Sequential(
                nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(64 * side * side, FEATURE_DIM), nn.ReLU(),
            )
        else:
            d = math.prod(self.shape)
            self.body = nn.Sequential(
                nn.Flatten(), nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, FEATURE_DIM), nn.ReLU(),
            )
        self.head = nn.Linear(FEATURE_DIM, num_classes)
        self.arch = "cnn" if conv else "mlp"
        self.num_classes = int(num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(-1, *self.shape))  # (B, *shape) -> (B, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class FeatureNetwork:
    """A trained feature network and what the report says about it.

    Attributes
    ----------
    net : FeatureNet (eval mode)
    accuracy : float
        Test-split accuracy of its classifier head.
    name : str
        E.g. ``"probgen-cnn-mnist"``: the name the metrics carry.
    value_range : (float, float)
        Range of the inputs it is given; mapped to [0, 1] inside :meth:`features`.
    path : Path or None
        The cache file.
    """

    net: FeatureNet
    accuracy: float
    name: str
    value_range: tuple[float, float]
    path: Path | None = None

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.value_range
        return (x.float() - lo) / (hi - lo)

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Penultimate-layer features: (N, *shape) -> (N, 128), float64 on the CPU."""
        dev = next(self.net.parameters()).device
        out = [self.net.features(self._unit(x[i:i + batch_size]).to(dev)).double().cpu()
               for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out) if out else torch.empty(0, FEATURE_DIM, dtype=torch.float64)

    @torch.no_grad()
    def classify(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Predicted classes: (N, *shape) -> (N,) long."""
        dev = next(self.net.parameters()).device
        out = [self.net(self._unit(x[i:i + batch_size]).to(dev)).argmax(1).cpu()
               for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def cache_dir() -> Path:
    """``$PROBGEN_CACHE/features``, default ``~/.cache/probgen/features`` (created on use)."""
    root = os.environ.get("PROBGEN_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "probgen") / "features"


def _fingerprint(x: torch.Tensor, y: torch.Tensor, shape, epochs: int) -> str:
    h = hashlib.sha256()
    h.update(f"v{ARCH_VERSION}|{tuple(shape)}|{epochs}|".encode())
    # pixels in [0, 1] rounded to 1/255: the same images give the same key whether a run
    # stored them in [0, 1] or [-1, 1] (float round-off would otherwise retrain the network)
    h.update((x.detach().float().cpu() * 255).round().to(torch.int16).contiguous().numpy().tobytes())
    h.update(y.detach().long().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _default_epochs(n: int) -> int:
    # about 60k examples seen: 2 epochs of MNIST, 18 of mnist-5k, 48 of digits
    return max(1, min(100, math.ceil(60_000 / max(n, 1))))


def feature_network(data, *, epochs: int | None = None, device="cpu", cache: bool = True,
                    verbose: bool = False) -> FeatureNetwork:
    """The feature network of ``data``: loaded from the cache, or trained and cached.

    Parameters
    ----------
    data : Dataset
        Needs ``train_labels`` and ``test_labels`` (a classifier is trained on them).
    epochs : int, optional
        Passes over the training split (default: enough for ~60,000 examples, 1 to 100).
    cache : bool
        Read and write the cache (``False``: always train, write nothing).
    """
    y = data.labels("train", required_for="the feature network of the sample metrics")
    yt = data.labels("test", required_for="the feature network's test accuracy")
    vr = tuple(float(v) for v in data.value_range)
    x = canonical_pixels(data)
    num_classes = int(data.num_classes or int(y.max()) + 1)
    epochs = int(epochs or _default_epochs(x.shape[0]))
    net = FeatureNet(data.shape, num_classes)
    name = f"probgen-{net.arch}-{data.name}"
    path = cache_dir() / f"{_safe(data.name)}-{_fingerprint(x, y, data.shape, epochs)}.pt"
    if not cache:
        return _trained(net, data, x, y, yt, epochs, name, vr, None, device, verbose)
    # one process trains a given network at a time; another that asks for it meanwhile (a
    # second comparison, the demo's two processes) waits and then loads it
    with _exclusive(path):
        if path.exists():
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
                net.load_state_dict(payload["state_dict"])
                net.eval()
                return FeatureNetwork(net.to(device), float(payload["accuracy"]), name, vr, path)
            except Exception:  # a corrupt or foreign cache file: retrain and overwrite it
                pass
        return _trained(net, data, x, y, yt, epochs, name, vr, path, device, verbose)


@contextlib.contextmanager
def _exclusive(path: Path):
    """Holds an exclusive lock on ``<cache>/.locks/<name>`` (where the platform has ``fcntl``)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, at worst two processes train the same network
        yield
        return
    lock = path.parent / ".locks" / (path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _trained(net, data, x, y, yt, epochs, name, vr, path, device, verbose) -> FeatureNetwork:
    """Train ``net`` on ``x``, measure its test accuracy and, with a ``path``, cache it."""
    _train(net, x, y.cpu(), epochs=epochs, verbose=verbose)
    net.eval()
    fn = FeatureNetwork(net, 0.0, name, vr, path)
    # accuracy on the test images in the same scale as the training images (FeatureNetwork maps
    # value_range to [0, 1]; these are there already)
    test = canonical_pixels(data, "test")
    with torch.no_grad():
        pred = [net(test[i:i + 1000]).argmax(1) for i in range(0, test.shape[0], 1000)]
    fn.accuracy = float((torch.cat(pred) == yt.cpu()).double().mean()) if pred else 0.0
    if path is not None:
        from probgen.runs import atomic_write_bytes

        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save({"state_dict": net.state_dict(), "accuracy": fn.accuracy, "name": name,
                    "epochs": epochs, "arch_version": ARCH_VERSION}, buf)
        atomic_write_bytes(path, buf.getvalue())
    fn.net = net.to(device)
    return fn


def canonical_pixels(data, split: str = "train") -> torch.Tensor:
    """The images of ``split`` as the feature network learns them: in [0, 1], and, where the data
    have L known levels, on the grid k / (L - 1) whatever the run's representation, so that
    raw pixels (k / 255), dequantized ones (stored as k / 256), [-1, 1] pixels and the grey
    images behind dynamic binarisation give one network, trained once per data set, and the
    sample metrics of every row of a comparison are taken in the same features. (A binarised
    test split stays 0/1: those are its images.)"""
    lo, hi = (float(v) for v in data.value_range)
    raw = data.split(split).float().cpu()
    x = (raw - lo) / (hi - lo)
    levels = int(data.levels or 0)
    if levels < 2:
        return x
    if data.bin_width:  # dequantized: level k at rest at lo + k * bin_width
        k = torch.round((raw - lo) / float(data.bin_width))
    else:
        k = torch.round(x * (levels - 1))
    return k.clamp_(0, levels - 1) / (levels - 1)


def _train(net: FeatureNet, x: torch.Tensor, y: torch.Tensor, *, epochs: int, verbose: bool,
           batch_size: int = 128, lr: float = 1e-3) -> None:
    if x.shape[0] < 2:
        raise DataError(f"the feature network needs at least 2 labelled training examples; got {x.shape[0]}.")
    g = torch.Generator().manual_seed(0)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)  # the same network for the same data, whatever the caller's seed
    try:
        net.train()
        for m in net.modules():  # deterministic initialisation
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss()
        for epoch in range(epochs):
            perm = torch.randperm(x.shape[0], generator=g)
            total = 0.0
            for i in range(0, x.shape[0], batch_size):
                idx = perm[i:i + batch_size]
                loss = loss_fn(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach().item() * idx.numel()
            if verbose:
                print(f"feature network epoch {epoch + 1}/{epochs}: loss {total / x.shape[0]:.4f}")
    finally:
        torch.random.set_rng_state(state)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name))[-60:]
