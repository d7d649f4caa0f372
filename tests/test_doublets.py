import pytest

from milkcells import doublets, qc


@pytest.fixture(scope="module")
def qc_sample(called_sample):
    return qc.filter_cells(called_sample)


def test_scrublet_removes_doublets(qc_sample):
    out = doublets.remove_doublets(qc_sample)
    s_in = qc_sample.obs["sim_status"].astype(str)
    s_out = out.obs["sim_status"].astype(str)
    assert (s_out == "doublet").sum() <= 0.7 * (s_in == "doublet").sum()
    assert (s_out == "cell").sum() >= 0.97 * (s_in == "cell").sum()
    rec = out.uns["milkcells"]["doublets"]
    assert rec["n_doublets"] == qc_sample.n_obs - out.n_obs
    assert "doublet_score" in out.obs


def test_fixed_threshold(qc_sample):
    out = doublets.remove_doublets(qc_sample, threshold=0.99)
    assert out.uns["milkcells"]["doublets"]["threshold_used"] == 0.99
    assert out.n_obs >= qc_sample.n_obs - 2


def test_bad_rate(qc_sample):
    with pytest.raises(ValueError, match="expected_rate"):
        doublets.remove_doublets(qc_sample, expected_rate=2)
