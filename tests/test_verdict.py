"""The report's verdict, flags and per-representation columns, on results dicts written by hand
(no training): the numbers in each test are chosen so that the right answer is plain."""

import math

import pytest

from probgen import verdict as vd
from probgen.comparison import COLUMNS
from probgen.report import comparison_table, glossary, headline_rows

REF = vd.REFERENCE_ROW_NAME
D = 784


def lik(value, stderr, rep, estimator, inner=None):
    """A likelihood metric as the evaluation layer writes it."""
    m = {"value": value, "stderr": stderr, "unit": "nats", "representation": rep,
         "estimator": estimator}
    if inner:
        m["inner_estimator"] = inner
    if rep == "binary" or rep.startswith("dequantized"):
        m["bits_per_dim"] = -value / (D * math.log(2))
        m["bits_per_dim_stderr"] = stderr / (D * math.log(2))
    return m


def val(v, se=None, unit="fraction", **extra):
    m = {"value": v, "stderr": se, "unit": unit}
    if extra:
        m["extra"] = extra
    return m


def none(reason):
    return {"value": None, "stderr": None, "unit": "nats", "reason": reason}


def image_results(**over):
    """mnist-like: a VAE on binary and on dequantized images, a flow and a GMM on dequantized,
    a GAN without a likelihood; the GAN has the best samples, the flow the best likelihood."""
    deq = "dequantized-8bit"
    models = {
        "vae": {"n": 1000, "metrics": {
            "log_likelihood": none("no exact density"),
            "elbo": lik(-110.0, 0.5, "binary", "elbo"),
            "iwae_100": lik(-105.0, 0.5, "binary", "iwae-100"),
            "frechet_distance": val(300.0, None, ""), "precision": val(0.60, 0.01),
            "recall": val(0.50, 0.01), "coverage": val(0.50, 0.01),
            "class_histogram": val(0.97, None, "normalized entropy")}},
        "bmm": {"n": 1000, "metrics": {
            "log_likelihood": lik(-140.0, 0.6, "binary", "exact"),
            "frechet_distance": val(900.0, None, ""), "precision": val(0.40, 0.01),
            "recall": val(0.10, 0.01), "coverage": val(0.40, 0.01),
            "class_histogram": val(0.95, None, "normalized entropy")}},
        "flow": {"n": 1000, "metrics": {
            "log_likelihood": lik(-1100.0, 2.0, deq, "dequantization bound", "exact"),
            "frechet_distance": val(500.0, None, ""), "precision": val(0.50, 0.01),
            "recall": val(0.40, 0.01), "coverage": val(0.45, 0.01),
            "class_histogram": val(0.96, None, "normalized entropy")}},
        "gmm": {"n": 1000, "metrics": {
            "log_likelihood": lik(-1300.0, 2.0, deq, "dequantization bound", "exact"),
            "frechet_distance": val(400.0, None, ""), "precision": val(0.55, 0.01),
            "recall": val(0.45, 0.01), "coverage": val(0.48, 0.01),
            "class_histogram": val(0.96, None, "normalized entropy")}},
        "gan": {"n": 1000, "metrics": {
            "log_likelihood": none("the model has no exact density (no log_prob)"),
            "frechet_distance": val(200.0, None, ""), "precision": val(0.70, 0.01),
            "recall": val(0.55, 0.01), "coverage": val(0.60, 0.01),
            "class_histogram": val(0.98, None, "normalized entropy")}},
        REF: {"n": 1000, "metrics": {
            "frechet_distance": val(10.0, None, ""), "precision": val(0.75, 0.01),
            "recall": val(0.75, 0.01), "coverage": val(0.95, 0.01),
            "class_histogram": val(0.995, None, "normalized entropy")}},
    }
    results = {"data": "mnist-5k", "models": models, "paired_differences": [],
               "reference": {"n": 1000}, "time": {"budget_s": 60.0}}
    results.update(over)
    return results


