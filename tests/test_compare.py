"""probgen compare: trains, scores every model with the same code, writes the report."""

import json

import pytest

from probgen.cli import main
from probgen.comparison import REFERENCE_ROW
from probgen.errors import ConfigError


def test_compare_on_a_toy_density_writes_table_and_report(tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--data", "ring8", "--models", "gmm", "--budget", "0.2",
                 "--out", str(out), "--eval-limit", "500"]) == 0
    results = json.loads((out / "results.json").read_text())
    gmm = results["models"]["gmm"]["metrics"]
    # the mixture's exact likelihood sits next to the data-generating density's
    assert abs(gmm["log_likelihood"]["value"] - gmm["true_log_likelihood"]["value"]) < 0.05
    assert REFERENCE_ROW in results["models"]
    assert results["model_choice"]["bic_choice"] == 8  # ring8 has eight components (BIC only: K > 4)
    md = (out / "report.md").read_text()
    assert "| gmm |" in md and REFERENCE_ROW in md and "BIC chooses K = 8" in md
    # the report states the choice in the words results.json holds
    assert results["model_choice"]["loo_choice"] is None
    assert f"\n{results['model_choice']['statement']}\n" in md
    assert results["time"]["model_choice_s"] <= results["time"]["model_choice_share_s"]
    assert (out / "report.html").read_text().count("<table") >= 2

    # reuse the trained run instead of training again; a second compare into the same folder
    # is refused unless --overwrite
    run = out / "runs" / "gmm"
    with pytest.raises(ConfigError, match="already holds a comparison"):
        from probgen.comparison import CompareSpec, compare

        compare(CompareSpec(data="ring8", models=["gmm"], out=out, runs={"gmm": run}))
    assert main(["compare", "--data", "ring8", "--models", "gmm", "--runs", f"gmm={run}",
                 "--out", str(out), "--overwrite", "--eval-limit", "200",
                 "--no-model-choice"]) == 0
    # rescoring the same run gives the same sample metrics: evaluation is seeded with --seed
    again = json.loads((out / "results.json").read_text())["models"]["gmm"]["metrics"]
    assert again["reverse_kl"]["value"] == gmm["reverse_kl"]["value"]
    assert again["high_quality_fraction"]["value"] == gmm["high_quality_fraction"]["value"]
    skipped = json.loads((out / "results.json").read_text())["model_choice"]
    assert "--no-model-choice" in skipped["statement"] and "per_k" not in skipped
    assert skipped["statement"] in (out / "report.md").read_text()


