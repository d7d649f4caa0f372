import gzip

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from milkcells import InputError, MilkcellsWarning, io


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


def _write_10x_h5(path, adata, feature_types=None):
    X = sp.csc_matrix(adata.X.T.astype(np.int32))
    if feature_types is None:
        feature_types = ["Gene Expression"] * adata.n_vars
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = X.data, X.indices, X.indptr
        g["shape"] = np.array(X.shape, dtype=np.int32)
        g["barcodes"] = np.array(adata.obs_names, dtype="S")
        ft = g.create_group("features")
        ft["id"] = np.array(adata.var["gene_ids"], dtype="S")
        ft["name"] = np.array(adata.var_names, dtype="S")
        ft["feature_type"] = np.array(feature_types, dtype="S")
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
    with pytest.warns(MilkcellsWarning, match="no mitochondrial genes"):
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


# ----------------------------------------------------------------------- sample-sheet edge cases


# ----------------------------------------------------------------------- count-matrix edge cases


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize(("which", "field"), [("barcodes", "barcodes"), ("features", "features")])
def test_empty_10x_table_is_a_clear_error(tmp_path, called_sample, gzipped, which, field):
    io.write_10x_mtx(called_sample[:10].copy(), tmp_path, gzip=gzipped)
    target = tmp_path / f"{which}.tsv{'.gz' if gzipped else ''}"
    if gzipped:
        with gzip.open(target, "wt"):
            pass
    else:
        target.write_text("")
    with pytest.raises(InputError, match=f"the {which} file is empty") as e:
        io.read_sample(tmp_path, sample="EMPTY")
    assert e.value.sample == "EMPTY" and e.value.field == field and e.value.file == str(target)
    assert e.value.expected and "to match the matrix" in e.value.expected


def _non_gex(adata, types):
    a = adata.copy()
    a.var["feature_types"] = types
    return a


def test_mtx_without_gene_expression_features_rejected(tmp_path, called_sample):
    sub = _non_gex(called_sample[:20, :6], ["Antibody Capture"] * 4 + ["CRISPR Guide Capture"] * 2)
    io.write_10x_mtx(sub, tmp_path, gzip=True)
    with pytest.raises(InputError, match="no Gene Expression features among 6 features") as e:
        io.read_sample(tmp_path, sample="ADT")
    assert e.value.sample == "ADT" and e.value.field == "feature_types"
    assert e.value.file.endswith("matrix.mtx.gz")
    assert "'Antibody Capture' x4" in str(e.value) and "'Gene Expression'" in e.value.expected


def test_h5_without_gene_expression_features_rejected(tmp_path, called_sample):
    sub = called_sample[:20, :6].copy()
    p = tmp_path / "adt.h5"
    _write_10x_h5(p, sub, feature_types=["Antibody Capture"] * 6)
    with pytest.raises(InputError, match="no Gene Expression features") as e:
        io.read_sample(p, sample="ADT")
    assert e.value.sample == "ADT" and e.value.field == "feature_types" and e.value.file == str(p)


def test_mixed_features_keep_gene_expression_only(tmp_path, called_sample):
    sub = called_sample[:20].copy()
    types = ["Gene Expression"] * (sub.n_vars - 3) + ["Antibody Capture"] * 3
    p = tmp_path / "mixed.h5"
    _write_10x_h5(p, sub, feature_types=types)
    a = io.read_sample(p, sample="MIX")
    assert a.n_vars == sub.n_vars - 3
    assert list(a.var_names) == list(sub.var_names[:-3])