def toy_results():
    t = lambda v, se: lik(v, se, "continuous", "exact")  # noqa: E731
    modes = lambda k: val(float(k), None, "modes", n_modes=8)  # noqa: E731
    return {"data": "ring8", "paired_differences": [], "time": {"budget_s": 60.0}, "models": {
        "gmm": {"n": 5000, "metrics": {"log_likelihood": t(4.30, 0.01),
                                       "true_log_likelihood": t(4.31, 0.01),
                                       "modes_covered": modes(8), "high_quality_fraction": val(0.99, 0.001)}},
        "flow": {"n": 5000, "metrics": {"log_likelihood": t(4.29, 0.01),
                                        "true_log_likelihood": t(4.31, 0.01),
                                        "modes_covered": modes(8), "high_quality_fraction": val(0.97, 0.002)}},
        "vae": {"n": 5000, "metrics": {"log_likelihood": none("no exact density"),
                                       "iwae_100": lik(-2.1, 0.01, "continuous", "iwae-100"),
                                       "true_log_likelihood": t(4.31, 0.01),
                                       "modes_covered": modes(0), "high_quality_fraction": val(0.002, 0.001)}},
        REF: {"n": 5000, "metrics": {"true_log_likelihood": t(4.31, 0.01), "modes_covered": modes(8),
                                     "high_quality_fraction": val(0.99, 0.001)}},
    }}


# ----------------------------------------------------------------------------- likelihoods
def test_likelihood_derived_from_metrics_prefers_exact_then_ais_then_largest_iwae_then_elbo():
    m = {"elbo": lik(-110.0, 1.0, "binary", "elbo"), "iwae_10": lik(-107.0, 1.0, "binary", "iwae-10"),
         "iwae_1000": lik(-105.0, 1.0, "binary", "iwae-1000")}
    assert vd.model_likelihoods({"metrics": m})["binary"]["metric"] == "iwae_1000"
    m["ais"] = lik(-106.0, 1.0, "binary", "ais")  # AIS before IWAE even when IWAE is higher
    assert vd.model_likelihoods({"metrics": m})["binary"]["metric"] == "ais"
    m["log_likelihood"] = lik(-104.0, 1.0, "binary", "exact")
    assert vd.model_likelihoods({"metrics": m})["binary"]["estimator"] == "exact"
    only_elbo = {"metrics": {"elbo": lik(-110.0, 1.0, "binary", "elbo"),
                             "parzen": lik(-90.0, 1.0, "binary", "parzen")}}
    assert vd.model_likelihoods(only_elbo)["binary"]["metric"] == "elbo"  # never the Parzen window
    # a row's own likelihoods entry is taken as it is
    given = {"likelihoods": {"binary": {"metric": "elbo", "value": -1.0, "stderr": 0.1, "unit": "nats",
                                        "estimator": "elbo"}}, "metrics": m}
    assert vd.model_likelihoods(given)["binary"]["value"] == -1.0


def test_binary_and_dequantized_never_share_a_column_and_cells_name_their_estimate():
    res = image_results()
    header, rows, _ = comparison_table(res, COLUMNS)
    assert "log-lik binary (bits/dim)" in header and "log-lik dequantized-8bit (bits/dim)" in header
    bcol, dcol = header.index("log-lik binary (bits/dim)"), header.index("log-lik dequantized-8bit (bits/dim)")
    by = {r[0]: r for r in rows}
    # the VAE sits in the binary column only, the flow in the dequantized one only
    assert "IWAE-100 bound" in by["vae"][bcol] and by["vae"][dcol].startswith("— [")
    assert "exact density, dequantization bound" in by["flow"][dcol] and by["flow"][bcol].startswith("— [")
    bpd = 1100.0 / (D * math.log(2))
    assert by["flow"][dcol].startswith(f"{bpd:.4g} ± ") and "bits/dim" in by["flow"][dcol]
    # no column holds two representations
    for col in (bcol, dcol):
        kinds = {"binary" if "IWAE" in c or "exact)" in c else "deq" for c in
                 (r[col] for r in rows) if not c.startswith("—")}
        assert len(kinds) == 1
    # the old single estimator columns are gone from the main table
    assert "exact log-lik" not in header and "ELBO" not in header and "true log-lik" not in header


