"""Neighbourhood graph, UMAP and Leiden clustering."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin

from ._utils import record_params
from .logs import timed

__all__ = [
    "ExactKNNTransformer",
    "HNSWTransformer",
    "cluster",
    "embed",
    "has_graph",
    "import_umap",
    "knn_indices",
    "neighbors",
    "resolution_sweep",
]

log = logging.getLogger(__name__)


#: Up to this many cells, kNN graphs are exact (see :func:`neighbors`). Brute force on 2 cores, 30
#: dimensions, 15 neighbours: 24.5 s at 110,000 points and 96 s at 232,336 (2026-12-07; quadratic, so
#: ~160 s at 300,000); on the 250,000-cell scale benchmark HNSW (the limit was 120,000) took 194 s
#: for the atlas's 232,336 cells and 103 s for its 203,671 epithelial cells. Above the limit HNSW's
#: n log n growth wins.
EXACT_NEIGHBORS_MAX_CELLS = 300_000


@contextlib.contextmanager
def _faiss_threads(n: int):
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(int(n), 1))
    try:
        yield faiss
    finally:
        faiss.omp_set_num_threads(before)


def _n_jobs(n_jobs: int | None) -> int:
    return int(n_jobs) if n_jobs and n_jobs > 0 else (os.cpu_count() or 1)


def import_umap() -> None:
    """Import umap-learn (and pynndescent, which it imports) with numba's on-disk cache for their functions.

    Neither package asks numba to cache what it compiles, and pynndescent compiles dozens of
    functions as it is imported: every new process that builds a kNN graph or a UMAP paid ~16 s of
    compilation before any work (``import umap`` 9.7 s, the first graph 6 s; two of the largest
    rules, ``cluster`` and ``subcluster``, are such processes). With ``cache=True`` made the default of
    ``numba.njit``/``numba.jit`` while the two packages are imported, numba stores the compiled
    functions in its cache (``NUMBA_CACHE_DIR``, which the workflow sets) and later processes load
    them: ``import umap`` 2.5 s, the first graph 0.1 s. The compiled code is the same, and numba
    invalidates an entry when its source changes; a function numba cannot cache is compiled as
    before. Nothing is done when umap is imported already.
    """
    if "umap" in sys.modules:
        return
    import numba
    from numba.core.errors import NumbaWarning

    njit, jit = numba.njit, numba.jit

    def cached(decorator):
        @functools.wraps(decorator)
        def wrapper(*args, **kwargs):
            kwargs.setdefault("cache", True)
            return decorator(*args, **kwargs)

        return wrapper

    # pynndescent's own search (unused here: the graphs come from faiss) cannot be cached; numba says so
    # when it is compiled
    warnings.filterwarnings("ignore", message="Cannot cache compiled function", category=NumbaWarning)
    numba.njit, numba.jit = cached(njit), cached(jit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumbaWarning)
            # umap-learn says so when TensorFlow (its parametric UMAP) is missing, as scanpy's import hides
            warnings.filterwarnings("ignore", message="Tensorflow not installed", category=ImportWarning)
            import umap  # noqa: F401
    finally:
        numba.njit, numba.jit = njit, jit


class _FaissKNNTransformer(TransformerMixin, BaseEstimator):
    """A kNN transformer (``sc.pp.neighbors(transformer=...)``) on a faiss index; subclasses build the index."""

    def _index_for(self, X: np.ndarray):
        raise NotImplementedError

    def _prepare_search(self, k: int) -> None:
        pass

    def fit(self, X, y=None):
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[0] <= self.n_neighbors:
            raise ValueError(
                f"{type(self).__name__} needs more than n_neighbors={self.n_neighbors} points, "
                f"got an array of shape {X.shape}"
            )
        self._index = self._index_for(X)
        self._fit_X = X
        self.n_samples_fit_ = X.shape[0]
        return self

    def _search(self, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's ``k`` nearest fitted points, nearest first, with their distances.

        faiss ranks by ||x||^2 + ||y||^2 - 2 x.y in float32, which loses digits for close points
        (up to ~1e-3 relative): the distances of the neighbours found are computed again directly
        (float64), as scikit-learn gives them, and the neighbours ordered by them.
        """
        self._prepare_search(k)
        X = np.ascontiguousarray(X, dtype=np.float32)
        with _faiss_threads(_n_jobs(self.n_jobs)):
            _, idx = self._index.search(X, k)
        idx = idx.astype(np.int64)
        dist = np.full(idx.shape, np.inf)
        block = max(1, (1 << 22) // max(k * X.shape[1], 1))
        for start in range(0, len(X), block):
            rows, found = X[start : start + block].astype(np.float64), idx[start : start + block]
            ok = found >= 0
            diff = self._fit_X[np.where(ok, found, 0)].astype(np.float64) - rows[:, None, :]
            dist[start : start + block] = np.where(ok, np.sqrt(np.einsum("ijk,ijk->ij", diff, diff)), np.inf)
        order = np.argsort(dist, axis=1, kind="stable")
        idx, dist = np.take_along_axis(idx, order, axis=1), np.take_along_axis(dist, order, axis=1)
        return idx, np.where(np.isfinite(dist), dist, 0)

    def _csr(self, idx: np.ndarray, dist: np.ndarray) -> sp.csr_matrix:
        n, k = idx.shape
        return sp.csr_matrix((dist.ravel(), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, self.n_samples_fit_))

    def transform(self, X):
        """Distances of new points to their ``n_neighbors`` nearest fitted points."""
        idx, dist = self._search(X, self.n_neighbors)
        return self._csr(idx, dist)

    def fit_transform(self, X, y=None):
        """Each fitted point's ``n_neighbors`` nearest points: itself first, then the others by distance."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        self.fit(X)
        k = self.n_neighbors
        idx, dist = self._search(X, k + 1)
        own = np.arange(len(X))[:, None]
        # the point itself leads even where the search missed it (or found a duplicate first)
        idx = np.hstack([own, idx])
        dist = np.hstack([np.zeros((len(X), 1)), dist])
        key = np.where((idx == own) | (idx < 0), np.inf, dist)
        key[:, 0] = -1.0
        order = np.argsort(key, axis=1, kind="stable")[:, :k]
        return self._csr(np.take_along_axis(idx, order, axis=1), np.take_along_axis(dist, order, axis=1))


class ExactKNNTransformer(_FaissKNNTransformer):
    """Exact k nearest neighbours (Euclidean) by faiss's brute force, as a kNN transformer.

    The neighbours of scikit-learn's ``KNeighborsTransformer(algorithm="brute")`` (what
    ``sc.pp.neighbors(transformer="sklearn")`` uses), ties and float32 rounding aside, in a
    third to a half of its time (89,000 points in 20 dimensions, 15 neighbours, 2 cores: 10.5 s
    against 36 s): faiss computes the distances as one matrix product (BLAS) and keeps the
    nearest with a heap. Deterministic. Same interface as :class:`HNSWTransformer`.

    Parameters
    ----------
    n_neighbors
        Neighbours per point, the point itself included (as scanpy counts them).
    n_jobs
        Threads (``None`` or <= 0: all cores).
    """

    def __init__(self, n_neighbors: int = 15, *, n_jobs: int | None = None):
        self.n_neighbors = n_neighbors
        self.n_jobs = n_jobs

    def _index_for(self, X: np.ndarray):
        import faiss

        index = faiss.IndexFlatL2(X.shape[1])
        index.add(X)
        return index


class HNSWTransformer(_FaissKNNTransformer):
    """Approximate k nearest neighbours (Euclidean) from faiss's HNSW index, as a kNN transformer.

    The interface of scikit-learn's ``KNeighborsTransformer`` (what ``sc.pp.neighbors(transformer=...)``
    takes): ``fit_transform(X)`` returns a CSR matrix of each point's distances to its
    ``n_neighbors`` nearest points, the point itself first (distance 0), the others by distance.

    Why not scanpy's default (pynndescent): it compiles its search with numba in every new process
    (about 60 s here, most of a 50,000-cell clustering rule), and numba cannot cache those
    functions. faiss (Johnson et al. 2019) is compiled C++: with the defaults below an HNSW graph
    of 110,000 points in 30 dimensions builds in ~24 s on one thread and is searched in ~10 s on
    two, with 0.999 of the exact neighbours found (0.992 with ``m=16, ef_construction=100,
    ef_search=64`` in half the time). :func:`neighbors` uses it above
    :data:`EXACT_NEIGHBORS_MAX_CELLS`. The graph is built on **one thread**: HNSW insertion in
    parallel depends on thread timing, and the atlas must come out the same on every run; the
    search, which is deterministic, uses ``n_jobs`` threads.

    Parameters
    ----------
    n_neighbors
        Neighbours per point, the point itself included (as scanpy counts them).
    m, ef_construction, ef_search
        HNSW's links per node, and the candidate lists while building and searching (higher:
        slower, closer to exact).
    n_jobs
        Threads of the search (``None`` or <= 0: all cores).
    """

    def __init__(
        self,
        n_neighbors: int = 15,
        *,
        m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        n_jobs: int | None = None,
    ):
        self.n_neighbors = n_neighbors
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.n_jobs = n_jobs

    def _index_for(self, X: np.ndarray):
        with _faiss_threads(1) as faiss:
            index = faiss.IndexHNSWFlat(X.shape[1], int(self.m))
            index.hnsw.efConstruction = int(self.ef_construction)
            index.add(X)
        return index

    def _prepare_search(self, k: int) -> None:
        self._index.hnsw.efSearch = int(max(self.ef_search, k))


def knn_indices(
    Z: np.ndarray, k: int, *, exact_max: int = EXACT_NEIGHBORS_MAX_CELLS, n_jobs: int | None = None
) -> np.ndarray:
    """Each point's ``k`` nearest other points (Euclidean): exact up to ``exact_max`` points, else HNSW.

    Parameters
    ----------
    Z
        Points x dimensions (for example principal components).
    k
        Neighbours per point, the point itself not counted.
    exact_max
        Up to this many points the search is exact (faiss brute force), above it :class:`HNSWTransformer`.
    n_jobs
        Threads of the search (default: all cores).

    Returns
    -------
    Indices, points x ``k``, nearest first.
    """
    Z = np.asarray(Z)
    knn = ExactKNNTransformer if len(Z) <= exact_max else HNSWTransformer
    d = knn(n_neighbors=k + 1, n_jobs=n_jobs).fit_transform(Z)
    return d.indices.reshape(len(Z), k + 1)[:, 1:]


def neighbors(
    adata: ad.AnnData,
    *,
    n_neighbors: int = 15,
    use_rep: str = "X_pca",
    seed: int = 0,
    exact_max_cells: int = EXACT_NEIGHBORS_MAX_CELLS,
) -> None:
    """``sc.pp.neighbors``: exact (brute force) up to ``exact_max_cells`` cells, else faiss's HNSW.

    scanpy itself is exact below 8,192 cells and uses pynndescent above; here the exact search
    (:class:`ExactKNNTransformer`, faiss's brute force) runs up to ``exact_max_cells`` (better, and
    up to ~100,000 cells faster than pynndescent, whose numba compilation costs every new process
    ~60 s), and above it :class:`HNSWTransformer` (compiled, no start-up cost, reproducible). On the
    50,000-cell scale benchmark (the demo simulator, which
    plants the marker table's genes: a plumbing check, not evidence of accuracy) the exact global
    graph gave cell-type macro-F1 1.000 and an HNSW graph of recall 0.99 gave 0.914 (CSN1S1
    macrophages typed as GPNMB macrophages): even there the macrophage subtypes hang on the
    partition, so the graph is kept exact as far as its cost allows.

    Parameters
    ----------
    adata
        With ``obsm[use_rep]``.
    n_neighbors, use_rep, seed
        As in ``sc.pp.neighbors``.
    exact_max_cells
        The largest number of cells searched exactly.

    Returns
    -------
    Sets ``obsp["connectivities"]``, ``obsp["distances"]`` and ``uns["neighbors"]``.
    """
    import_umap()  # scanpy builds the graph's weights with umap-learn
    k = min(n_neighbors, adata.n_obs - 1)
    if adata.n_obs <= exact_max_cells:
        transformer = ExactKNNTransformer(n_neighbors=k, n_jobs=sc.settings.n_jobs)
    else:
        transformer = HNSWTransformer(n_neighbors=k, n_jobs=sc.settings.n_jobs)
    sc.pp.neighbors(adata, n_neighbors=n_neighbors, use_rep=use_rep, random_state=seed, transformer=transformer)


def has_graph(adata: ad.AnnData, *, use_rep: str, n_neighbors: int) -> bool:
    """Whether ``adata`` holds a kNN graph built from ``use_rep`` with ``n_neighbors``."""
    params = adata.uns.get("neighbors", {}).get("params", {})
    return (
        "connectivities" in adata.obsp
        and params.get("use_rep") == use_rep
        and int(params.get("n_neighbors", -1)) == n_neighbors
    )


def cluster(
    adata: ad.AnnData,
    *,
    use_rep: str | None = None,
    n_neighbors: int = 15,
    resolution: float = 1.0,
    key_added: str = "leiden",
    umap: bool = True,
    seed: int = 0,
    reuse_graph: bool = False,
    exact_max_cells: int = EXACT_NEIGHBORS_MAX_CELLS,
) -> None:
    """Build the kNN graph, embed with UMAP and cluster with Leiden, in place.

    Parameters
    ----------
    adata
        With a PCA (or integrated) embedding in ``obsm``.
    use_rep
        ``obsm`` key to use; default: the one recorded by
        :func:`milkcells.integrate.integrate`, else ``"X_pca"``.
    n_neighbors
        Size of the neighbourhood.
    resolution
        Leiden resolution (higher: more clusters).
    key_added
        ``obs`` column for the clusters.
    umap
        Whether to compute ``obsm["X_umap"]``.
    seed
        Random seed for Leiden and UMAP.
    reuse_graph
        Keep a kNN graph already in ``obsp`` when it was built from the same
        ``use_rep`` and ``n_neighbors`` (a second clustering of the same cells).
    exact_max_cells
        Up to this many cells the neighbours are exact (brute force, all cores);
        above, approximate (pynndescent, as scanpy does from 8,192 cells). Exact
        search costs ~n^2 but no numba compilation (~30 s in every new process).

    Returns
    -------
    Sets ``obs[key_added]`` (categorical, clusters numbered by size),
    ``obsp["connectivities"]``, ``obsp["distances"]`` and ``obsm["X_umap"]``.
    """
    if use_rep is None:
        use_rep = adata.uns.get("milkcells", {}).get("integrate", {}).get("use_rep", "X_pca")
    if use_rep not in adata.obsm:
        raise ValueError(f"use_rep {use_rep!r} is not in obsm; keys: {list(adata.obsm)}")
    k = int(min(n_neighbors, adata.n_obs - 1))
    if not (reuse_graph and has_graph(adata, use_rep=use_rep, n_neighbors=k)):
        with timed(f"kNN graph of {adata.n_obs} cells", log):
            neighbors(adata, n_neighbors=k, use_rep=use_rep, seed=seed, exact_max_cells=exact_max_cells)
    with timed("Leiden", log):
        sc.tl.leiden(
            adata, resolution=resolution, key_added=key_added, flavor="igraph",
            n_iterations=2, directed=False, random_state=seed,
        )  # fmt: skip
    if umap:
        embed(adata, seed=seed)
    record_params(
        adata, key_added,
        {"use_rep": use_rep, "n_neighbors": k, "resolution": resolution, "seed": seed},
    )  # fmt: skip
    log.info("Leiden (resolution %.2f): %d clusters", resolution, adata.obs[key_added].nunique())


def embed(adata: ad.AnnData, *, seed: int = 0) -> None:
    """UMAP of the kNN graph in ``obsp`` (``sc.tl.umap`` with ``random_state=seed``; reproducible).

    Needs the graph of :func:`cluster` or :func:`neighbors` (and the embedding it was built from).
    Sets ``obsm["X_umap"]`` and ``uns["umap"]``.
    """
    if "connectivities" not in adata.obsp:
        raise ValueError("embed needs the kNN graph: run milkcells.cluster.cluster or neighbors first")
    with timed("import umap", log):
        import_umap()
    with timed(f"UMAP of {adata.n_obs} cells", log):
        sc.tl.umap(adata, random_state=seed)


def resolution_sweep(
    adata: ad.AnnData,
    *,
    resolutions: tuple[float, ...] = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0),
    n_seeds: int = 3,
    scores: pd.DataFrame | None = None,
    min_score: float = 0.15,
    min_share: float = 0.05,
    seed: int = 0,
    max_cells: int | None = 20_000,
) -> pd.DataFrame:
    """Leiden at several resolutions, scored by stability and marker purity.

    Needs the kNN graph (:func:`cluster` or ``sc.pp.neighbors``).

    Parameters
    ----------
    adata
        With ``obsp["connectivities"]``.
    resolutions
        Leiden resolutions to try.
    n_seeds
        Leiden runs per resolution with different seeds; *stability* is the
        mean adjusted Rand index between the runs' partitions.
    scores
        Per-cell marker-set scores (:func:`milkcells.scoring.score_cells`).
        Each cell's own best set (after kNN smoothing; cells whose best score
        is under half ``min_score`` are uninformative) defines *purity*: the
        size-weighted share of each cluster's informative cells that agree
        with the cluster's majority. Without scores, purity is 1.
    min_score
        As in :func:`milkcells.scoring.call_groups`.
    min_share
        The compartment is *heterogeneous* when at least two sets are the best
        set of at least this share (and 10) of its informative cells. A
        one-cluster partition of a heterogeneous compartment is not stable
        (stability 0), so it cannot be chosen; of a homogeneous one it is
        (stability 1).
    seed
        First seed.
    max_cells
        A larger compartment is swept on a random subsample of this many cells
        (``seed``), on a kNN graph built for the subsample from the same
        embedding and ``n_neighbors``: the sweep then costs a fraction of one
        clustering of the whole compartment instead of ``len(resolutions) *
        n_seeds`` clusterings of it. ``None``: always all cells.

    Returns
    -------
    One row per resolution: ``resolution``, ``n_clusters``, ``stability``,
    ``purity``, ``score`` (their product) and ``reason``; ``attrs["best"]``
    holds the chosen resolution (highest score; the lower resolution on ties
    within 0.01) and ``attrs["heterogeneous"]`` the sets seen.
    """
    from sklearn.metrics import adjusted_rand_score

    from .scoring import smooth_scores

    if "connectivities" not in adata.obsp:
        raise ValueError("resolution_sweep needs the kNN graph: run milkcells.cluster.cluster first")
    if n_seeds < 2:
        raise ValueError(f"n_seeds must be at least 2, but {n_seeds} was passed.")
    best_set = None
    seen: dict[str, int] = {}
    if scores is not None and scores.shape[1]:
        sm = smooth_scores(adata, scores)
        vals = sm.to_numpy()
        informative = vals.max(axis=1) >= 0.5 * min_score
        best_set = np.where(informative, np.asarray(sm.columns)[vals.argmax(axis=1)], "")
        counts = pd.Series(best_set[informative]).value_counts()
        need = max(10, min_share * informative.sum())
        seen = {str(k): int(v) for k, v in counts.items() if v >= need}
    heterogeneous = len(seen) >= 2
    rows = []
    conn, names = adata.obsp["connectivities"], adata.obs_names
    if max_cells is not None and adata.n_obs > max_cells:
        idx = np.sort(np.random.default_rng(seed).choice(adata.n_obs, int(max_cells), replace=False))
        params = adata.uns.get("neighbors", {}).get("params", {})
        rep = params.get("use_rep", "X_pca")
        small = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names[idx]))
        small.obsm[rep] = np.asarray(adata.obsm[rep])[idx]
        neighbors(small, n_neighbors=int(params.get("n_neighbors", 15)), use_rep=rep, seed=seed)
        conn, names = small.obsp["connectivities"], small.obs_names
        if best_set is not None:
            best_set = best_set[idx]
        log.info("resolution sweep on %d of %d cells", max_cells, adata.n_obs)
    tmp = ad.AnnData(obs=pd.DataFrame(index=names))
    tmp.obsp["connectivities"] = conn
    tmp.uns["neighbors"] = {"connectivities_key": "connectivities", "params": {"method": "umap"}}
    for res in resolutions:
        parts = []
        for k in range(n_seeds):
            sc.tl.leiden(
                tmp,
                resolution=res,
                key_added="_sweep",
                flavor="igraph",
                n_iterations=2,
                directed=False,
                random_state=seed + k,
            )
            parts.append(tmp.obs["_sweep"].to_numpy().copy())
        n_clusters = int(len(np.unique(parts[0])))
        if n_clusters == 1 and all(len(np.unique(p)) == 1 for p in parts):
            stability = 0.0 if heterogeneous else 1.0
        else:
            aris = [adjusted_rand_score(parts[i], parts[j]) for i in range(n_seeds) for j in range(i + 1, n_seeds)]
            stability = float(np.mean(aris))
        purity = 1.0
        if best_set is not None:
            df = pd.DataFrame({"c": parts[0], "b": best_set})
            df = df[df["b"] != ""]
            if len(df):
                purity = float(df.groupby("c")["b"].agg(lambda x: x.value_counts().iloc[0]).sum() / len(df))
        reason = ""
        if n_clusters == 1:
            reason = (
                "one cluster of a heterogeneous compartment: not stable"
                if heterogeneous
                else "one cluster: the compartment looks homogeneous"
            )
        rows.append(
            {
                "resolution": float(res),
                "n_clusters": n_clusters,
                "stability": stability,
                "purity": purity,
                "reason": reason,
            }
        )
    table = pd.DataFrame(rows)
    table["score"] = table["stability"] * table["purity"]
    best = table.loc[table["score"] >= table["score"].max() - 0.01, "resolution"].min()
    note = "chosen: highest stability x purity (lowest resolution within 0.01)"
    if len(names) < adata.n_obs:
        note += f"; swept on a random {len(names)} of the {adata.n_obs} cells"
    if seen:
        note += f"; cells' best sets {seen}"
    i = table.index[table["resolution"] == best][0]
    table.loc[i, "reason"] = "; ".join(x for x in (table.loc[i, "reason"], note) if x)
    table.attrs["best"] = float(best)
    table.attrs["heterogeneous"] = seen
    table.attrs["n_cells"] = len(names)
    return table
