"""The approximate kNN graph (faiss HNSW) used above 30,000 cells, checked against the exact one."""

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from sklearn.neighbors import NearestNeighbors

from milkcells import cluster


def _points(n: int = 6000, d: int = 20, seed: int = 0) -> np.ndarray:
    # clusters of different spread plus duplicated points (ties HNSW must not mistake for the point itself)
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, size=(12, d))
    lab = rng.integers(12, size=n)
    Z = centres[lab] + rng.normal(0, 1, size=(n, d)) * rng.uniform(0.3, 2.0, size=12)[lab, None]
    Z[-50:] = Z[:50]
    return Z.astype(np.float32)


def test_hnsw_transformer_finds_the_exact_neighbours_itself_first():
    Z = _points()
    k = 15
    d = cluster.HNSWTransformer(n_neighbors=k).fit_transform(Z)
    assert d.shape == (len(Z), len(Z)) and (d.getnnz(axis=1) == k).all()
    idx = d.indices.reshape(len(Z), k)
    dist = d.data.reshape(len(Z), k)
    assert (idx[:, 0] == np.arange(len(Z))).all() and (dist[:, 0] == 0).all()
    assert (np.diff(dist[:, 1:], axis=1) >= 0).all()
    assert all(len(set(r)) == k for r in idx)
    exact_d, exact = NearestNeighbors(n_neighbors=k).fit(Z).kneighbors(Z)
    recall = np.mean([len(set(a[1:]) & set(b[1:])) / (k - 1) for a, b in zip(idx, exact, strict=True)])
    assert recall > 0.95, recall
    # the distances are Euclidean (not squared), as the exact search gives them
    np.testing.assert_allclose(np.sort(dist, axis=1)[:, -1], exact_d[:, -1], rtol=0.05)


def test_hnsw_graph_is_reproducible_and_serves_scanpy():
    Z = _points(4000)
    graphs = []
    for _ in range(2):
        a = ad.AnnData(obs={"i": np.arange(len(Z))})
        a.obsm["X_pca"] = Z
        sc.pp.neighbors(a, use_rep="X_pca", transformer=cluster.HNSWTransformer(n_neighbors=15, n_jobs=2))
        graphs.append(a.obsp["connectivities"])
        # as with scanpy's pynndescent: 15 stored per cell, itself at an explicit distance 0
        assert (a.obsp["distances"].getnnz(axis=1) == 15).all()
    assert (graphs[0] != graphs[1]).nnz == 0


def test_neighbors_switches_to_hnsw_above_the_exact_limit():
    Z = _points(3000)
    a = ad.AnnData(obs={"i": np.arange(len(Z))})
    a.obsm["X_pca"] = Z
    cluster.neighbors(a, n_neighbors=10, exact_max_cells=1000)
    b = a.copy()
    cluster.neighbors(b, n_neighbors=10)  # exact
    same = (a.obsp["distances"] > 0).multiply(b.obsp["distances"] > 0).sum() / (b.obsp["distances"] > 0).sum()
    assert same > 0.95
    ix = cluster.knn_indices(Z, 8, exact_max=1000)
    ex = cluster.knn_indices(Z, 8)
    assert ix.shape == ex.shape == (3000, 8)
    assert np.mean([len(set(p) & set(q)) / 8 for p, q in zip(ix, ex, strict=True)]) > 0.95


def test_hnsw_needs_more_points_than_neighbours():
    with pytest.raises(ValueError, match="more than n_neighbors"):
        cluster.HNSWTransformer(n_neighbors=15).fit_transform(np.zeros((10, 3)))


def test_exact_knn_indices_are_scikit_learns_without_the_point_itself():
    Z = _points(3000)  # with 50 duplicated points: a duplicate may be ranked before the point itself
    got = cluster.knn_indices(Z, 10)
    _, ref = NearestNeighbors(n_neighbors=11, algorithm="brute").fit(Z).kneighbors(Z)
    assert got.shape == (3000, 10)
    assert not (got == np.arange(3000)[:, None]).any()
    ref_sets = [set(r) - {i} for i, r in enumerate(ref)]
    agree = np.mean([len(set(g) & r) / 10 for g, r in zip(got, ref_sets, strict=True)])
    assert agree > 0.999, agree


def test_exact_transformer_gives_scikit_learns_graph():
    Z = _points(3000)[:-50]  # without the duplicated points (ties may be broken either way)
    a = ad.AnnData(obs={"i": np.arange(len(Z))})
    a.obsm["X_pca"] = Z
    b = a.copy()
    sc.pp.neighbors(a, n_neighbors=15, use_rep="X_pca", transformer="sklearn")
    sc.pp.neighbors(b, n_neighbors=15, use_rep="X_pca", transformer=cluster.ExactKNNTransformer(n_neighbors=15))
    da, db = a.obsp["distances"], b.obsp["distances"]
    assert ((da > 0) != (db > 0)).nnz == 0
    assert abs(da - db).max() < 1e-5
    ca, cb = a.obsp["connectivities"], b.obsp["connectivities"]
    assert abs(ca - cb).max() < 1e-5  # float32 weights from distances equal to ~1e-6


def test_import_umap_caches_numba_functions(tmp_path):
    """umap-learn imported through milkcells leaves its compiled functions in numba's cache: a second
    process loads them instead of compiling (the first graph and UMAP of every rule paid ~16 s)."""
    import os
    import subprocess
    import sys

    code = (
        "from milkcells import cluster; cluster.import_umap(); import numpy as np, umap.umap_ as u; "
        "import pynndescent.distances as d; "
        "u.smooth_knn_dist(np.random.default_rng(0).random((200, 10)).astype('float32'), 10.0); "
        "f = [u.smooth_knn_dist, d.squared_euclidean]; "
        "print(sum(sum(x.stats.cache_hits.values()) for x in f), sum(sum(x.stats.cache_misses.values()) for x in f))"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))

    def run():
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return [int(x) for x in out.stdout.split()[-2:]]

    hits, misses = run()
    assert hits == 0 and misses > 0
    assert any(tmp_path.rglob("*.nbi")), "numba wrote no cache index"
    hits, misses = run()
    assert hits > 0 and misses == 0, (hits, misses)