def test_true_log_likelihood_is_in_the_reference_row_and_caption_only():
    res = toy_results()
    header, rows, _ = comparison_table(res, COLUMNS)
    col = header.index("log-lik continuous (nats)")
    by = {r[0]: r for r in rows}
    assert "the data's true density" in by[REF][col] and by[REF][col].startswith("4.31 ± ")
    assert all("true density" not in by[n][col] for n in ("gmm", "flow", "vae"))
    assert "true log-lik" not in header


def test_glossary_defines_every_column_with_a_unit():
    res = image_results()
    res["models"]["gan"]["metrics"]["precision"]["value"] = 0.1
    res["models"]["gan"]["flags"] = vd.flag_model(res["models"]["gan"], res["models"][REF])
    header, _, _ = comparison_table(res, COLUMNS)
    lines = glossary(res, COLUMNS)
    defined = [line.split("**")[1] for line in lines]
    assert defined == header[1:]  # every column but the model's name, in the table's order
    assert any(line.startswith("- **classes** (normalised entropy)") for line in lines)
    assert any(line.startswith("- **kernel** (") for line in lines) or "kernel" not in header
    _, rows, _ = comparison_table(res, COLUMNS)
    assert {r[0]: r[-1] for r in rows}["gan"] == "low precision" and header[-1] == "flag"


# ----------------------------------------------------------------------------- the verdict
def test_verdict_names_the_best_per_representation_the_best_samples_and_the_disagreement():
    text = vd.verdict(image_results())
    assert text.startswith("On binary images, vae has the best likelihood")
    assert "ahead of bmm" in text
    bpd = 1100.0 / (D * math.log(2))
    assert f"On dequantized 8-bit images, flow has the best likelihood, {bpd:.4g} ± " in text
    assert "gan has no likelihood in this table" in text
    assert "By Frechet distance, gan has the best samples, Frechet distance 200" in text
    assert "ahead of vae with Frechet distance 300" in text
    # the flow's likelihood beats the GMM's, the GMM's samples beat the flow's
    assert ("The two rankings disagree: flow has a better likelihood on dequantized 8-bit "
            "images than gmm, but worse samples.") in text
    assert "The model with the best samples, gan, has no likelihood" in text
    assert "flagged" not in text


def test_ties_within_two_standard_errors_are_named_as_ties():
    res = toy_results()
    # gmm 4.30 ± 0.01, flow 4.29 ± 0.01: difference 0.01 < 2 * sqrt(2) * 0.01
    text = vd.verdict(res)
    assert "gmm and flow tie for the best likelihood (within two standard errors)" in text
    # a paired difference over the same test points is more precise, and breaks the tie
    res["paired_differences"] = [{"a": "flow", "b": "gmm", "a_estimate": "log_likelihood",
                                  "b_estimate": "log_likelihood", "value": -0.01, "stderr": 0.001}]
    text = vd.verdict(res)
    assert "gmm has the best likelihood, 4.3 ± 0.01 nats (exact), ahead of flow" in text
    # samples: both cover 8/8, and HQ 0.99 ± 0.001 against 0.97 ± 0.002 is no tie
    assert "gmm has the best samples, modes covered 8/8, high-quality fraction 0.99" in text
    res["models"]["flow"]["metrics"]["high_quality_fraction"] = val(0.988, 0.002)
    assert "gmm and flow tie for the best samples" in vd.verdict(res)
    # the data's true density is quoted beside the continuous likelihoods
    assert "the data's true density scores 4.31 ± 0.01 nats" in text


def test_verdict_names_flagged_models_as_flagged():
    res = toy_results()
    res["models"]["vae"]["training"] = {"epochs": 9, "steps": 1800, "seconds": 8.9, "share_s": 9.0}
    flags = vd.compute_flags(res)
    assert list(flags) == ["gmm", "flow", "vae"] and not flags["gmm"] and not flags["flow"]
    for n, f in flags.items():
        res["models"][n]["flags"] = f
    text = vd.verdict(res)
    assert "vae (flagged)" in text
    assert ("Flagged as not trained well enough at its budget, so that its place in these "
            "rankings says little about what the model can do: vae (modes covered 0/8 against "
            "the reference's 8/8; high-quality fraction 0.002 against the reference's 0.99; "
            "9 epochs in 9 s)") in text


