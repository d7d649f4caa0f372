"""Cell typing on simulated milk that is not the annotator's mirror (milkcells.simulation).

Canonical markers 70 % expressed, each in part of its type's cells, shared at 10 % with sibling types;
mast cells, which the marker table does not know; a sample with a single immune type; a 150-cell sample.
One grid point of benchmarks/annotation_robustness.py (the whole grid is in the README). On the code
before milkcells 0.2 these fail: clusters were scored against themselves and non-exclusive markers
made every immune cell 'neutrophil'.
"""

import importlib.util

import pytest

from .conftest import REPO


@pytest.fixture(scope="module")
def grid_point():
    spec = importlib.util.spec_from_file_location("annotation_robustness",
                                                  REPO / "benchmarks" / "annotation_robustness.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    m, parts = bench.run_pipeline(bench.simulate_dataset(0.7, 0.1))
    res = bench.evaluate(m, parts)
    print({k: v for k, v in res.items() if k != "recall"}, res["recall"])
    return res


def test_compartments_and_types_with_non_exclusive_markers(grid_point):
    assert grid_point["compartment_accuracy"] >= 0.98
    assert grid_point["macro_f1"] >= 0.9
    assert sum(r >= 0.8 for r in grid_point["recall"].values()) >= 0.8 * len(grid_point["recall"])


def test_absent_type_is_unassigned(grid_point):
    assert grid_point["absent_type_unassigned"] >= 0.8


def test_no_mixed_immune_cluster_gets_one_confident_label(grid_point):
    assert grid_point["mixed_immune_clusters_confidently_labelled"] == 0


def test_single_immune_type_sample_and_small_sample(grid_point):
    assert grid_point["one_type_sample_recall"] >= 0.9
    assert grid_point["small_sample_compartment_accuracy"] >= 0.97
