import numpy as np
import pytest

from milkcells import cellcalling


def test_raw_and_filtered_detected(raw_sample, called_sample):
    assert cellcalling.is_raw_matrix(raw_sample)
    assert not cellcalling.is_raw_matrix(called_sample)


def _recall_and_empties(raw, called):
    status = raw.obs["sim_status"].astype(str)
    real = status.isin(["cell", "doublet"]).to_numpy()
    hit = raw.obs_names.isin(called.obs_names)
    return (hit & real).sum() / real.sum(), (hit & (status == "empty").to_numpy()).sum() / (status == "empty").sum()


def test_default_calls_raw_droplets_with_emptydrops(raw_sample, called_sample):
    recall, empties = _recall_and_empties(raw_sample, called_sample)
    print(f"EmptyDrops: recall {recall:.3f}, empty droplets called {empties:.4f}")
    assert recall >= 0.95 and empties <= 0.01
    rec = called_sample.uns["milkcells"]["cell_calling"]
    assert rec["input_type"] == "raw" and rec["method_used"] == "emptydrops"
    assert rec["n_barcodes"] == raw_sample.n_obs and rec["n_called"] == called_sample.n_obs
    assert rec["emptydrops"]["n_tested"] > 0
    assert (called_sample.obs["emptydrops_fdr"] <= 0.01).all()
    assert rec["knee"] >= rec["inflection"]


def test_inflection_separates_cells_from_empty_droplets(raw_sample):
    called = cellcalling.call_cells(raw_sample, method="inflection")
    recall, empties = _recall_and_empties(raw_sample, called)
    print(f"inflection: recall {recall:.3f}, empty droplets called {empties:.4f}")
    assert recall >= 0.9 and empties <= 0.01
    assert called.uns["milkcells"]["cell_calling"]["method_used"] == "inflection"


def test_filtered_input_kept_whole(called_sample):
    again = cellcalling.call_cells(called_sample)
    assert again.n_obs == called_sample.n_obs
    rec = again.uns["milkcells"]["cell_calling"]
    assert rec["input_type"] == "filtered" and rec["method_used"] == "none"
    assert np.isnan(again.var["ambient_fraction"]).all()


def test_ambient_profile_is_milk_protein(raw_sample, called_sample):
    amb = called_sample.var["ambient_fraction"]
    top = amb.sort_values(ascending=False).index[:3]
    assert set(top) <= {"CSN2", "LALBA", "CSN3", "CSN1S1"}
    assert amb.sum() == pytest.approx(1.0)
    corr = np.corrcoef(amb, raw_sample.var["sim_ambient"])[0, 1]
    assert corr > 0.95


def test_barcode_ranks_on_two_populations(rng):
    totals = np.concatenate([rng.lognormal(np.log(3000), 0.3, 500), rng.lognormal(np.log(150), 0.4, 5000)])
    pts = cellcalling.barcode_ranks(totals, lower=50)
    assert 400 < pts["inflection"] < 1500
    assert 300 < pts["inflection_rank"] < 700


def test_bad_arguments(raw_sample):
    with pytest.raises(ValueError, match="method must be one of"):
        cellcalling.call_cells(raw_sample, method="emptydrops-ish")
    with pytest.raises(ValueError, match="too few"):
        cellcalling.barcode_ranks(np.array([1.0, 2.0]), lower=100)
