import gzip

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from milkcells import InputError, io


def _sheet(tmp_path, text, name="samples.tsv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_sample_sheet_defaults(tmp_path):
    p = _sheet(tmp_path, "sample\tpath\textra\nA1\ta.h5ad\tx\nB-2\tb.h5ad\ty\n")
    with pytest.warns(io.MilkcellsWarning, match="'extra'"):
        df = io.read_sample_sheet(p)
    assert list(df.index) == ["A1", "B-2"]
    assert list(df["donor"]) == ["A1", "B-2"] and list(df["batch"]) == ["A1", "B-2"]
    assert set(df["source"]) == {"milk"}
    assert df["days_postpartum"].isna().all()
    assert list(df["extra"]) == ["x", "y"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("sample\tfile\nA\ta\n", "missing column 'path'"),
        ("sample\tpath\n", "lists no samples"),
        ("sample\tpath\nA\ta\nA\tb\n", "duplicated sample names"),
        ("sample\tpath\n\ta\n", "empty sample name on line 2"),
        ("sample\tpath\nA\t\n", "empty path"),
        ("sample\tpath\tdays_postpartum\nA\ta\tthree\n", "days_postpartum 'three' is not a number"),
        ("sample\tpath\tsource\nA\ta\tblood\n", "unknown source"),
        ("sample\tpath\nA B\ta\n", "unsupported characters"),
        ("sample\tpath\tdays_post_partum\nA\ta\t5\n", "did you mean 'days_postpartum'"),
        ("sample\tpath\tDonor\nA\ta\tD1\n", "did you mean 'donor'"),
    ],
)
def test_sample_sheet_errors_name_file_and_field(tmp_path, text, needle):
    p = _sheet(tmp_path, text)
    with pytest.raises(InputError, match=needle) as e:
        io.read_sample_sheet(p)
    assert str(p) in str(e.value)


def test_sample_sheet_missing_file(tmp_path):
    with pytest.raises(InputError, match="sample sheet not found"):
        io.read_sample_sheet(tmp_path / "nope.tsv")


@pytest.mark.parametrize("gzipped", [True, False])
@pytest.mark.parametrize("prefix", ["", "LMC1_"])
@pytest.mark.parametrize("legacy", [False, True])
def test_read_10x_mtx_variants(tmp_path, called_sample, gzipped, prefix, legacy):
    sub = called_sample[:50].copy()
    io.write_10x_mtx(sub, tmp_path, prefix=prefix, gzip=gzipped)
    if legacy:  # Cell Ranger 2 names: genes.tsv with two columns
        ext = ".gz" if gzipped else ""
        src = tmp_path / f"{prefix}features.tsv{ext}"
        df = pd.read_csv(src, sep="\t", header=None)
        src.unlink()
        df.iloc[:, :2].to_csv(tmp_path / f"{prefix}genes.tsv{ext}", sep="\t", header=False, index=False)
    a = io.read_sample(tmp_path, sample="LMC1", metadata={"donor": "D1", "days_postpartum": 12.0})
    assert a.shape == sub.shape
    assert np.array_equal(a.X.toarray(), sub.X.toarray())
    assert list(a.var["gene_ids"]) == list(sub.var["gene_ids"])
    assert a.obs_names[0] == f"LMC1_{sub.obs_names[0]}"
    assert (a.obs["donor"] == "D1").all() and (a.obs["days_postpartum"] == 12.0).all()
    assert a.var["mt"].sum() == 13


def test_read_h5ad_keeps_obs_and_prefers_counts_layer(tmp_path, called_sample):
    sub = called_sample[:30].copy()
    sub.layers["counts"] = sub.X.copy()
    sub.X = sub.X.multiply(0.5).tocsr()  # "normalised" X; counts layer must win
    sub.obs["author_label"] = "x"
    p = tmp_path / "s.h5ad"
    sub.write_h5ad(p)
    a = io.read_sample(p, sample="S")
    assert np.array_equal(a.X.toarray(), sub.layers["counts"].toarray())
    assert (a.obs["author_label"] == "x").all()


