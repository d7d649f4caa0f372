"""Real data: a 302-cell breast-tumour 10x matrix with independent CopyKAT calls.

Aneuploid (tumour) cells are epithelial; diploid cells are mostly immune and
stromal. Skipped when ../shared is absent.
"""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from .conftest import TUMOUR, needs_shared, run_snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.shared, needs_shared()]


@pytest.fixture(scope="module")
def tumour_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("tumour")
    (wd / "samples.tsv").write_text(
        f"sample\tpath\tdonor\tbatch\tsource\tdays_postpartum\ntumour\t{TUMOUR}\tpatient1\tb1\ttissue\t\n"
    )
    run_snakemake(wd, "--cores", "2", "--config", "samples=samples.tsv", "outdir=out")
    a = ad.read_h5ad(wd / "out" / "annotated.h5ad")
    pred = pd.read_csv(TUMOUR / "copykat_prediction.tsv", sep="\t", index_col=0).iloc[:, 0]
    a.obs["copykat"] = pred.reindex(a.obs["barcode"].str.replace("-1", "", regex=False)).to_numpy()
    return a


def test_most_cells_kept(tumour_run):
    print(f"kept {tumour_run.n_obs} of 302 cells")
    assert tumour_run.n_obs >= 0.8 * 302
    assert tumour_run.obs["copykat"].notna().all()


def test_aneuploid_cells_are_epithelial(tumour_run):
    obs = tumour_run.obs
    aneu = obs[obs["copykat"] == "aneuploid"]
    share = (aneu["compartment"] == "epithelial").mean()
    print(f"aneuploid epithelial: {share:.3f} of {len(aneu)}")
    assert share >= 0.97


def test_diploid_cells_are_not_epithelial(tumour_run):
    obs = tumour_run.obs
    dip = obs[obs["copykat"] == "diploid"]
    share = (dip["compartment"] != "epithelial").mean()
    print(
        f"diploid non-epithelial: {share:.3f} of {len(dip)}; compartments "
        f"{dip['compartment'].value_counts().to_dict()}; types {dip['cell_type'].value_counts().to_dict()}"
    )
    assert share >= 0.95
    assert (dip["compartment"] == "immune").sum() >= 0.5 * len(dip)


def test_diploid_collagen_cells_are_stromal(tumour_run):
    """A handful of fibroblasts (COL1A1/COL1A2/LUM in the hundreds of UMIs, no keratin) sit in tumour clusters:
    too few to form a cluster of their own, they must still not be called epithelial."""
    obs = tumour_run.obs
    counts = tumour_run[:, ["COL1A1", "COL1A2"]].layers["counts"]
    collagen = np.asarray(counts.sum(axis=1)).ravel() >= 50
    fib = obs[(obs["copykat"] == "diploid").to_numpy() & collagen]
    print(f"{len(fib)} diploid collagen-high cells: {fib['compartment'].value_counts().to_dict()}")
    assert len(fib) >= 5
    assert (fib["compartment"] == "stromal").mean() >= 0.8
