import numpy as np
import pandas as pd
import pytest

from milkcells import qc


def test_mad_bounds_scaled():
    v = np.array([1, 2, 3, 4, 100.0])
    lo, hi = qc.mad_bounds(v, 2)
    assert lo == pytest.approx(3 - 2 * 1.4826) and hi == pytest.approx(3 + 2 * 1.4826)


def test_filter_removes_dying_cells_and_reports(called_sample):
    out = qc.filter_cells(called_sample)
    rec = out.uns["milkcells"]["qc"]
    status_in = called_sample.obs["sim_status"].astype(str)
    status_out = out.obs["sim_status"].astype(str)
    assert (status_out == "dying").sum() <= 0.1 * (status_in == "dying").sum()
    assert (status_out == "cell").sum() >= 0.97 * (status_in == "cell").sum()
    assert rec["n_cells_in"] == called_sample.n_obs
    assert rec["n_kept"] + rec["n_removed"] == rec["n_cells_in"] == out.n_obs + rec["n_removed"]
    assert rec["removed"]["high_mito"] > 0
    assert set(rec["removed"]) == set(qc.QC_FILTERS)
    assert rec["thresholds"]["max_pct_mito"] >= 10  # floor
    assert len(rec["metrics"]["total_counts"]) == called_sample.n_obs


def test_floors_apply():
    obs = pd.DataFrame(
        {
            "total_counts": np.full(100, 300.0),
            "n_genes_by_counts": np.full(100, 150.0),
            "pct_counts_mt": np.full(100, 1.0),
        }
    )
    th = qc.qc_thresholds(obs, min_counts=500, min_genes=200, min_mito_threshold=10)
    assert th["min_counts"] == 500 and th["min_genes"] == 200 and th["max_pct_mito"] == 10


def test_thresholds_adapt_per_sample(called_sample):
    deep = called_sample.copy()
    deep.X = deep.X * 3
    a = qc.filter_cells(called_sample).uns["milkcells"]["qc"]["thresholds"]
    b = qc.filter_cells(deep).uns["milkcells"]["qc"]["thresholds"]
    assert b["max_counts"] > 2 * a["max_counts"]


def test_summary_table(called_sample):
    from milkcells import doublets

    rec = doublets.remove_doublets(qc.filter_cells(called_sample)).uns["milkcells"]
    table = qc.qc_summary_table({"S1": rec})
    row = table.iloc[0]
    assert row["barcodes_in"] == called_sample.uns["milkcells"]["cell_calling"]["n_barcodes"]
    assert row["cells_called"] - row["removed_qc_total"] - row["doublets"] == row["kept"]


def test_bad_parameter(called_sample):
    with pytest.raises(ValueError, match="nmads_mito must be a non-negative number"):
        qc.filter_cells(called_sample, nmads_mito=-1)


def test_qc_loss_guard_on_raw_matrix_kept_whole(raw_sample, caplog):
    # a raw matrix kept whole: MAD thresholds from empty droplets, most barcodes removed
    from milkcells import cellcalling
    from milkcells._utils import InputError

    whole = cellcalling.call_cells(raw_sample, method="none")
    with caplog.at_level("WARNING"):
        out = qc.filter_cells(whole)
    rec = out.uns["milkcells"]["qc"]
    assert rec["n_removed"] > rec["n_cells_in"] / 2
    assert rec["flags"].startswith("QC removed") and "QC removed" in caplog.text
    table = qc.qc_summary_table({"s1": out.uns["milkcells"]})
    assert "QC removed" in table.loc[0, "flags"] and table.loc[0, "cell_calling"] == "none"
    with pytest.raises(InputError, match="T1_d005.*field 'qc'"):
        qc.filter_cells(whole, error_on_excess_loss=True)


def test_no_flag_when_losses_are_small(called_sample):
    out = qc.filter_cells(called_sample)
    assert out.uns["milkcells"]["qc"]["flags"] == ""
    assert qc.qc_summary_table({"s1": out.uns["milkcells"]}).loc[0, "flags"] == ""