# ----------------------------------------------------------------------------- flags
@pytest.mark.parametrize("metric,ref,threshold,frac", [
    ("precision", 0.75, 0.375, vd.PRECISION_FRACTION),
    ("coverage", 0.95, 0.475, vd.COVERAGE_FRACTION),
    ("class_histogram", 0.995, 0.8955, vd.CLASS_ENTROPY_FRACTION),
])
def test_image_flags_fire_just_below_their_threshold_only(metric, ref, threshold, frac):
    assert math.isclose(frac * ref, threshold)
    res = image_results()
    ev = res["models"]["gan"]
    ev["metrics"][metric]["value"] = threshold * 1.001
    assert vd.flag_model(ev, res["models"][REF]) == []
    ev["metrics"][metric]["value"] = threshold * 0.999
    (flag,) = vd.flag_model(ev, res["models"][REF], effort={"recipe": "gan", "share_s": 30.0},
                            budget_s=60.0, data_kind="image")
    assert flag["metric"] == metric and math.isclose(flag["threshold"], threshold)
    assert flag["reference"] == ref
    assert flag["advice"].startswith("more training: a larger --budget (its share was 30 s of 60 s)")
    assert "gan(width=16)" in flag["advice"]


def test_toy_flags_fewer_modes_than_the_reference_and_a_low_high_quality_fraction():
    res = toy_results()
    ref = res["models"][REF]
    ev = res["models"]["flow"]
    assert vd.flag_model(ev, ref) == []
    ev["metrics"]["modes_covered"]["value"] = 7.0  # one of eight missing: 7/8 of the reference
    assert vd.flag_model(ev, ref) == []
    ev["metrics"]["modes_covered"]["value"] = 6.0
    (flag,) = vd.flag_model(ev, ref)
    assert flag["metric"] == "modes_covered" and flag["message"] == (
        "modes covered 6/8 against the reference's 8/8")
    ev["metrics"]["high_quality_fraction"]["value"] = 0.49
    assert [f["metric"] for f in vd.flag_model(ev, ref)] == ["modes_covered", "high_quality_fraction"]
    # without a reference row nothing can be judged
    assert vd.flag_model(ev, None) == []


def test_effort_text_names_what_the_row_ran():
    assert vd.effort_text({"epochs": 24, "steps": 4800, "seconds": 15.1, "share_s": 15.0,
                           "stopped_by": "time budget"}) == (
        "24 epochs (4,800 steps) in 15.1 s of a 15 s share; stopped by: time budget")
    assert vd.effort_text({"iterations": 12}) == "12 EM iterations (best restart)"
    assert vd.effort_text({"closed_form": True}) == "closed-form fit"
    assert vd.effort_text(None) == "training effort not recorded"


def test_run_effort_reads_the_run_folder(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({
        "model": "vae", "latent_dim": 2, "likelihood": "gaussian", "epochs": 1_000_000, "seed": 0,
        "completed": {"step": 4800, "stopped_by": "time budget of 15 s spent"}}))
    (tmp_path / "progress.json").write_text(json.dumps({"epochs_run": 24, "steps_run": 4800}))
    e = vd.run_effort(tmp_path, share_s=15.0, seconds=15.1, how="trained")
    assert e["epochs"] == 24 and e["steps"] == 4800 and e["recipe"] == "vae"
    assert e["settings"] == {"latent_dim": 2, "likelihood": "gaussian"}  # not the 1,000,000 epochs asked
    assert vd.settings_text(e) == "latent_dim=2, likelihood=gaussian"


def test_headline_rows_have_a_likelihood_column_per_representation():
    header, rows = headline_rows(image_results(), COLUMNS)
    assert header[:3] == ["model", "log-lik binary (bits/dim)", "log-lik dequantized-8bit (bits/dim)"]
    assert rows[-1][0] == REF and rows[-1][1] == "—"