def _thin(X, fraction, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    X.data = rng.binomial(X.data.astype(np.int64), fraction).astype(np.float32)
    X.eliminate_zeros()
    return X


def _rounded_lognorm(X, target=1e4, base=None, rounding=np.rint):
    X = sp.csr_matrix(X, dtype=np.float64)
    totals = np.asarray(X.sum(axis=1)).ravel()
    out = sp.diags(target / np.maximum(totals, 1)) @ X
    out.data = np.log1p(out.data) / (1.0 if base is None else np.log(base))
    out.data = rounding(out.data)
    out.eliminate_zeros()
    return out.tocsr().astype(np.float32)


@pytest.mark.parametrize(
    ("target", "base", "rounding"),
    [(1e4, None, np.rint), (1e6, None, np.rint), (1e4, None, np.floor), (1e4, 2, np.rint), (None, None, np.rint)],
)
def test_rounded_log_normalised_h5ad_rejected(tmp_path, called_sample, target, base, rounding):
    sub = called_sample.copy()
    if target is None:  # scanpy's default: the median library size
        target = float(np.median(np.asarray(sub.X.sum(axis=1)).ravel()))
    sub.X = _rounded_lognorm(sub.X, target, base, rounding)
    assert np.all(sub.X.data == np.round(sub.X.data))  # passes the integer check
    p = tmp_path / "lognorm.h5ad"
    sub.write_h5ad(p)
    with pytest.raises(InputError, match="rounded log-normalised") as e:
        io.read_sample(p, sample="LOG")
    assert e.value.sample == "LOG" and e.value.field == "X" and e.value.file == str(p)
    assert "raw integer UMI counts" in str(e.value)


def test_rounded_log_normalised_counts_layer_names_the_layer(tmp_path, raw_sample):
    sub = raw_sample.copy()  # a whole raw matrix, empty droplets included
    sub.layers["counts"] = _rounded_lognorm(sub.X)
    p = tmp_path / "layer.h5ad"
    sub.write_h5ad(p)
    with pytest.raises(InputError, match="rounded log-normalised") as e:
        io.read_sample(p, sample="LAYER")
    assert e.value.field == "layers['counts']" and e.value.sample == "LAYER"


@pytest.mark.parametrize("fraction", [1.0, 0.1, 0.02, 0.005, 0.002])
@pytest.mark.parametrize("which", ["called", "raw"])
def test_low_depth_counts_are_not_mistaken_for_log_data(tmp_path, called_sample, raw_sample, fraction, which):
    """Genuine counts thinned to 7-20 UMIs per cell still read as counts."""
    sub = (called_sample if which == "called" else raw_sample).copy()
    sub.X = _thin(sub.X, fraction)
    keep = np.asarray(sub.X.sum(axis=1)).ravel() > 0
    sub = sub[keep].copy()
    if fraction <= 0.005:  # as small as log data: the totals test decides, not the largest value
        assert sub.X.max() <= 20
    p = tmp_path / "shallow.h5ad"
    sub.write_h5ad(p)
    a = io.read_counts(p, sample="SHALLOW")
    assert a.shape == sub.shape


@pytest.mark.parametrize(("lam", "shape"), [(1.0, (100, 2000)), (0.3, (100, 2000)), (2.0, (20, 30)), (5.0, (50, 200))])
def test_counts_without_depth_variation_are_not_mistaken_for_log_data(tmp_path, lam, shape):
    """Synthetic Poisson counts: every value small, every cell alike."""
    X = np.random.default_rng(0).poisson(lam, shape).astype(np.float32)
    a = ad.AnnData(sp.csr_matrix(X))
    a.var_names = [f"G{i}" for i in range(shape[1])]
    p = tmp_path / "pois.h5ad"
    a.write_h5ad(p)
    assert io.read_counts(p, sample="POIS").shape == shape


# --------------------------------------------------------------------------- 10x file sets (classify_10x_files)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (
            ["LMC1_matrix.mtx", "LMC1_features.tsv", "LMC1_barcodes.tsv"],
            {
                "format": "mtx",
                "matrix": "LMC1_matrix.mtx",
                "features": "LMC1_features.tsv",
                "barcodes": "LMC1_barcodes.tsv",
            },
        ),
        (
            ["barcodes.tsv.gz", "features.tsv.gz", "matrix.mtx.gz", "web_summary.html"],
            {"format": "mtx", "matrix": "matrix.mtx.gz", "features": "features.tsv.gz", "barcodes": "barcodes.tsv.gz"},
        ),
        (
            ["NMC1B_matrix.mtx", "NMC1B_genes.tsv", "NMC1B_barcodes.tsv"],
            {
                "format": "mtx",
                "matrix": "NMC1B_matrix.mtx",
                "features": "NMC1B_genes.tsv",
                "barcodes": "NMC1B_barcodes.tsv",
            },
        ),
        (
            ["AA4_matrix.mtx.gz", "AA4_genes.tsv.gz", "barcodes.tsv.gz"],  # prefixes may differ
            {
                "format": "mtx",
                "matrix": "AA4_matrix.mtx.gz",
                "features": "AA4_genes.tsv.gz",
                "barcodes": "barcodes.tsv.gz",
            },
        ),
        (
            [
                "S_filtered_matrix.mtx.gz",
                "S_filtered_features.tsv.gz",
                "S_filtered_barcodes.tsv.gz",
                "S_raw_matrix.mtx.gz",
                "S_raw_features.tsv.gz",
                "S_raw_barcodes.tsv.gz",
            ],
            {
                "format": "mtx",
                "matrix": "S_raw_matrix.mtx.gz",
                "features": "S_raw_features.tsv.gz",
                "barcodes": "S_raw_barcodes.tsv.gz",
            },
        ),
        (
            ["LMC1_filtered_feature_bc_matrix.h5", "LMC1_raw_feature_bc_matrix.h5"],
            {"format": "h5", "h5": "LMC1_raw_feature_bc_matrix.h5"},
        ),
        (["LMC9_molecule_info.h5"], {"format": "molecule_info", "molecule_info": "LMC9_molecule_info.h5"}),
        (["LMC9_molecule_info.h5", "LMC9.h5"], {"format": "h5", "h5": "LMC9.h5"}),
        (
            [{"name": "x_matrix.mtx", "url": "u1"}, {"name": "x_features.tsv"}, "/some/dir/x_barcodes.tsv"],
            {"format": "mtx", "matrix": "x_matrix.mtx", "features": "x_features.tsv", "barcodes": "x_barcodes.tsv"},
        ),
    ],
)
def test_classify_10x_files(names, expected):
    assert io.classify_10x_files(names, sample="S") == expected


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ([], "no processed data file"),
        (["LMC1_matrix.mtx", "LMC1_barcodes.tsv"], r"incomplete 10x MTX set: no features"),
        (
            ["a_matrix.mtx", "a_features.tsv", "a_barcodes.tsv", "b_matrix.mtx", "b_features.tsv", "b_barcodes.tsv"],
            "several 10x MTX sets",
        ),
        (["a_matrix.mtx", "a_matrix.mtx.gz", "a_features.tsv", "a_barcodes.tsv"], "several matrix files"),
        (["a_filtered.h5", "b_filtered.h5"], "several 10x .h5"),
        (["README.txt", "counts.csv"], "no 10x count files"),
    ],
)
def test_classify_10x_files_errors(names, message):
    with pytest.raises(InputError, match=message) as e:
        io.classify_10x_files(names, sample="LMC1")
    assert e.value.sample == "LMC1" and e.value.field == "files"
