"""Cell typing on simulated milk that is not the annotator's mirror (milkcells.simulation).

Two grid points of benchmarks/annotation_robustness.py (the whole grid is in the README): canonical
markers 70 % expressed and shared at 10 % with sibling types, and the hardest point, 50 % expressed and
shared at 30 %; each expressed marker in part of its type's cells; mast cells, which the marker table
does not know; a sample with a single immune type; a 150-cell sample. The thresholds are the acceptance
figures of the cell-typing issue. On the code before milkcells 0.2 these fail: clusters were scored
against themselves and non-exclusive markers made every immune cell 'neutrophil'; on 0.2 the hardest
point gave macro-F1 0.7996 (CD8 T cells unassigned between T and NK genes, GPNMB macrophages typed
CSN1S1 macrophages on a shared gene, stromal types mixed by a 30-component graph of 90 cells).
"""

import importlib.util

import pytest

from .conftest import REPO

#: (markers expressed, sharing) -> minimum macro-F1
POINTS = {(0.7, 0.1): 0.9, (0.5, 0.3): 0.8}


@pytest.fixture(scope="module", params=sorted(POINTS), ids=lambda p: f"markers{p[0]:.0%}-sharing{p[1]:.0%}")
def grid_point(request):
    spec = importlib.util.spec_from_file_location(
        "annotation_robustness", REPO / "benchmarks" / "annotation_robustness.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    m, parts = bench.run_pipeline(bench.simulate_dataset(*request.param))
    res = bench.evaluate(m, parts)
    res["min_macro_f1"] = POINTS[request.param]
    print({k: v for k, v in res.items() if k != "recall"}, res["recall"])
    return res


def test_compartments_and_types_with_non_exclusive_markers(grid_point):
    assert grid_point["compartment_accuracy"] >= 0.98
    assert grid_point["macro_f1"] >= grid_point["min_macro_f1"]
    assert sum(r >= 0.8 for r in grid_point["recall"].values()) >= 0.8 * len(grid_point["recall"])


def test_absent_type_is_unassigned(grid_point):
    assert grid_point["absent_type_unassigned"] >= 0.8


def test_no_mixed_immune_cluster_gets_one_confident_label(grid_point):
    assert grid_point["mixed_immune_clusters_confidently_labelled"] == 0


def test_single_immune_type_sample_and_small_sample(grid_point):
    assert grid_point["one_type_sample_recall"] >= 0.9
    assert grid_point["small_sample_compartment_accuracy"] >= 0.97
