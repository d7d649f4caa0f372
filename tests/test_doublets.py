import pytest

from milkcells import cellcalling, datasets, doublets, qc


@pytest.fixture(scope="module")
def qc_sample():
    raw = datasets.simulate_milk_sample("DBL_d005", donor="D1", days_postpartum=5, n_cells=800, n_empty=3000,
                                        n_genes=1000, doublet_rate=0.08)
    return qc.filter_cells(cellcalling.call_cells(raw, niters=2000))


def test_scrublet_removes_doublets(qc_sample):
    out = doublets.remove_doublets(qc_sample)
    s_in = qc_sample.obs["sim_status"].astype(str)
    s_out = out.obs["sim_status"].astype(str)
    # Scrublet finds doublets of two different cell types; two lactocytes look like one
    comps = {t: ct.compartment for t, ct in datasets.SIM_CELL_TYPES.items()}

    def cross(obs):
        pairs = obs["sim_doublet_of"].astype(str)
        return pairs[pairs != ""].map(lambda p: comps[p.split("+")[0]] != comps[p.split("+")[1]])

    n_in, n_out = cross(qc_sample.obs).sum(), cross(out.obs).sum()
    print(f"cross-compartment doublets: {n_in} in, {n_out} left")
    assert n_in >= 10 and n_out <= 0.4 * n_in
    assert (s_out == "doublet").sum() <= 0.6 * (s_in == "doublet").sum()
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
