"""milkcells' EmptyDrops and barcode-rank points against R's DropletUtils (skipped without it)."""

import importlib.util

import pytest

from .conftest import REPO

_spec = importlib.util.spec_from_file_location("compare_dropletutils", REPO / "scripts" / "compare_dropletutils.py")
compare_dropletutils = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_dropletutils)

pytestmark = pytest.mark.skipif(
    not compare_dropletutils.have_dropletutils(),
    reason="Rscript with DropletUtils is absent (apt-get install r-bioc-dropletutils)",
)


@pytest.mark.parametrize("name", ["raw", "pretrimmed_100"])
def test_agrees_with_dropletutils(name):
    adata, lower = compare_dropletutils.matrices([name], small=True)[name]
    row = compare_dropletutils.compare(adata, lower, niters=3000)
    print(row)
    assert row["knee_diff"] <= 0.02 and row["inflection_diff"] <= 0.02
    assert row["calls_in_common"] >= 0.98  # Monte Carlo p-values: a barcode or two at the FDR edge may differ
    assert row["pvalue_spearman"] >= 0.99
