"""The Snakemake workflow end to end on the tiny simulated demo, plus its error handling."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from milkcells import demo

from .conftest import REPO, run_snakemake

pytestmark = pytest.mark.workflow

OUTPUTS = [
    "annotated.h5ad",
    "compartments/epithelial.h5ad",
    "compartments/immune.h5ad",
    "tables/qc_summary.tsv",
    "tables/composition.tsv",
    "tables/markers.tsv",
    "tables/clusters.tsv",
    "figures/umap_compartment.png",
    "figures/umap_cell_type.png",
    "figures/umap_sample.png",
    "figures/umap_cell_type_confidence.png",
    "figures/marker_dotplot.png",
    "figures/qc_distributions.png",
    "figures/composition_cell_type.png",
    "figures/composition_compartment.png",
    "figures/composition_time.png",
    "figures/author_confusion.png",
    "tables/ambient.tsv",
    "tables/composition_time.tsv",
    "tables/resolution_sweep.tsv",
    "tables/cell_type_calls.tsv",
    "tables/author_agreement.tsv",
]


def test_outputs_exist(tiny_run):
    wd, _ = tiny_run
    for rel in OUTPUTS:
        p = wd / "out" / rel
        assert p.is_file() and p.stat().st_size > 0, rel
    assert not list((wd / "out").rglob("*.tmp*")), "temporary files left behind"


def test_annotated_atlas(tiny_run):
    wd, _ = tiny_run
    a = ad.read_h5ad(wd / "out" / "annotated.h5ad")
    for col in (
        "sample",
        "donor",
        "compartment",
        "cell_type",
        "leiden",
        "total_counts",
        "pct_counts_mt",
        "n_genes_by_counts",
        "doublet_score",
        "days_postpartum",
    ):
        assert col in a.obs, col
    assert "X_umap" in a.obsm
    counts = a.layers["counts"]
    assert np.allclose(counts.data, np.round(counts.data))
    assert set(a.obs["compartment"].astype(str)) <= {"epithelial", "immune", "stromal", "unassigned"}
    uns = a.uns["milkcells"]
    assert "scanpy" in uns["versions"] and "milkcells" in uns["versions"]
    assert uns["config"]["qc"]["nmads_mito"] == 3
    assert uns["integrate"]["params"]["method"] == "harmony"
    # the demo simulator plants the marker table's own genes, so this checks the plumbing, not the
    # science: accuracy on data not built from the table is benchmarks/annotation_robustness.py's
    res = demo.truth_agreement(a)
    assert res["compartment_accuracy"] >= 0.98, res
    assert res["cell_type_macro_f1"] >= 0.85, res
    assert min(res["cell_type_recall"].values()) >= 0.6, res


def test_compartment_files(tiny_run):
    wd, _ = tiny_run
    full = ad.read_h5ad(wd / "out" / "annotated.h5ad")
    for comp in ("epithelial", "immune"):
        sub = ad.read_h5ad(wd / "out" / "compartments" / f"{comp}.h5ad")
        assert (sub.obs["compartment"].astype(str) == comp).all()
        assert sub.n_obs == (full.obs["compartment"].astype(str) == comp).sum()
        assert "leiden_compartment" in sub.obs and "X_umap" in sub.obsm
        assert "counts" in sub.layers
        # the cell-type calls per cluster: kept in the atlas exactly as the compartment made them (they
        # pass through a table between the rules), and in the table for users (6 significant digits)
        own = sub.uns["milkcells"]["cell_type"]["clusters"]
        pd.testing.assert_frame_equal(full.uns["milkcells"]["cell_types"][comp], own, check_exact=True)
        table = pd.read_csv(wd / "out" / "tables" / "cell_type_calls.tsv", sep="\t", dtype={"leiden_compartment": str})
        table = table[table["compartment"] == comp].drop(columns="compartment").dropna(axis=1, how="all")
        pd.testing.assert_frame_equal(
            table.reset_index(drop=True), own, check_dtype=False, check_exact=False, rtol=1e-5, atol=1e-6
        )
        assert set(own["leiden_compartment"]) == set(sub.obs["leiden_compartment"].astype(str))


def test_tables(tiny_run):
    wd, _ = tiny_run
    qcs = pd.read_csv(wd / "out" / "tables" / "qc_summary.tsv", sep="\t")
    assert list(qcs["sample"]) == ["SIM1_d004", "SIM1_d120", "SIM2_d010"]
    assert (qcs["input_type"] == "raw").all()
    assert (qcs["barcodes_in"] > qcs["cells_called"]).all()
    assert (qcs["cells_called"] - qcs["removed_qc_total"] - qcs["doublets"] == qcs["kept"]).all()
    for f in (
        "removed_low_counts",
        "removed_high_counts",
        "removed_low_genes",
        "removed_high_genes",
        "removed_high_mito",
    ):
        assert f in qcs
    comp = pd.read_csv(wd / "out" / "tables" / "composition.tsv", sep="\t")
    assert {"sample", "donor", "days_postpartum", "level", "label", "n_cells", "fraction"} <= set(comp.columns)
    imm = comp[(comp.level == "compartment") & (comp.label == "immune")].set_index("sample")["fraction"]
    assert imm["SIM1_d004"] > imm["SIM1_d120"]
    mk = pd.read_csv(wd / "out" / "tables" / "markers.tsv", sep="\t")
    assert {"group", "gene", "logfoldchange", "pval_adj"} <= set(mk.columns) and len(mk) > 0


def test_issue4_tables(tiny_run):
    wd, _ = tiny_run
    amb = pd.read_csv(wd / "out" / "tables" / "ambient.tsv", sep="\t")
    assert list(amb["sample"]) == ["SIM1_d004", "SIM1_d120", "SIM2_d010"]
    assert amb["rho"].between(0.01, 0.3).all()
    sweep = pd.read_csv(wd / "out" / "tables" / "resolution_sweep.tsv", sep="\t")
    assert set(sweep["compartment"]) == {"epithelial", "immune"} and sweep["chosen"].sum() == 2
    agree = pd.read_csv(wd / "out" / "tables" / "author_agreement.tsv", sep="\t")
    assert list(agree.columns[:4]) == ["author_label", "recall", "precision", "f1"]
    assert agree["total_macro_f1"].iloc[0] >= 0.85
    time = pd.read_csv(wd / "out" / "tables" / "composition_time.tsv", sep="\t")
    assert {"level", "label", "spearman_r", "pvalue"} <= set(time.columns)


def test_rerun_does_nothing(tiny_run):
    wd, _ = tiny_run
    proc = run_snakemake(
        wd, "-n", "--configfile", str(REPO / ".test" / "config.yaml"), "--config", "samples=samples.tsv", "outdir=out"
    )
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_report(tiny_run):
    wd, _ = tiny_run
    run_snakemake(
        wd,
        "--configfile",
        str(REPO / ".test" / "config.yaml"),
        "--config",
        "samples=samples.tsv",
        "outdir=out",
        "--report",
        "report.html",
    )
    html = (wd / "report.html").read_text(errors="replace")
    assert len(html) > 10_000 and "qc_summary" in html


def test_bad_sample_sheet_fails_before_running(tmp_path):
    (tmp_path / "s.tsv").write_text("sample\tpath\tdays_postpartum\nA\tmissing_dir\t5\n")
    proc = run_snakemake(tmp_path, "--cores", "1", "--config", "samples=s.tsv", "outdir=o", check=False)
    assert proc.returncode != 0
    msg = proc.stdout + proc.stderr
    assert "sample 'A'" in msg and "missing_dir" in msg and "field 'path'" in msg
    assert not (tmp_path / "o").exists()

    (tmp_path / "s.tsv").write_text("sample\tpath\tdays\nA\tx\n")
    proc = run_snakemake(tmp_path, "--cores", "1", "--config", "samples=s.tsv", "outdir=o", check=False)
    assert proc.returncode != 0


def test_bad_config_value_fails(tmp_path):
    (tmp_path / "s.tsv").write_text("sample\tpath\nA\tx.h5ad\n")
    proc = run_snakemake(tmp_path, "--cores", "1", "--config", "samples=s.tsv", "qc={'nmads_mito': -2}", check=False)
    assert proc.returncode != 0
    assert "nmads_mito" in proc.stdout + proc.stderr


def test_failed_rule_leaves_no_finished_output(tmp_path, called_sample):
    bad = called_sample[:50].copy()
    bad.X = bad.X * 0.5  # not integer counts
    bad.write_h5ad(tmp_path / "bad.h5ad")
    (tmp_path / "s.tsv").write_text("sample\tpath\nBAD\tbad.h5ad\n")
    proc = run_snakemake(tmp_path, "--cores", "1", "--config", "samples=s.tsv", "outdir=o", check=False)
    assert proc.returncode != 0
    log = (tmp_path / "o" / "logs" / "call_cells" / "BAD.log").read_text()
    assert "sample 'BAD'" in log and "not integers" in log
    assert not (tmp_path / "o" / "samples" / "BAD" / "called.h5ad").exists()
    assert not (tmp_path / "o" / "annotated.h5ad").exists()
    assert (tmp_path / "bad.h5ad").exists()  # input untouched
