import anndata as ad
import numpy as np
import pandas as pd
import pytest

from milkcells.storage import write_h5ad, write_table


def test_write_table_atomic(tmp_path):
    target = tmp_path / "t.tsv"
    write_table(pd.DataFrame({"a": [1, 2]}), target)
    assert target.read_text().splitlines() == ["a", "1", "2"]
    assert [p.name for p in tmp_path.iterdir()] == ["t.tsv"]


def test_read_h5ad_part_matches_subsetting_the_whole_file(tmp_path):
    import scipy.sparse as sp

    from milkcells.storage import read_h5ad_part

    rng = np.random.default_rng(0)
    n, g = 300, 40
    X = sp.random(n, g, density=0.2, format="csr", random_state=1, dtype=np.float32)
    a = ad.AnnData(
        X=X,
        obs=pd.DataFrame(
            {"group": pd.Categorical(rng.choice(["a", "b", "c"], n)), "value": rng.normal(size=n)},
            index=[f"c{i}" for i in range(n)],
        ),
        var=pd.DataFrame(index=[f"g{j}" for j in range(g)]),
    )
    a.layers["counts"] = X * 3
    a.layers["dense"] = X.toarray() + 1
    a.obsm["X_pca"] = rng.normal(size=(n, 5))
    a.obsp["connectivities"] = sp.random(n, n, density=0.05, format="csr", random_state=2)
    a.uns["milkcells"] = {"note": "x"}
    path = tmp_path / "a.h5ad"
    write_h5ad(a, path)
    whole = ad.read_h5ad(path)
    rows = (whole.obs["group"] == "b").to_numpy()
    want = whole[rows].copy()
    got = read_h5ad_part(path, rows=lambda obs: obs["group"] == "b")
    assert got.obs_names.equals(want.obs_names) and got.var_names.equals(want.var_names)
    pd.testing.assert_frame_equal(got.obs, want.obs)
    assert list(got.obs["group"].cat.categories) == ["b"]  # as subsetting an AnnData drops unused categories
    assert (got.X != want.X).nnz == 0 and (got.layers["counts"] != want.layers["counts"]).nnz == 0
    np.testing.assert_array_equal(got.layers["dense"], want.layers["dense"])
    np.testing.assert_array_equal(got.obsm["X_pca"], want.obsm["X_pca"])
    assert (got.obsp["connectivities"] != want.obsp["connectivities"]).nnz == 0
    assert got.uns["milkcells"]["note"] == "x"
    lean = read_h5ad_part(path, X=False, layers=("counts", "absent"), obsm=False, obsp=False)
    assert lean.X is None and list(lean.layers) == ["counts"] and not lean.obsm and not lean.obsp
    assert lean.n_obs == n and (lean.layers["counts"] != whole.layers["counts"]).nnz == 0


def test_csr_rows_reads_the_selected_rows_in_blocks(tmp_path):
    """The block reader against scipy's row indexing, with blocks smaller than a row and empty rows."""
    import h5py
    import scipy.sparse as sp

    from milkcells.storage import _csr_rows

    rng = np.random.default_rng(3)
    X = sp.random(500, 60, density=0.15, format="csr", random_state=4, dtype=np.float32)
    X = sp.csr_matrix(sp.diags((np.arange(500) // 10 != 1).astype(np.float32)) @ X)  # rows 10-19 empty
    X.eliminate_zeros()
    assert X[10:20].nnz == 0
    path = tmp_path / "x.h5ad"
    write_h5ad(ad.AnnData(X=X), path)
    with h5py.File(path, "r") as f:
        for idx in (
            np.arange(500),
            np.sort(rng.choice(500, 37, replace=False)),
            np.array([0]),
            np.array([499]),
            np.arange(5, 25),
        ):
            for block in (1, 7, 100, 1 << 24):
                got = _csr_rows(f["X"], idx, block_nnz=block)
                assert got.shape == (len(idx), 60) and got.dtype == X.dtype
                assert (got != X[idx]).nnz == 0, (len(idx), block)


def test_write_h5ad_from_copies_matrices_and_replaces_elements(tmp_path):
    import scipy.sparse as sp

    from milkcells.storage import write_h5ad_from

    rng = np.random.default_rng(0)
    a = ad.AnnData(
        sp.random(50, 20, density=0.3, format="csr", dtype=np.float32, random_state=0),
        obs=pd.DataFrame({"x": np.arange(50)}, index=[f"c{i}" for i in range(50)]),
        uns={"milkcells": {"a": 1}},
    )
    a.layers["counts"] = a.X.copy()
    src = tmp_path / "src.h5ad"
    a.write_h5ad(src)
    before = src.read_bytes()
    obs = a.obs.assign(label=pd.Categorical(["p", "q"] * 25))
    emb = rng.normal(size=(50, 2)).astype(np.float32)
    write_h5ad_from(src, tmp_path / "out.h5ad", {"obs": obs, "obsm/X_umap": emb, "uns/umap": {"params": {"a": 1.5}}})
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert (out.X != a.X).nnz == 0 and (out.layers["counts"] != a.X).nnz == 0
    pd.testing.assert_frame_equal(out.obs, obs)
    np.testing.assert_array_equal(out.obsm["X_umap"], emb)
    assert out.uns["umap"]["params"]["a"] == 1.5 and out.uns["milkcells"]["a"] == 1
    assert src.read_bytes() == before  # the source is not modified
    # a failure leaves no output behind
    with pytest.raises(Exception, match="No method registered for writing"):  # anndata's IORegistryError
        write_h5ad_from(src, tmp_path / "bad.h5ad", {"obsm/X_bad": object()})
    assert not (tmp_path / "bad.h5ad").exists() and not list(tmp_path.glob(".bad*"))
