import numpy as np
import pandas as pd
import pytest

from milkcells import InputError, annotate, cellcalling, cluster, datasets, preprocess, qc


def test_shipped_marker_table():
    t = annotate.load_marker_table()
    assert set(t["level"]) == {"compartment", "cell_type"}
    assert set(t.loc[t["level"] == "compartment", "compartment"]) == set(annotate.COMPARTMENTS)
    assert t["ontology_id"].str.match(r"^CL:\d{7}$").all()
    assert (t["source"].str.len() > 0).all()
    ambient = set(annotate.curated_ambient_genes())
    comp_genes = {g for row in t.loc[t["level"] == "compartment", "positive"] for e in row for g in e.split("|")}
    assert not comp_genes & ambient, "ambient milk transcripts must not be compartment markers"
    expected = {"LC1", "LC2", "luminal progenitor", "basal", "macrophage", "T cell", "B cell",
                "neutrophil", "dendritic cell", "fibroblast", "endothelial"}
    assert expected <= set(t["cell_type"])


def test_user_marker_table_errors(tmp_path):
    p = tmp_path / "m.tsv"
    p.write_text("level\tcompartment\tcell_type\nclusterish\tepithelial\tX\n")
    with pytest.raises(InputError, match="missing columns \\['positive'\\]"):
        annotate.load_marker_table(p)
    p.write_text("level\tcompartment\tcell_type\tpositive\ncell_type\tglia\tX\tA,B\n")
    with pytest.raises(InputError, match="unknown compartment"):
        annotate.load_marker_table(p)
    p.write_text("level\tcompartment\tcell_type\tpositive\ncell_type\timmune\tX\t\n")
    with pytest.raises(InputError, match="no positive markers"):
        annotate.load_marker_table(p)
    with pytest.raises(InputError, match="not found"):
        annotate.load_marker_table(tmp_path / "absent.tsv")


def test_assign_labels_unassigned_when_weak_or_ambiguous():
    scores = pd.DataFrame({"a": [0.9, 0.2, 0.6], "b": [0.1, 0.1, 0.55]}, index=["c0", "c1", "c2"])
    calls = annotate.assign_labels(scores, min_score=0.3, min_margin=0.1)
    assert list(calls["label"]) == ["a", "unassigned", "unassigned"]
    assert calls.loc["c0", "confidence"] == pytest.approx(0.8 / 0.9)


def _cluster_sample(ambient_umis):
    raw = datasets.simulate_milk_sample("AMB", donor="D9", days_postpartum=3, n_cells=500, n_empty=2000,
                                        n_genes=800, ambient_umis=ambient_umis)
    raw.obs["sample"] = "AMB"
    a = qc.filter_cells(cellcalling.call_cells(raw))
    m = preprocess.merge_samples([a])
    preprocess.preprocess(m, n_top_genes=500, n_pcs=20)
    cluster.cluster(m, umap=False)
    return m


def test_heavy_ambient_casein_does_not_make_immune_cells_epithelial():
    m = _cluster_sample(ambient_umis=600)
    imm = m.obs["sim_compartment"].astype(str) == "immune"
    casein = np.asarray(m[imm.to_numpy(), ["CSN2", "LALBA", "CSN3"]].layers["counts"].sum(1)).ravel()
    assert np.median(casein) > 50  # the immune cells really do carry a lot of casein
    annotate.annotate_compartments(m)
    single = m.obs["sim_status"].astype(str) == "cell"
    calls = m.obs.loc[single & imm, "compartment"].astype(str)
    assert (calls == "immune").mean() >= 0.98
    assert {"CSN2", "LALBA", "CSN3"} <= set(m.uns["milkcells"]["compartment"]["ambient_excluded"])


def test_casein_marker_in_user_table_is_ignored():
    m = _cluster_sample(ambient_umis=300)
    t = annotate.load_marker_table()
    row = t.index[t["compartment"].eq("epithelial") & t["level"].eq("compartment")][0]
    t.at[row, "positive"] = ["CSN2", "LALBA", "EPCAM", "KRT18"]
    sets = annotate.marker_sets(m, table=t, level="compartment", exclude=annotate.ambient_prone_genes(m))
    assert sets["epithelial"]["positive"] == ["EPCAM", "KRT18"]


def test_alias_resolution():
    assert annotate._resolve(["CXCL8|IL8", "X|Y"], {"IL8", "Y"}, set()) == ["IL8", "Y"]
    assert annotate._resolve(["CXCL8|IL8"], {"CXCL8", "IL8"}, set()) == ["CXCL8"]