def _write_10x_h5(path, adata):
    X = sp.csc_matrix(adata.X.T.astype(np.int32))
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = X.data, X.indices, X.indptr
        g["shape"] = np.array(X.shape, dtype=np.int32)
        g["barcodes"] = np.array(adata.obs_names, dtype="S")
        ft = g.create_group("features")
        ft["id"] = np.array(adata.var["gene_ids"], dtype="S")
        ft["name"] = np.array(adata.var_names, dtype="S")
        ft["feature_type"] = np.array(["Gene Expression"] * adata.n_vars, dtype="S")
        ft["genome"] = np.array(["GRCh38"] * adata.n_vars, dtype="S")
        ft["_all_tag_keys"] = np.array([b"genome"])


def test_read_10x_h5(tmp_path, called_sample):
    sub = called_sample[:40].copy()
    p = tmp_path / "filtered_feature_bc_matrix.h5"
    _write_10x_h5(p, sub)
    a = io.read_sample(p, sample="H5")
    assert a.shape == sub.shape
    assert np.array_equal(a.X.toarray(), sub.X.toarray())
    assert "gene_ids" in a.var


def test_duplicated_barcodes_rejected(tmp_path, called_sample):
    sub = called_sample[:10].copy()
    io.write_10x_mtx(sub, tmp_path, gzip=False)
    lines = (tmp_path / "barcodes.tsv").read_text().splitlines()
    lines[3] = lines[2]
    (tmp_path / "barcodes.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="duplicated barcodes") as e:
        io.read_sample(tmp_path, sample="DUP")
    assert "'DUP'" in str(e.value) and "barcodes" in str(e.value)


def test_non_integer_counts_rejected(tmp_path, called_sample):
    sub = called_sample[:10].copy()
    sub.X = sub.X * 0.37
    p = tmp_path / "norm.h5ad"
    sub.write_h5ad(p)
    with pytest.raises(InputError, match="not integers") as e:
        io.read_sample(p, sample="NORM")
    assert "raw integer UMI counts" in str(e.value)


def test_dimension_mismatch_rejected(tmp_path, called_sample):
    io.write_10x_mtx(called_sample[:10].copy(), tmp_path, gzip=True)
    with gzip.open(tmp_path / "barcodes.tsv.gz", "at") as fh:
        fh.write("EXTRA-1\n")
    with pytest.raises(InputError, match="barcodes file 11 rows"):
        io.read_sample(tmp_path, sample="M")


def test_empty_and_missing_inputs(tmp_path, called_sample):
    empty = called_sample[:0].copy()
    p = tmp_path / "empty.h5ad"
    empty.write_h5ad(p)
    with pytest.raises(InputError, match="matrix is empty"):
        io.read_sample(p, sample="E")
    with pytest.raises(InputError, match="input not found"):
        io.read_sample(tmp_path / "missing", sample="E")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="no matrix file"):
        io.read_sample(tmp_path / "folder", sample="E")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="unrecognised input format"):
        io.read_sample(tmp_path / "x.csv", sample="E")


def test_no_mito_genes_warns(tmp_path, called_sample):
    sub = called_sample[:20, ~called_sample.var_names.str.startswith("MT-")].copy()
    p = tmp_path / "nomt.h5ad"
    sub.write_h5ad(p)
    with pytest.warns(io.MilkcellsWarning, match="no mitochondrial genes"):
        a = io.read_sample(p, sample="NOMT")
    assert not a.var["mt"].any()


def test_var_names_made_unique(tmp_path, called_sample):
    sub = called_sample[:10, :5].copy()
    sub.var_names = ["A", "A", "B", "C", "C"]
    io.write_10x_mtx(sub, tmp_path / "m")
    a = io.read_counts(tmp_path / "m")
    assert a.var_names.is_unique
    assert list(a.var["gene_ids"]) == list(sub.var["gene_ids"])
    assert isinstance(a, ad.AnnData)
