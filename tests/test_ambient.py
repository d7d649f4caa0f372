import numpy as np
import pytest

from milkcells import ambient, annotate, cellcalling, cluster, demo, preprocess, qc


@pytest.fixture(scope="module")
def annotated():
    parts = []
    for name, amb in (("LOW", 60.0), ("HIGH", 300.0)):
        raw = demo.simulate_milk_sample(
            name, donor="D1", days_postpartum=4, n_cells=400, n_empty=2000, n_genes=800, ambient_umis=amb
        )
        raw.obs_names = [f"{name}_{b}" for b in raw.obs_names]
        raw.obs["sample"] = name
        parts.append(qc.filter_cells(cellcalling.call_cells(raw)))
    m = preprocess.merge_samples(parts)
    preprocess.preprocess(m, n_top_genes=500, n_pcs=20)
    cluster.cluster(m, umap=False)
    annotate.annotate_compartments(m)
    return m


def test_contamination_tracks_the_ambient_load(annotated):
    m = annotated.copy()
    table = ambient.estimate_contamination(m).set_index("sample")
    print(table.to_string())
    n = np.asarray(m.layers["counts"].sum(1)).ravel()
    # CSN1S1 macrophages express milk transcripts themselves: they are not ambient evidence
    imm = ((m.obs["compartment"] == "immune") & (m.obs["sim_cell_type"] != "CSN1S1 macrophage")).to_numpy()
    for s, amb in (("LOW", 60.0), ("HIGH", 300.0)):
        in_s = (m.obs["sample"] == s).to_numpy()
        # simulated ambient UMIs (log-normal, median amb, sd 0.5) over the immune cells' library sizes
        truth = np.mean(amb * np.exp(0.125) / n[in_s & imm])
        assert table.loc[s, "ambient_umis"] == pytest.approx(amb * np.exp(0.125), rel=0.25), s
        assert table.loc[s, "rho_pooled"] == pytest.approx(truth, rel=0.35), (s, truth)
    assert table.loc["HIGH", "rho"] > 3 * table.loc["LOW", "rho"]
    assert table.loc["HIGH", "top_ambient_genes"].startswith("CSN2")


def test_correction_removes_casein_from_immune_cells(annotated):
    m = annotated.copy()
    ambient.estimate_contamination(m)
    ambient.correct_ambient(m)
    imm = (
        (m.obs["compartment"] == "immune")
        & (m.obs["sim_cell_type"] != "CSN1S1 macrophage")
        & (m.obs["sim_status"] == "cell")
    ).to_numpy()  # doublets with a lactocyte hold real casein
    j = m.var_names.get_loc("CSN2")
    before = m.layers["counts"][imm][:, j].mean()
    after = m.layers["ambient_corrected"][imm][:, j].mean()
    assert before > 10 and after < 0.2 * before
    k = m.var_names.get_loc("PTPRC")  # real immune transcripts stay
    assert m.layers["ambient_corrected"][imm][:, k].mean() > 0.95 * m.layers["counts"][imm][:, k].mean()
    assert m.layers["ambient_corrected"].data.min() >= 0
    # the CSN1S1 macrophages' own casein stays
    mac = (m.obs["sim_cell_type"] == "CSN1S1 macrophage").to_numpy()
    c = m.var_names.get_loc("CSN1S1")
    assert m.layers["ambient_corrected"][mac][:, c].mean() > 0.7 * m.layers["counts"][mac][:, c].mean()


def test_filtered_input_has_no_estimate(annotated):
    m = annotated.copy()
    m.var = m.var.drop(columns=[c for c in m.var.columns if c.startswith("ambient_fraction")])
    table = ambient.estimate_contamination(m)
    assert table["rho"].isna().all()
    ambient.correct_ambient(m)
    assert (m.layers["ambient_corrected"] != m.layers["counts"]).nnz == 0


def test_correct_needs_estimate(annotated):
    m = annotated.copy()
    with pytest.raises(ValueError, match="run estimate_contamination first"):
        ambient.correct_ambient(m)
