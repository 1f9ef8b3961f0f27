"""Colour images from a user's .npz (channel-last uint8, understood without a flag) and
Fashion-MNIST from IDX files in torchvision's layout: read as torchvision and numpy read them,
8-bit so dequantizable, through every model's training and through compare."""

import gzip
import json
import math

import numpy as np
import pytest
import torch

from probgen.cli import main
from probgen.data import load_dataset
from probgen.errors import DataError, DataNotFoundError

IDX = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
       "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def _colour(n=60, seed=0) -> np.ndarray:
    """(n, 32, 32, 3) uint8: 8 x 8 blocks of colour, so that a model has something to learn."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8).repeat(4, 1).repeat(4, 2)


def _all(ds) -> torch.Tensor:
    return torch.cat([ds.train, ds.val, ds.test])


# ----------------------------------------------------------------------------- colour .npz
def test_channel_last_colour_npz_is_read_as_8bit_images(tmp_path):
    x = _colour()
    np.savez(tmp_path / "c.npz", x=x)
    ds = load_dataset(str(tmp_path / "c.npz"), dequantize="auto")
    assert ds.kind == "image" and ds.shape == (3, 32, 32) and ds.dim == 3072
    assert ds.representation == "dequantized-8bit" and ds.bin_width == pytest.approx(1 / 256)
    # the same images as numpy's own transpose to channel-first, in some order
    want = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    got = _all(load_dataset(str(tmp_path / "c.npz")))
    key = lambda t: sorted(tuple(r.tolist()) for r in (t.reshape(t.shape[0], -1) * 255).round().long())  # noqa: E731
    assert key(got) == key(want)
    # stored channel-first, the same file reads the same
    np.savez(tmp_path / "f.npz", x=x.transpose(0, 3, 1, 2))
    assert torch.equal(_all(load_dataset(str(tmp_path / "f.npz"))), got)


def test_ambiguous_layouts_are_refused_with_what_to_do(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 3, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "a.npy", x)
    with pytest.raises(DataError, match=r"reads both as channel-first .*3 channel\(s\) of 4 x 4.*"
                       r"channel-last .*4 channel\(s\) of 3 x 4.*layout='NCHW'"):
        load_dataset(str(tmp_path / "a.npy"))
    np.savez(tmp_path / "first.npz", x=x, layout="NCHW")
    assert load_dataset(str(tmp_path / "first.npz")).shape == (3, 4, 4)
    np.savez(tmp_path / "last.npz", x=x, layout="nhwc")
    last = load_dataset(str(tmp_path / "last.npz"))
    assert last.shape == (4, 3, 4)
    want = sorted(tuple(r.tolist()) for r in x.transpose(0, 3, 1, 2).reshape(20, -1))
    got = (_all(last).reshape(20, -1) * 255).round().long()
    assert sorted(tuple(r.tolist()) for r in got) == want
    np.savez(tmp_path / "bad.npz", x=x, layout="CHWN")
    with pytest.raises(DataError, match=r"\[layout\] must be the string 'NCHW'.*'NHWC'.*got 'CHWN'"):
        load_dataset(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "wrong.npz", x=np.zeros((5, 3, 8, 8), np.uint8), layout="NHWC")
    with pytest.raises(DataError, match="read as NHWC has 8 channels"):
        load_dataset(str(tmp_path / "wrong.npz"))


@pytest.mark.parametrize("model,opts", [
    ("flow", ["--epochs", "1", "--transforms", "1", "--hidden", "32"]),
    ("gmm", ["--components", "2"]),
    ("ppca", ["--latent-dim", "4"]),
    ("vae", ["--epochs", "1", "--likelihood", "gaussian"]),
    ("gan", ["--steps", "2", "--batch-size", "16"]),
])
def test_colour_npz_trains_every_model(tmp_path, model, opts):
    np.savez(tmp_path / "c.npz", x=_colour(40))
    out = tmp_path / model
    assert main(["train", model, "--data", str(tmp_path / "c.npz"), "--out", str(out), "--device",
                 "cpu", "--no-figures", "--quiet", *opts]) == 0
    assert main(["eval", str(out), "--device", "cpu", "--quiet", "--n-samples", "8", "--k", "2"]) == 0
    res = json.loads((out / "eval.json").read_text())
    if model != "gan":
        ll = res["metrics"]["log_likelihood" if model != "vae" else "elbo"]
        assert ll["representation"] == "dequantized-8bit" and ll["estimator"] == "dequantization bound"
        assert ll["bits_per_dim"] == pytest.approx(-ll["value"] / (3072 * math.log(2)))


@pytest.mark.slow
def test_colour_npz_compares(tmp_path):
    np.savez(tmp_path / "c.npz", x=_colour(60))
    out = tmp_path / "cmp"
    assert main(["compare", "--data", str(tmp_path / "c.npz"), "--models",
                 "flow(epochs=1,transforms=1,hidden=[32]),gmm(components=2),ppca(latent_dim=4)",
                 "--budget", "0.5", "--out", str(out), "--device", "cpu", "--quiet", "--k", "2"]) == 0
    rows = json.loads((out / "results.json").read_text())
    text = json.dumps(rows)
    assert "dequantized-8bit" in text and "bits_per_dim" in text


# ----------------------------------------------------------------------------- Fashion-MNIST
def _idx(a: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array, written from the format's definition."""
    return bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape) + a.tobytes()