def test_a_rows_own_likelihoods_entry_is_rendered_with_its_caveat():
    res = image_results()
    res["models"]["gan"]["likelihoods"] = {"dequantized-8bit": {
        "metric": "ais", "value": -1500.0, "stderr": 5.0, "unit": "nats",
        "bits_per_dim": 1500.0 / (D * math.log(2)), "bits_per_dim_stderr": 5.0 / (D * math.log(2)),
        "estimator": "ais", "inner_estimator": "dequantization bound",
        "caveat": "Gaussian observation model, sigma chosen on validation images"}}
    header, rows, notes = comparison_table(res, COLUMNS)
    cell = {r[0]: r for r in rows}["gan"][header.index("log-lik dequantized-8bit (bits/dim)")]
    assert cell.startswith(f"{1500.0 / (D * math.log(2)):.4g} ± ") and "(-1500 nats; AIS dequantization bound)" in cell
    k = int(cell.rsplit("[", 1)[1].rstrip("]"))
    assert notes[k - 1] == ("gan / log-lik dequantized-8bit (bits/dim): Gaussian observation model, "
                            "sigma chosen on validation images")
    # now ranked: last on dequantized images, and no longer a model without a likelihood
    text = vd.verdict(res)
    assert "(then gan)" in text and "has no likelihood" not in text
    assert ("The two rankings disagree: flow has a better likelihood on dequantized 8-bit "
            "images than gmm and gan, but worse samples; gmm has a better likelihood on "
            "dequantized 8-bit images than gan, but worse samples.") in text


def test_a_decoders_ais_is_named_as_such_and_not_called_a_bound_on_the_model():
    """The GAN's likelihood on dequantized images is the AIS of its decoder with Gaussian noise
    added: its cell says "decoder AIS", and the verdict says that it bounds the density of the
    blurred decoder, where a model's own bound is 'a lower bound, the true value can be higher'."""
    res = image_results()
    res["models"]["gan"]["likelihoods"] = {"dequantized-8bit": {
        "metric": "decoder_ais", "value": -1500.0, "stderr": 5.0, "unit": "nats",
        "bits_per_dim": 1500.0 / (D * math.log(2)), "bits_per_dim_stderr": 5.0 / (D * math.log(2)),
        "estimator": "ais", "inner_estimator": "dequantization bound"}}
    header, rows, _ = comparison_table(res, COLUMNS)
    cell = {r[0]: r for r in rows}["gan"][header.index("log-lik dequantized-8bit (bits/dim)")]
    assert "(-1500 nats; decoder AIS dequantization bound)" in cell
    text = vd.verdict(res)
    assert ("(gan: the AIS of its decoder with Gaussian noise added (Wu et al. 2017), a stochastic "
            "lower bound on the density of that blurred decoder, not of the model itself)") in text
    assert "gan: lower bound" not in text


def test_a_blank_likelihood_cell_says_why():
    header, rows, notes = comparison_table(image_results(), COLUMNS)
    by = {r[0]: r for r in rows}
    k = int(by["bmm"][header.index("log-lik dequantized-8bit (bits/dim)")].strip("— []"))
    assert notes[k - 1].startswith("bmm / log-lik dequantized-8bit (bits/dim): scored on binary data only")
    k = int(by["gan"][header.index("log-lik binary (bits/dim)")].strip("— []"))
    assert notes[k - 1] == "gan / log-lik binary (bits/dim): the model has no exact density (no log_prob)"


def test_a_model_whose_training_ended_by_itself_is_not_told_to_train_longer():
    res = image_results()
    ref = res["models"][REF]
    ev = res["models"]["gmm"]
    ev["metrics"]["coverage"]["value"] = 0.4
    converged = {"recipe": "gmm", "iterations": 13, "stopped_by": "its schedule ran to the end"}
    (flag,) = vd.flag_model(ev, ref, effort=converged)
    assert not flag["budget_bound"] and "--budget" not in flag["advice"]
    assert "gmm(components=K)" in flag["advice"]
    ev["flags"] = [flag]
    ev["training"] = converged
    text = vd.verdict(res)
    assert "Flagged for samples far from the data although training ended by itself" in text
    assert "not trained well enough" not in text
    timed = {"recipe": "gan", "steps": 21, "stopped_by": "time budget of 28 s spent", "share_s": 28.0}
    (flag,) = vd.flag_model({"metrics": {"coverage": val(0.0, 0.0)}}, ref, effort=timed, budget_s=60)
    assert flag["budget_bound"] and "a larger --budget (its share was 28 s of 60 s)" in flag["advice"]


