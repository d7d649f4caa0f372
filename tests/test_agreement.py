import anndata as ad
import numpy as np
import pandas as pd
import pytest

from milkcells import agreement, demo
from milkcells.markertable import load_marker_table

# A small marker table with a three-level hierarchy, independent of the shipped table's revisions.
_ROWS = [
    ("compartment", "epithelial", "", ""),
    ("compartment", "immune", "", ""),
    ("compartment", "stromal", "", ""),
    ("cell_type", "epithelial", "LC1", ""),
    ("cell_type", "epithelial", "LC2", ""),
    ("cell_type", "immune", "T cell", ""),
    ("cell_type", "immune", "CD4 T cell", "T cell"),
    ("cell_type", "immune", "CD8 T cell", "T cell"),
    ("cell_type", "immune", "B cell", ""),
    ("cell_type", "immune", "neutrophil", ""),
    ("cell_type", "immune", "macrophage", ""),
    ("cell_type", "immune", "GPNMB macrophage", "macrophage"),
    ("cell_type", "immune", "CSN1S1 macrophage", "macrophage"),
    ("cell_type", "stromal", "fibroblast", ""),
]


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "markers.tsv"
    pd.DataFrame(
        [(lv, comp, ct, "GENE1", par) for lv, comp, ct, par in _ROWS],
        columns=["level", "compartment", "cell_type", "positive", "parent"],
    ).to_csv(path, sep="\t", index=False)
    return load_marker_table(path)


def _adata(author, calls):
    return ad.AnnData(
        obs=pd.DataFrame({"author_label": author, "cell_type": calls}, index=[f"c{i}" for i in range(len(calls))])
    )


def test_label_lineage(table, tmp_path):
    assert agreement.label_lineage("CD4 T cell", table) == ["CD4 T cell", "T cell", "immune"]
    assert agreement.label_lineage("LC1", table) == ["LC1", "epithelial"]
    assert agreement.label_lineage("immune", table) == ["immune"]
    assert agreement.label_lineage("unassigned", table) == ["unassigned"]
    assert agreement.label_lineage("my own label", table) == ["my own label"]
    assert agreement.label_lineage("CD4 T cell", tmp_path / "markers.tsv") == ["CD4 T cell", "T cell", "immune"]


def test_shipped_table_lineages_end_in_their_compartment():
    shipped = load_marker_table()
    for ct, comp, parent in shipped.loc[
        shipped["level"] == "cell_type", ["cell_type", "compartment", "parent"]
    ].itertuples(index=False):
        lin = agreement.label_lineage(ct)
        assert lin[0] == ct and lin[-1] == comp
        assert len(lin) == (3 if parent else 2)
        if parent:
            assert lin[1] == parent


def test_shipped_table_calls_are_mapped_up_to_the_author_level():
    shipped = load_marker_table()
    sub = shipped[(shipped["level"] == "cell_type") & (shipped["parent"] != "")]
    if sub.empty:
        pytest.skip("the shipped marker table has no subtypes")
    parent, comp = sub["parent"].iloc[0], sub["compartment"].iloc[0]
    children = list(sub.loc[sub["parent"] == parent, "cell_type"])
    calls = (children * 2)[:4] + [parent] * 2
    author = [parent.upper()] * 4 + [comp] * 2  # matched case-insensitively; a compartment-level label
    summary, per_label, _ = agreement.label_agreement(_adata(author, calls))
    per = per_label.set_index("author_label")
    assert per.loc[parent, "recall"] == 1.0 and per.loc[comp, "recall"] == 1.0
    assert summary["macro_recall"] == 1.0 and summary["accuracy"] == 1.0


def test_nyquist_t_cells_match_cd4_and_cd8_calls(table):
    author = ["T cells"] * 4 + ["B cells"] * 2
    calls = ["CD4 T cell", "CD8 T cell", "CD4 T cell", "T cell", "B cell", "B cell"]
    summary, per_label, confusion = agreement.label_agreement(
        _adata(author, calls), study="nyquist2022", marker_table=table
    )
    per = per_label.set_index("author_label")
    assert per.loc["T cell", "recall"] == 1.0 and per.loc["T cell", "precision"] == 1.0
    assert per.loc["T cell", "f1"] == 1.0 and per.loc["T cell", "level"] == "cell_type"
    assert summary["macro_f1"] == 1.0 and summary["accuracy"] == 1.0
    assert confusion.loc["T cell", "CD4 T cell"] == 2  # the confusion matrix keeps the raw calls


