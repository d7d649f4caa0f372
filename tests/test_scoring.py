import numpy as np
import pandas as pd
import pytest

from milkcells import scoring


def test_assign_labels_unassigned_when_weak_or_ambiguous():
    scores = pd.DataFrame({"a": [0.9, 0.2, 0.6], "b": [0.1, 0.1, 0.55]}, index=["c0", "c1", "c2"])
    calls = scoring.assign_labels(scores, min_score=0.3, min_margin=0.1)
    assert list(calls["label"]) == ["a", "unassigned", "unassigned"]
    assert calls.loc["c0", "confidence"] == pytest.approx(0.8 / 0.9)


def test_milk_transcripts_count_only_in_excess_of_ambient():
    import scipy.sparse as sp

    ad_ = pytest.importorskip("anndata")
    X = sp.csr_matrix(np.array([[5, 100], [60, 100], [0, 100]], dtype=np.float32))
    a = ad_.AnnData(
        X=X,
        obs=pd.DataFrame({"sample": ["s"] * 3, "ambient_contamination": [0.05, 0.05, 0.05]}, index=["a", "b", "c"]),
        var=pd.DataFrame({"ambient_fraction_s": [0.5, 0.5]}, index=["CSN1S1", "X"]),
    )
    a.layers["counts"] = a.X.copy()
    ex = scoring.milk_excess(a, ["CSN1S1"])
    # expected ambient CSN1S1: 0.05 * n * 0.5 = 2.6 (cell a), 4 (cell b): 5 counts is no excess, 60 is
    assert ex[:, 0].tolist() == [False, True, False]
    del a.obs["ambient_contamination"]
    assert not scoring.milk_excess(a, ["CSN1S1"]).any()  # without an ambient estimate, never evidence


def test_a_cluster_sharing_a_related_programme_at_a_fraction_is_not_that_type():
    # a cluster showing the neutrophil programme at a third of the neutrophils' level (mast cells,
    # which the table does not know, share granulocyte genes): a clear lead, yet not a neutrophil
    scores = pd.DataFrame(
        {"neutrophil": [0.45] * 20 + [0.15] * 20, "eosinophil": [0.05] * 40}, index=[f"c{i}" for i in range(40)]
    )
    groups = pd.Series(["0"] * 20 + ["1"] * 20, index=scores.index)
    cells, table = scoring.call_groups(scores, groups, min_score=0.1, min_relative=0.5, override_ratio=None)
    assert list(table["label"]) == ["neutrophil", "unassigned"]
    assert table["status"].iloc[1] == "shared"
    assert (cells["label"].iloc[20:] == "unassigned").all()
    # without the requirement the lead alone would call it
    _, plain = scoring.call_groups(scores, groups, min_score=0.1, override_ratio=None)
    assert list(plain["label"]) == ["neutrophil", "neutrophil"]
