import numpy as np
import pytest

from milkcells import barcoderanks, cellcalling


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


def test_bad_arguments(raw_sample):
    with pytest.raises(ValueError, match="method must be one of"):
        cellcalling.call_cells(raw_sample, method="emptydrops-ish")


# --- issue 8: real droplet matrices (pre-trimmed, heavy ambient, few cells) -------------------------

from milkcells import demo, qc, simulation  # noqa: E402
from milkcells._utils import InputError  # noqa: E402


def _totals(a):
    return np.asarray(a.X.sum(axis=1)).ravel()


@pytest.fixture(scope="module")
def ambient80():
    """300 cells among droplets whose ambient RNA sits at ~80 UMIs (a raw matrix to pre-trim)."""
    return simulation.simulate_raw_sample("P1", donor="D1", n_cells=300, n_empty=3000, ambient_umis=80)


def _kept_and_empties(raw, called, kept):
    status = raw.obs["sim_status"].astype(str).to_numpy()
    real = np.isin(status, ["cell", "doublet"])
    empty = status == "empty"
    return raw.obs_names[real].isin(kept.obs_names).mean(), raw.obs_names[empty].isin(called.obs_names).mean()


@pytest.mark.parametrize("trim", [20, 60, 100])
def test_pretrimmed_raw_matrix_is_called_not_kept_whole(ambient80, trim):
    # the old rule (half the barcodes under 100 UMIs) took these for filtered matrices and kept every barcode
    raw = ambient80[_totals(ambient80) >= trim].copy()
    assert barcoderanks.is_raw_matrix(raw)
    called = cellcalling.call_cells(raw, niters=2000)
    kept = qc.filter_cells(called)
    share_kept, empties_called = _kept_and_empties(raw, called, kept)
    print(f"trimmed at {trim}: real cells kept {share_kept:.3f}, empty droplets called {empties_called:.4f}")
    assert share_kept >= 0.95 and empties_called <= 0.01
    rec = called.uns["milkcells"]["cell_calling"]
    assert rec["input_type"] == "raw" and rec["method_used"] == "emptydrops"
    if trim >= 100:  # no ambient pool under lower=100: lower is raised and the sample flagged
        assert rec["lower_used"] > 100 and "pre-trimmed" in rec["flags"]


def test_heavy_ambient_above_lower():
    raw = simulation.simulate_raw_sample("H1", donor="D1", n_cells=300, n_empty=3000, ambient_umis=200)
    raw = raw[_totals(raw) >= 100].copy()  # as a 10x matrix trimmed at 100 UMIs: the old rule kept it whole
    assert (raw.obs["sim_status"] == "empty").sum() > 3000
    called = cellcalling.call_cells(raw, niters=2000)
    kept = qc.filter_cells(called)
    share_kept, empties_called = _kept_and_empties(raw, called, kept)
    print(f"heavy ambient: real cells kept {share_kept:.3f}, empty droplets called {empties_called:.4f}")
    assert called.uns["milkcells"]["cell_calling"]["input_type"] == "raw"
    assert share_kept >= 0.95 and empties_called <= 0.01


@pytest.mark.parametrize("kind", ["milk", "simulation"])
def test_ten_cells_knee_in_ambient_cloud_not_trusted(caplog, kind):
    # 10 cells: the knee falls among the empty droplets; the old code retained 51 of them (milk)
    if kind == "milk":
        raw = demo.simulate_milk_sample("T1", donor="D1", days_postpartum=10, n_cells=10, n_empty=2000, n_genes=800)
    else:
        raw = simulation.simulate_raw_sample("T1", donor="D1", n_cells=10, n_empty=3000)
    with caplog.at_level("WARNING"):
        called = cellcalling.call_cells(raw, niters=2000)
    assert "within the ambient cloud" in caplog.text
    rec = called.uns["milkcells"]["cell_calling"]
    assert rec["knee_trusted"] is False
    assert "ambient cloud" in rec["flags"]
    status = called.obs["sim_status"].astype(str)
    assert (status == "empty").sum() == 0
    assert (status != "empty").sum() >= 9


def test_forced_emptydrops_and_loss_guard_on_filtered_matrix(called_sample, caplog):
    with caplog.at_level("WARNING"):
        out = cellcalling.call_cells(called_sample, method="inflection", max_removed_fraction=0.0)
    rec = out.uns["milkcells"]["cell_calling"]
    assert rec["input_type"] == "filtered" and rec["method_used"] == "inflection"
    assert "cell calling" in rec["flags"] and "removed" in caplog.text
    with pytest.raises(InputError, match="cell_calling.method"):
        cellcalling.call_cells(called_sample, method="inflection", max_removed_fraction=0.0,
                               error_on_excess_loss=True)  # fmt: skip


def test_method_emptydrops_forces_emptydrops(raw_sample):
    out = cellcalling.call_cells(raw_sample[_totals(raw_sample) >= 60].copy(), method="emptydrops", niters=1000)
    assert out.uns["milkcells"]["cell_calling"]["method_used"] == "emptydrops"


def test_retain_and_ambient_range(raw_sample):
    out = cellcalling.call_cells(raw_sample, retain=1e9, ambient_range=[5, 120], niters=1000)
    rec = out.uns["milkcells"]["cell_calling"]
    assert rec["lower_used"] == 120 and rec["emptydrops"]["retain"] == 1e9
    assert (_totals(out) > 120).all()
    with pytest.raises(InputError, match="ambient_range"):
        cellcalling.call_cells(raw_sample, ambient_range=[100, 50])
    with pytest.raises(InputError, match="retain"):
        cellcalling.call_cells(raw_sample, retain=50)


def test_report_text_states_the_method_actually_used():
    import jinja2

    from .conftest import REPO

    text = (REPO / "workflow" / "report" / "workflow.rst").read_text()
    base = {"samples": "s.tsv", "integration": {"method": "harmony", "key": "batch"}}
    for method, expected in [
        ("auto", "EmptyDrops"),
        ("emptydrops", "EmptyDrops"),
        ("inflection", "inflection"),
        ("none", "kept whole"),
    ]:
        cfg = type("S", (), {"config": {**base, "cell_calling": {"method": method}}})
        out = jinja2.Environment().from_string(text).render(snakemake=cfg)
        assert expected in out and "qc_summary.tsv" in out
        assert "barcode-rank inflection)" not in out