def test_twigger_im_is_a_compartment(table):
    author = ["IM"] * 4 + ["LC2"] * 2
    calls = ["B cell", "neutrophil", "CD8 T cell", "GPNMB macrophage", "LC2", "LC2"]
    summary, per_label, _ = agreement.label_agreement(_adata(author, calls), study="twigger2022", marker_table=table)
    per = per_label.set_index("author_label")
    assert per.loc["immune", "recall"] == 1.0 and per.loc["immune", "level"] == "compartment"
    assert per.loc["immune", "precision"] == 1.0
    assert summary["macro_recall"] == 1.0


def test_coarser_call_is_not_correct(table):
    author = ["CD4 T cell"] * 4
    calls = ["CD4 T cell", "T cell", "T cell", "CD8 T cell"]
    summary, per_label, _ = agreement.label_agreement(_adata(author, calls), marker_table=table)
    row = per_label.set_index("author_label").loc["CD4 T cell"]
    assert row["recall"] == pytest.approx(1 / 4) and row["coarser_share"] == pytest.approx(2 / 4)
    assert row["level"] == "subtype" and row["most_called"] == "T cell"
    assert summary["accuracy"] == pytest.approx(1 / 4)


def test_unassigned_lowers_recall(table):
    author = ["neutrophils"] * 4 + ["B cells"] * 4
    calls = ["neutrophil", "unassigned", "unassigned", "neutrophil"] + ["B cell"] * 4
    summary, per_label, _ = agreement.label_agreement(_adata(author, calls), study="nyquist2022", marker_table=table)
    per = per_label.set_index("author_label")
    assert per.loc["neutrophil", "recall"] == 0.5 and per.loc["neutrophil", "unassigned_share"] == 0.5
    assert per.loc["neutrophil", "precision"] == 1.0
    assert per.loc["neutrophil", "f1"] == pytest.approx(2 / 3)
    assert summary["macro_recall"] == pytest.approx(0.75)
    assert summary["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert summary["unassigned_share"] == pytest.approx(2 / 8)
    # unassigned is never correct, not even against an 'unassigned' reference
    s, per, _ = agreement.label_agreement(_adata(["unassigned"] * 2, ["unassigned"] * 2), marker_table=table)
    assert per["recall"].iloc[0] == 0 and per["level"].iloc[0] == "absent"


def test_precision_counts_calls_mapped_up_to_the_label(table):
    # two cells the authors call B cells are called T-cell subtypes: false positives of T cell
    author = ["T cell"] * 2 + ["B cell"] * 2 + ["CD4 T cell"] * 2
    calls = ["CD4 T cell", "T cell", "CD8 T cell", "B cell", "CD4 T cell", "CD4 T cell"]
    summary, per_label, _ = agreement.label_agreement(_adata(author, calls), marker_table=table)
    per = per_label.set_index("author_label")
    # called T cell or below: 5 cells, of which the authors put 4 at or below T cell
    assert per.loc["T cell", "precision"] == pytest.approx(4 / 5) and per.loc["T cell", "recall"] == 1.0
    assert per.loc["B cell", "precision"] == 1.0 and per.loc["B cell", "recall"] == 0.5
    assert per.loc["CD4 T cell", "precision"] == pytest.approx(2 / 3)
    f1 = per["f1"].to_numpy()
    assert summary["macro_f1"] == pytest.approx(f1.mean())
    assert list(summary)[:2] == ["macro_f1", "macro_recall"] and list(summary)[-1] == "adjusted_rand_index"


def test_labels_absent_from_the_table_are_reported_apart(table):
    author = ["T cells"] * 2 + ["removed"] * 2
    calls = ["CD4 T cell", "CD8 T cell", "unassigned", "B cell"]
    summary, per_label, _ = agreement.label_agreement(_adata(author, calls), study="nyquist2022", marker_table=table)
    assert summary["absent_labels"] == ["removed"] and summary["absent_share"] == 0.5
    assert summary["macro_f1"] == 1.0 and summary["accuracy"] == 1.0


def test_author_labels_are_mapped_before_comparing():
    author = ["luminal 2"] * 4 + ["luminal/lactocyte"] * 4 + ["milk macrophages"] * 2
    calls = ["LC1"] * 4 + ["LC2"] * 3 + ["LC1"] + ["CSN1S1 macrophage"] * 2
    summary, per_label, confusion = agreement.label_agreement(_adata(author, calls), study="nyquist2022")
    per = per_label.set_index("author_label")
    assert per.loc["LC1", "recall"] == 1.0 and per.loc["LC1", "precision"] == pytest.approx(4 / 5)
    assert per.loc["LC2", "recall"] == pytest.approx(3 / 4)
    assert summary["accuracy"] == pytest.approx(9 / 10)
    assert confusion.loc["LC2", "LC1"] == 1


def test_identical_labelings_agree_fully():
    labels = ["B cell", "neutrophil", "LC1"] * 5
    summary, per_label, _ = agreement.label_agreement(_adata(labels, labels))
    assert summary["adjusted_rand_index"] == pytest.approx(1.0)
    assert summary["macro_f1"] == pytest.approx(1.0)
    assert np.allclose(per_label["recall"], 1.0)


def test_case_insensitive_match_and_errors(table):
    mapped = agreement.map_author_labels(pd.Series(["t cell", "Neutrophil", "IMMUNE", "odd label"]), marker_table=table)
    assert list(mapped) == ["T cell", "neutrophil", "immune", "odd label"]
    with pytest.raises(ValueError, match="author_key"):
        agreement.label_agreement(_adata(["a"], ["b"]), author_key="nope")
    with pytest.raises(ValueError, match="key"):
        agreement.label_agreement(_adata(["a"], ["b"]), key="nope")


def test_truth_agreement_maps_up_and_reports_absent_types(table):
    truth = ["CD4 T cell"] * 4 + ["T cell"] * 2 + ["LC1"] * 2 + ["mast cell"] * 2 + ["LC2"] * 2
    comp = ["immune"] * 6 + ["epithelial"] * 2 + ["immune"] * 2 + ["epithelial"] * 2
    calls = [
        "CD4 T cell",
        "CD4 T cell",
        "T cell",
        "unassigned",
        "CD8 T cell",
        "CD4 T cell",
        "LC1",
        "LC1",
        "unassigned",
        "B cell",
        "LC1",
        "LC1",
    ]
    called_comp = (
        ["immune"] * 3
        + ["unassigned"]
        + ["immune"] * 2
        + ["epithelial"] * 2
        + ["unassigned", "immune"]
        + ["epithelial"] * 2
    )
    status = ["cell"] * 12 + ["doublet"]
    obs = pd.DataFrame(
        {
            "sim_status": status,
            "sim_cell_type": truth + ["LC1"],
            "sim_compartment": comp + ["epithelial"],
            "cell_type": calls + ["LC1"],
            "compartment": called_comp + ["epithelial"],
        },
        index=[f"c{i}" for i in range(13)],
    )
    res = demo.truth_agreement(ad.AnnData(obs=obs), marker_table=table)
    assert res["n_kept"] == 13 and res["n_singlets"] == 12
    assert res["non_singlet_share"] == pytest.approx(1 / 13)
    assert res["compartment_accuracy"] == pytest.approx(10 / 12)
    rec = res["cell_type_recall"]
    assert rec["CD4 T cell"] == 0.5  # one coarser call, one unassigned
    assert rec["T cell"] == 1.0  # CD4 and CD8 calls are T cells
    assert rec["LC1"] == 1.0 and rec["LC2"] == 0.0
    assert "mast cell" not in rec and res["absent_types"] == ["mast cell"]
    assert res["absent_type_unassigned"] == {"mast cell": 0.5}
    assert res["unassigned_share"] == pytest.approx(2 / 12)
    # CD4 T cell: p = 2/3 (of 3 CD4 calls, one is of a 'T cell' cell, not at or below CD4), r = 1/2;
    # T cell: every T-lineage call is of a T-lineage cell, p = r = 1; LC1: p = 2/4, r = 1; LC2: f1 = 0
    f1 = {"CD4 T cell": 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), "T cell": 1.0, "LC1": 2 * 0.5 / 1.5, "LC2": 0.0}
    assert res["cell_type_macro_f1"] == pytest.approx(np.mean(list(f1.values())))
    assert list(res)[-1] == "cell_type_ari"
    for k in (
        "n_kept",
        "n_singlets",
        "non_singlet_share",
        "compartment_accuracy",
        "cell_type_ari",
        "cell_type_macro_f1",
    ):
        assert k in res
