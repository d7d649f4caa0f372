import anndata as ad
import numpy as np
import pandas as pd
import pytest

from milkcells import agreement


def _adata(author, calls):
    return ad.AnnData(obs=pd.DataFrame({"author_label": author, "cell_type": calls},
                                       index=[f"c{i}" for i in range(len(calls))]))


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
    labels = ["T cell", "B cell", "macrophage"] * 5
    summary, per_label, _ = agreement.label_agreement(_adata(labels, labels))
    assert summary["adjusted_rand_index"] == pytest.approx(1.0)
    assert np.allclose(per_label["recall"], 1.0)


def test_case_insensitive_match_and_errors():
    mapped = agreement.map_author_labels(pd.Series(["t cell", "Neutrophil", "odd label"]))
    assert list(mapped) == ["T cell", "neutrophil", "odd label"]
    with pytest.raises(ValueError, match="author_key"):
        agreement.label_agreement(_adata(["a"], ["b"]), author_key="nope")
