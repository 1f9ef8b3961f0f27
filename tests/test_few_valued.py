"""Real-valued vectors with a feature of few values (a coded category, a count): a density
can grow without bound on them, and the run, the verdict and the report say so."""

import json

import numpy as np
import torch

import probgen
from probgen import verdict as vd
from probgen.data import Dataset, load_dataset


def _array(tmp_path, n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(size=n), rng.integers(0, 2, size=n), rng.normal(size=n)])
    path = tmp_path / "mixed.npy"
    np.save(path, x.astype(np.float32))
    return path


def test_a_feature_of_few_values_is_found_in_the_training_split(tmp_path):
    ds = load_dataset(str(_array(tmp_path)))
    assert ds.few_valued_features() == [(1, 2)]
    note = ds.few_valued_note()
    assert "feature 1 takes 2 values" in note and "--bin-width" in note
    # continuous features, images, toy sets and dequantized values have none
    assert load_dataset("ring8").few_valued_features() == []
    assert load_dataset("digits").few_valued_features() == []
    assert load_dataset(str(_array(tmp_path)), dequantize="on", bin_width=0.5).few_valued_note() is None
    x = torch.randn(100, 2)
    cont = Dataset(name="c", train=x, val=x[:10], test=x[:10], shape=(2,), kind="vector")
    assert cont.few_valued_features() == []
    # too few examples to tell a category from a sample: nothing is said
    small = Dataset(name="s", train=x[:20].round(), val=x[:5], test=x[:5], shape=(2,), kind="vector")
    assert small.few_valued_features() == []


def test_training_on_such_data_says_so(tmp_path, capsys):
    probgen.train("gmm", str(_array(tmp_path)), tmp_path / "run", components=2, progress=False,
                  figures=False)
    assert "note: in " in capsys.readouterr().out


def test_the_verdict_puts_the_caveat_beside_the_continuous_likelihoods():
    caveat = "in x.npy, feature 1 takes 2 values in the training split: a density can grow"
    res = {"models": {"gmm": {"metrics": {"log_likelihood": {
        "value": 1.5, "stderr": 0.1, "unit": "nats", "representation": "continuous",
        "estimator": "exact"}}}}, "data_caveats": {"continuous": caveat}}
    text = vd.verdict(res)
    assert "only gmm has a likelihood" in text
    assert "Note: In x.npy, feature 1 takes 2 values in the training split" in text
    del res["data_caveats"]
    assert "Note:" not in vd.verdict(res)


def test_compare_records_the_caveat(tmp_path):
    res = probgen.compare(str(_array(tmp_path)), ["gmm(components=2)"], tmp_path / "cmp",
                          budget=0.05, eval_limit=40, quiet=True)
    assert "feature 1 takes 2 values" in res["data_caveats"]["continuous"]
    saved = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert saved["data_caveats"] == res["data_caveats"]
    assert "Note: In " in (tmp_path / "cmp" / "report.md").read_text()