def test_compare_unknown_model_is_a_clear_error(tmp_path, capsys):
    assert main(["compare", "--data", "ring8", "--models", "gmm,vea", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown model(s) 'vea'" in err and "Did you mean 'vae'" in err


def test_compare_on_images_scores_reference_and_models_with_the_same_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBGEN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cmp"
    assert main(["compare", "--data", "digits", "--models", "ppca", "--budget", "0.2",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    ref = results["models"][REFERENCE_ROW]["metrics"]
    ppca = results["models"]["ppca"]["metrics"]
    # digits: 180 validation examples; every row draws that many and meets as many test examples
    for row in (ref, ppca):
        assert row["frechet_distance"]["extra"]["n_generated"] == 180
        assert row["frechet_distance"]["extra"]["n_real"] == 180
    # real held-out digits lie on the test digits' manifold, PPCA's noisy samples less often
    # (with 180 points the Frechet distance's sampling noise is as large as the gap, on seeds
    # 0-2 either can be lower; precision and coverage differ by 0.35 or more on all three)
    assert ref["precision"]["value"] > ppca["precision"]["value"] + 0.2
    assert ref["coverage"]["value"] > ppca["coverage"]["value"] + 0.2
    md = (out / "report.md").read_text()
    assert "validation split" in md and "feature space of probgen-mlp-digits" in md


def test_model_options_in_parentheses_and_their_errors():
    from probgen.comparison import parse_model_item, parse_models

    assert parse_model_item("vae(likelihood=gaussian, latent_dim=2, hidden=[64,32])") == (
        "vae", {"likelihood": "gaussian", "latent_dim": "2", "hidden": "64,32"})
    rows = parse_models("vae(latent-dim=2),gan,vae(latent_dim=8)")
    assert [(r.name, r.model, r.options) for r in rows] == [
        ("vae", "vae", {"latent_dim": "2"}), ("gan", "gan", {}), ("vae-2", "vae", {"latent_dim": "8"})]
    # a program class named like a built-in row gets its own run folder on any file system
    rows = parse_models("vae,examples/pyro_vae.py:VAE")
    assert [r.name for r in rows] == ["vae", "VAE-2"]
    with pytest.raises(ConfigError, match="unbalanced parentheses"):
        parse_models("vae(latent_dim=2,gan")
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_models("vae(2)")


def test_compare_checks_every_option_before_training(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--data", "ring8", "--models", "gmm,vae(latnet_dim=2)", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "vae has no option 'latnet_dim'" in err and "Did you mean 'latent_dim'" in err
    assert main(["compare", "--data", "ring8", "--models", "gmm,vae(likelihood=poisson)", "--out", str(out)]) == 2
    assert "invalid choice: 'poisson'" in capsys.readouterr().err
    assert not out.exists()


def test_row_weights_split_the_budget_and_bad_weights_are_refused(tmp_path, capsys):
    import numpy as np

    import probgen

    path = tmp_path / "blobs.npy"  # 1,000 points: 200 test, 100 validation
    g = np.random.default_rng(0)
    np.save(path, np.concatenate([g.normal(-2, 0.5, (500, 2)), g.normal(2, 0.5, (500, 2))]))
    res = probgen.compare(str(path), ["gmm", "ppca(weight=3)"], tmp_path / "cmp", budget=0.2,
                          model_choice=False)
    t = res["time"]
    assert t["weights"] == {"gmm": 1.0, "ppca": 3.0}
    assert t["share_s"]["gmm"] == pytest.approx(t["budget_s"] / 4)
    # ppca, the last row, gets what gmm left: its own 3/4 and the unused part of gmm's 1/4
    assert t["share_s"]["ppca"] == pytest.approx(t["budget_s"] - t["train_s"]["gmm"])
    assert "weight" not in json.loads((tmp_path / "cmp" / "runs" / "ppca" / "config.json").read_text())
    out = tmp_path / "bad"
    for bad in ("0", "-1", "two", "nan"):
        assert main(["compare", "--data", "ring8", "--models", f"gmm,gan(weight={bad})",
                     "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"gan(weight={bad})" in err and "positive number" in err
    assert not out.exists()


@pytest.mark.slow  # about a minute: run with -m slow
def test_every_model_follows_its_data_and_unused_budget_flows_on(tmp_path):
    """grid25 with no per-model options: the VAE takes a Gaussian likelihood and no binarisation
    by itself; PPCA's latent size sits below the data's dimension; the quick models train
    first and the time they leave goes to the others."""
    import probgen

    out = tmp_path / "cmp"
    res = probgen.compare("grid25", ["vae", "gan", "gmm", "ppca"], out, budget=0.2, limit=1000,
                          eval_limit=300, k=10)
    models = res["models"]
    assert models["gmm"]["metrics"]["log_likelihood"]["value"] is not None
    assert models["ppca"]["metrics"]["log_likelihood"]["value"] is not None
    assert models["vae"]["metrics"]["elbo"]["value"] <= models["vae"]["metrics"]["iwae"]["value"]
    assert models["gan"]["metrics"]["modes_covered"]["value"] is not None
    vae_cfg = json.loads((out / "runs" / "vae" / "config.json").read_text())
    assert vae_cfg["likelihood"] == "gaussian" and vae_cfg["data_options"]["binarize"] == "none"
    assert vae_cfg["defaults_from_data"]["likelihood"]["value"] == "gaussian"
    assert json.loads((out / "runs" / "ppca" / "config.json").read_text())["latent_dim"] == 1
    t = res["time"]
    # gmm and ppca trained first with a quarter each, then the GAN (a fixed number of steps);
    # what they left went to the VAE, which trains until its share is spent
    assert list(t["share_s"]) == ["gmm", "ppca", "gan", "vae"]
    assert t["share_s"]["gmm"] == pytest.approx(t["budget_s"] / 4)
    assert t["share_s"]["vae"] > t["budget_s"] / 4 + 1
    assert t["train_total_s"] < t["budget_s"] + 10 and t["score_total_s"] > 0
    assert set(res["trained"]) == {"vae", "gan", "gmm", "ppca"}  # the models, in memory


def test_compare_reuses_only_finished_runs(tmp_path, capsys):
    run = tmp_path / "gmm"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "gmm", "data": "ring8"}))
    assert main(["compare", "--data", "ring8", "--models", "gmm", "--runs", f"gmm={run}",
                 "--out", str(tmp_path / "cmp")]) == 2
    assert "has not finished training and has no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()  # refused before anything is written


def test_compare_and_training_import_no_command_line():
    import subprocess
    import sys

    code = ("import sys, probgen.comparison, probgen.training, probgen.demo; "
            "print('probgen.cli' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_runs_that_leave_the_pixel_range_unset_pair_with_those_that_name_it(tmp_path):
    """A program's data options may leave value_range unset where a built-in model names
    (0, 1): the same representation, so their likelihoods are paired."""
    import probgen

    prog = tmp_path / "p.py"
    prog.write_text(
        "import pyro, pyro.distributions as dist, torch\n"
        "class Flat:\n"
        "    data_options = {'binarize': 'dynamic'}\n"
        "    def model(self, x):\n"
        "        x = x.reshape(x.shape[0], -1)\n"
        "        lo = pyro.param('lo', torch.zeros(x.shape[1]))\n"
        "        with pyro.plate('data', x.shape[0]):\n"
        "            z = pyro.sample('z', dist.Normal(0.0, 1.0))\n"
        "            pyro.sample('x', dist.Bernoulli(logits=lo + 0 * z[..., None]).to_event(1), obs=x)\n"
        "    def guide(self, x):\n"
        "        with pyro.plate('data', x.shape[0]):\n"
        "            pyro.sample('z', dist.Normal(0.0, 1.0))\n")
    res = probgen.compare("digits", ["vae(epochs=1,hidden=[16],latent_dim=2)", f"{prog}:Flat(epochs=1)"],
                          tmp_path / "cmp", budget=0.1, eval_limit=50, k=5)
    assert res["data_options"]["vae"]["value_range"] == [0.0, 1.0]
    assert res["data_options"]["Flat"].get("value_range") is None
    pair = res["paired_differences"][0]
    assert pair["value"] is not None and pair["stderr"] > 0


def test_report_says_what_results_json_holds(tmp_path):
    """A real (tiny) comparison: the verdict, the likelihood cells, the flags and each row's
    effort in report.md are those results.json holds, and the report's figures are there."""
    from probgen import verdict as vd

    out = tmp_path / "cmp"
    assert main(["compare", "--data", "ring8", "--models", "gmm,gan", "--budget", "0.15",
                 "--out", str(out), "--eval-limit", "500", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    md = (out / "report.md").read_text()
    lines = md.splitlines()
    assert lines[2] == vd.verdict(results)  # the first paragraph, recomputed from the file
    assert "gmm has the best samples" in lines[2] or "tie for the best samples" in lines[2]
    for name in ("gmm", "gan"):
        ev = results["models"][name]
        assert isinstance(ev["flags"], list)
        assert ev["training"]["seconds"] is not None and ev["training"]["recipe"] == name
        assert f"- **{name}**: n = 500 test examples" in md and vd.effort_text(ev["training"]) in md
        for flag in ev["flags"]:
            assert f"{name} (" in lines[2] and flag["message"] in md
    assert results["models"]["gan"]["training"]["steps"] > 0
    assert results["models"]["gmm"]["training"]["iterations"] >= 1
    # the gmm's likelihood cell is the file's value; the true density sits in the reference row
    cell = vd.format_likelihood(vd.model_likelihoods(results["models"]["gmm"])["continuous"])
    assert f"| gmm | 500 | {vd.short_effort(results['models']['gmm']['training'])} | {cell} |" in md
    true_ll = results["models"][REFERENCE_ROW]["metrics"]["true_log_likelihood"]["value"]
    assert f"| {REFERENCE_ROW} | 500 | reference | {true_ll:.4g} ± " in md
    flagged = [n for n in ("gmm", "gan") if results["models"][n]["flags"]]
    assert ("## Flagged models" in md) == bool(flagged)
    assert "![Likelihood against sample quality](figures/likelihood_vs_samples.png)" in md
    assert (out / "figures" / "likelihood_vs_samples.png").is_file()
    page = (out / "report.html").read_text()
    import html

    assert f"<p class='verdict'>{html.escape(lines[2])}</p>" in page
    assert "<table id='results'>" in page and page.count("data:image/png;base64,") >= 3


def test_gan_and_gmm_on_ring8_pair_and_the_gan_has_a_likelihood(tmp_path):
    """The GAN's options name value_range -1,1 and the mixture's none, but on toy data both
    score the same test points: their likelihoods pair. The GAN's is the AIS of its generator
    with a Gaussian observation model, with its BDMC gap and its cost."""
    import probgen

    res = probgen.compare("ring8", ["gmm", "gan(steps=200)"], tmp_path / "cmp", budget=0.1,
                          limit=1000, eval_limit=200, decoder_ais_images=8, decoder_ais_steps=10,
                          decoder_ais_chains=2, bdmc_images=2)
    assert res["data_options"]["gan"]["value_range"] == [-1.0, 1.0]
    gan = res["models"]["gan"]["likelihoods"]["continuous"]
    gmm = res["models"]["gmm"]["likelihoods"]["continuous"]
    assert gan["metric"] == "decoder_ais" and gan["estimator"] == "ais" and gan["n"] == 8
    assert {"gap", "upper", "lower"} <= set(gan["bdmc"]) and "sigma" in gan["observation_model"]
    assert gmm["metric"] == "log_likelihood" and gmm["estimator"] == "exact" and gmm["n"] == 200
    assert gan["scored"]["sha256"] == gmm["scored"]["sha256"]
    pair = next(p for p in res["paired_differences"] if {p["a"], p["b"]} == {"gmm", "gan"})
    assert pair["value"] is not None and pair["n"] == 8 and pair["representation"] == "continuous"
    cost = res["estimator_costs"]["gan"]["decoder_ais"]
    assert cost["n_images"] == 8 and cost["n_steps"] == 10 and cost["seconds"] > 0
    assert res["estimator_options"]["decoder_ais"] is True  # on by default in compare
    saved = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert saved["models"]["gan"]["likelihoods"]["continuous"]["metric"] == "decoder_ais"
    assert "decoder_ais" in res["vae_vs_gan"]["gan"]["likelihood"]
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "AIS (decoder)" in md and "scored on different data representations" not in md
    # the report states what the GAN's likelihood cost at these settings
    assert ("What the likelihood of the models without a density cost" in md
            and f"- **gan**, AIS (decoder): {cost['seconds']:.0f} s" in md
            and "for 8 test examples, 10 transitions" in md)


def test_binary_and_dequantized_rows_never_pair(tmp_path):
    """A binary VAE and a mixture on dequantized digits: the VAE's bound of binary images pairs
    with nothing; its decoder's AIS on the dequantized images pairs with the mixture. Without
    the decoder's AIS the two rows share no representation and do not pair."""
    import probgen

    res = probgen.compare("digits", ["vae(epochs=1,hidden=[16],latent_dim=2)", "gmm(components=2)"],
                          tmp_path / "cmp", budget=0.1, eval_limit=40, k=5, decoder_ais_images=6,
                          decoder_ais_steps=8, decoder_ais_chains=2, bdmc_images=2)
    vae, gmm = (res["models"][n]["likelihoods"] for n in ("vae", "gmm"))
    assert set(vae) == {"binary", "dequantized-17-level"} and set(gmm) == {"dequantized-17-level"}
    assert vae["binary"]["metric"] == "iwae" and vae["dequantized-17-level"]["metric"] == "decoder_ais"
    assert vae["dequantized-17-level"]["bits_per_dim"] > 0
    pairs = [p for p in res["paired_differences"] if p["value"] is not None]
    assert [(p["representation"], p["n"]) for p in pairs] == [("dequantized-17-level", 6)]
    runs = {n: res["runs"][n] for n in ("vae", "gmm")}
    again = probgen.compare("digits", ["vae", "gmm"], tmp_path / "cmp2", runs=runs, eval_limit=40,
                            k=5, decoder_ais=False)
    (pair,) = again["paired_differences"]
    assert pair["value"] is None and "no likelihood on a common representation" in pair["reason"]


def test_a_rows_signature_records_the_rows_one_string_each(tmp_path):
    """The command line's --models string and Python's list of the same rows give one
    signature; a run recorded with the old character-list form is still recognised."""
    from probgen.comparison import CompareSpec, _same_signature, _signature, parse_models

    text = "vae(latent_dim=2,hidden=[8,4]), gmm"
    cli = CompareSpec(data="ring8", models=text, out=tmp_path)
    api = CompareSpec(data="ring8", models=["vae(latent_dim=2,hidden=[8,4])", "gmm"], out=tmp_path)
    entry = parse_models(text)[0]
    sig = _signature(entry, cli)
    assert sig["models"] == ["vae(latent_dim=2,hidden=[8,4])", "gmm"]
    assert sig == _signature(entry, api)
    legacy = {**sig, "models": list(text)}
    assert _same_signature(legacy, sig, cli)
    assert not _same_signature({**legacy, "seed": 1}, sig, cli)
    assert not _same_signature({**sig, "models": ["gmm"]}, sig, cli)


def test_a_given_run_trained_on_other_data_is_refused(tmp_path, capsys):
    """--runs with a run trained on other data would be scored on its own test split and
    ranked in the comparison's columns; refused before anything is written. The same file
    under another name is the same data."""
    import shutil

    import numpy as np

    from probgen.comparison import _check_given_data

    run = tmp_path / "gmm"
    assert main(["train", "gmm", "--data", "ring8", "--limit", "500", "--out", str(run), "--quiet"]) == 0
    assert main(["compare", "--data", "banana", "--models", "gmm,ppca", "--runs", f"gmm={run}",
                 "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert "that run was trained on 'ring8', and this comparison is on 'banana'" in err
    assert not (tmp_path / "cmp").exists()
    arr = tmp_path / "a.npy"
    np.save(arr, np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32))
    assert main(["train", "gmm", "--data", str(arr), "--out", str(tmp_path / "g2"), "--quiet"]) == 0
    shutil.copy(arr, tmp_path / "b.npy")
    _check_given_data("gmm", tmp_path / "g2", str(tmp_path / "b.npy"))  # the same bytes: accepted
    np.save(tmp_path / "c.npy", np.zeros((300, 3), np.float32))
    with pytest.raises(ConfigError, match="that run was trained on"):
        _check_given_data("gmm", tmp_path / "g2", str(tmp_path / "c.npy"))




def test_rows_that_train_until_their_share_is_spent_train_last():
    """Quick rows first, then rows of a fixed length (a GAN's steps, a flow's epochs, a VAE
    given its epochs), then rows that train until their share is spent (a VAE, an autoencoder
    or a program given no length), each group in the order given: the last can use what the
    others leave."""
    from probgen.comparison import parse_models, training_order

    entries = parse_models("vae,ae,gan,vae(epochs=1),flow,gmm,ppca")
    names = ["vae", "ae", "gan", "vae_2", "flow", "gmm", "ppca"]
    for e, name in zip(entries, names):
        e.name = name
    assert [e.name for e in training_order(entries)] == [
        "gmm", "ppca", "gan", "vae_2", "flow", "vae", "ae"]


def test_bin_width_scores_counts_as_discrete_values_and_leaves_binary_rows_alone(tmp_path, capsys):
    """--bin-width 1 on integer counts: every row that models values trains and is scored on
    the dequantized data (a lower bound on log P of the counts, comparable with the exact
    Poisson log-probability); a row that binarises keeps its own representation; a bin width
    the data refuse stops compare before anything is written."""
    import numpy as np
    from scipy.stats import poisson

    import probgen
    from probgen.comparison import CompareSpec, _quantisation
    from probgen.data import load_dataset

    rates = np.array([20.0, 6.0])
    x = np.random.default_rng(0).poisson(rates, size=(1000, 2))
    path = tmp_path / "counts.npy"
    np.save(path, x)
    res = probgen.compare(str(path), ["gmm", "ppca"], tmp_path / "cmp", budget=0.2,
                          model_choice=False, bin_width=1.0)
    test = load_dataset(str(path)).test.numpy()                       # the counts as scored
    exact = poisson.logpmf(test, rates).sum(1).mean()
    for row in ("gmm", "ppca"):
        assert res["data_options"][row]["bin_width"] == 1.0
        ll = res["models"][row]["metrics"]["log_likelihood"]
        assert ll["representation"] == "dequantized" and ll["estimator"] == "dequantization bound"
        # a bound on log P of the counts: near the truth for a good model, never far above it
        assert ll["value"] < exact + 3 * ll["stderr"] + 0.05
    assert res["models"]["gmm"]["metrics"]["log_likelihood"]["value"] > exact - 0.3

    spec = CompareSpec(str(path), ["vae"], tmp_path / "x", bin_width=1.0)
    assert _quantisation("vae", {}, spec) == {"dequantize": None, "bin_width": 1.0}  # Gaussian
    spec = CompareSpec("digits", ["vae"], tmp_path / "x", dequantize="on")
    assert _quantisation("vae", {}, spec) == {}                         # binarised pixels
    assert _quantisation("gan", {}, spec) == {}             # pixels in [-1, 1]: its decoder AIS
    assert _quantisation("gmm", {}, spec) == {"dequantize": "on", "bin_width": None}
    assert _quantisation("vae", {"likelihood": "gaussian"}, spec) == {"dequantize": "on",
                                                                      "bin_width": None}
    out = tmp_path / "bad"
    assert main(["compare", "--data", "digits", "--models", "vae,gmm", "--bin-width", "0.5",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--bin-width" in err and "1/17" in err
    assert not out.exists()