def test_a_run_that_used_up_its_steps_is_told_to_take_more():
    ref = image_results()["models"][REF]
    done = {"recipe": "gan", "steps": 200, "stopped_by": "its schedule ran to the end"}
    (flag,) = vd.flag_model({"metrics": {"coverage": val(0.0, 0.0)}}, ref, effort=done)
    assert not flag["budget_bound"]
    assert flag["advice"].startswith("more steps (gan(steps=N), with the --budget for them)")
    assert vd.effort_text({"epochs": 1, "steps": 1}) == "1 epoch (1 step)"


def test_run_effort_names_a_standardisation_and_not_its_absence(tmp_path):
    import json

    for pre, shown in (("standardize", "latent_dim=2, likelihood=gaussian, preprocess=standardize"),
                       ("none", "latent_dim=2, likelihood=gaussian")):
        (tmp_path / "config.json").write_text(json.dumps({
            "model": "vae", "latent_dim": 2, "likelihood": "gaussian", "preprocess": pre}))
        assert vd.settings_text(vd.run_effort(tmp_path, share_s=1.0, seconds=1.0, how="trained")) == shown


def test_a_closed_form_ppca_row_shows_no_optimiser_settings(tmp_path):
    """PPCA's closed form uses no batch size or learning rate (those are --fit svi's): its
    row does not list them; a PPCA fitted by SVI does."""
    import json

    for fit, shown in (("closed-form", "latent_dim=3, fit=closed-form"),
                       ("svi", "latent_dim=3, fit=svi, batch_size=100, lr=0.01")):
        (tmp_path / "config.json").write_text(json.dumps({
            "model": "ppca", "latent_dim": 3, "fit": fit, "batch_size": 100, "lr": 0.01}))
        assert vd.settings_text(vd.run_effort(tmp_path, share_s=1.0, seconds=1.0, how="trained")) == shown


def test_a_dequantized_representation_of_other_levels_is_defined_in_bits_and_named_in_words():
    """sklearn's digits have 17 grey levels: their likelihood column is in bits/dim like the
    8-bit one, its definition says so, and the verdict names it in words."""
    from probgen.report import _rep_glossary

    for rep, what in (("dequantized-17-level", "of 17 levels per value"),
                      ("dequantized", "the discrete values")):
        unit, text = _rep_glossary(rep)
        assert unit.startswith("bits/dim") and what in text and "lower bound" in text
    assert vd._rep_words("dequantized-17-level") == "dequantized 17-level data"
    assert _rep_glossary("continuous")[0] == "nats per example"
    # a user's bin width may be on vectors (counts): their nats are per example, not per image
    assert _rep_glossary("dequantized")[0] == "bits/dim, nats per example beside"
    assert _rep_glossary("dequantized-17-level")[0] == "bits/dim, nats per image beside"


def test_rows_on_continuous_and_dequantized_values_of_the_same_data_are_told_how_to_meet():
    """A --runs row trained with --bin-width beside rows without it: the two likelihoods stand in
    two columns, and the verdict says why and what puts them in one."""
    res = {"models": {
        "flow": {"metrics": {"log_likelihood": lik(-8.65, 0.07, "dequantized", "dequantization bound",
                                                   inner="exact")}},
        "gmm": {"metrics": {"log_likelihood": lik(-8.65, 0.08, "continuous", "exact")}}}}
    text = vd.verdict(res)
    assert "On the dequantized data, only flow has a likelihood" in text
    assert "On the continuous data, only gmm has a likelihood" in text
    assert "train every row with the same --bin-width (or every row without one)" in text
    assert "--bin-width" not in vd.verdict(image_results())  # 8-bit images and binary ones: no advice