def _torchvision_fashion(root, n_train=120, n_test=30, seed=0) -> dict:
    """Fashion-MNIST files as torchvision keeps them: FashionMNIST/raw/ holding each IDX file
    both gzipped (as downloaded) and unpacked (what torchvision reads)."""
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
              "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8)}
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for key, a in arrays.items():
        (raw / IDX[key]).write_bytes(_idx(a))
        (raw / (IDX[key] + ".gz")).write_bytes(gzip.compress(_idx(a)))
    return arrays


def test_fashion_mnist_reads_as_torchvision_does(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    arrays = _torchvision_fashion(tmp_path)
    ds = load_dataset("fashion-mnist", root=tmp_path)
    tv = torchvision.datasets.FashionMNIST(str(tmp_path), train=False, download=False)
    assert torch.equal(ds.test[:, 0], tv.data.float() / 255)  # the official test split, in order
    assert torch.equal(ds.test_labels, tv.targets)
    tv_train = torchvision.datasets.FashionMNIST(str(tmp_path), train=True, download=False)
    got = sorted(x.tobytes() for x in (torch.cat([ds.train, ds.val])[:, 0] * 255).round().to(torch.uint8).numpy())
    assert got == sorted(x.tobytes() for x in tv_train.data.numpy())
    deq = load_dataset("fashion-mnist", root=tmp_path, dequantize="auto")
    assert deq.representation == "dequantized-8bit" and deq.shape == (1, 28, 28)
    assert torch.equal(deq.test * 256, ds.test * 255)  # the levels k, kept as k / 256
    assert ds.extra["classes"][0] == "T-shirt/top" and ds.num_classes == 10
    # gzipped files alone (as a manual download leaves them) read the same
    only_gz = tmp_path / "gz"
    (only_gz / "fashion-mnist").mkdir(parents=True)
    for stem in IDX.values():
        (only_gz / "fashion-mnist" / (stem + ".gz")).write_bytes(
            (tmp_path / "FashionMNIST" / "raw" / (stem + ".gz")).read_bytes())
    assert torch.equal(load_dataset("fashion-mnist", root=only_gz).test, ds.test)
    assert arrays["test_images"].shape[0] == ds.test.shape[0]


def test_fashion_mnist_missing_files_name_them_and_where_to_put_them(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"Fashion-MNIST files not found\. Looked for "
                       r"train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                       r"t10k-labels-idx1-ubyte \(each may end in \.gz\).*FashionMNIST/raw.*--data-root DIR"):
        load_dataset("fashion-mnist", root=tmp_path)
    _torchvision_fashion(tmp_path)
    for p in (tmp_path / "FashionMNIST" / "raw").glob("t10k-images*"):
        p.unlink()
    with pytest.raises(DataNotFoundError, match=r"Fashion-MNIST is incomplete in .*FashionMNIST/raw: "
                       r"missing t10k-images-idx3-ubyte"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_from_the_command_line(tmp_path, capsys):
    _torchvision_fashion(tmp_path / "data")
    out = tmp_path / "gmm"
    assert main(["train", "gmm", "--data", "fashion-mnist", "--data-root", str(tmp_path / "data"),
                 "--out", str(out), "--device", "cpu", "--no-figures", "--quiet", "--components", "2",
                 "--covariance-type", "diag"]) == 0
    assert main(["eval", str(out), "--device", "cpu", "--quiet", "--n-samples", "8"]) == 0
    ll = json.loads((out / "eval.json").read_text())["metrics"]["log_likelihood"]
    assert ll["representation"] == "dequantized-8bit" and math.isfinite(ll["bits_per_dim"])
    assert main(["train", "gmm", "--data", "fashion-mnist", "--data-root", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "g"), "--device", "cpu", "--quiet"]) != 0
    assert "does not exist" in capsys.readouterr().err
