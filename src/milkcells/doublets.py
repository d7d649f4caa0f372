"""Per-sample doublet detection: Scrublet and a cluster-aware classifier of heterotypic doublets.

Two detectors, each able to remove a cell:

- **Scrublet** (Wolock et al. 2019), as ``scanpy.pp.scrublet`` computes it: simulated doublets of
  random pairs of cells, a kNN score in PCA space, a threshold between the modes.
- **heterotypic**: a classifier of artificial doublets between clusters, as scDblFinder does
  (Germain et al. 2022). Milk makes random-pair doublets a poor model of the doublets that matter:
  lactocytes carry several times the UMIs of immune cells and every droplet carries casein RNA, so
  an epithelial + immune doublet looks like an epithelial cell with a little immune signal (or an
  immune cell with much "milk RNA"), and with few immune cells almost no random pair is one. The
  cells are clustered, artificial doublets are summed from two cells of two *different* clusters
  (every pair of clusters equally often, so rare immune types are represented), and a gradient-boosted
  classifier learns real from artificial on the principal components, the share of artificial cells
  among each cell's nearest neighbours at several k, library size and detected genes. Each real cell
  is scored out of fold; the classifier's odds over those of its training mix are a likelihood ratio
  of doublet to singlet, which times the prior odds of ``expected_rate`` gives a posterior doublet
  probability; a cell with a posterior above 0.5 is a doublet. As in scDblFinder, the classifier is
  trained twice: cells of the first round more like the artificial doublets than the real cells
  (likelihood ratio above 1) are no negatives in the second.
"""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from ._utils import record_params
from .cluster import knn_indices
from .logs import timed

__all__ = ["remove_doublets"]

log = logging.getLogger(__name__)

#: Neighbourhood sizes of the artificial-share features, rounds of the classifier and folds of the
#: out-of-fold scoring (scDblFinder's defaults are of the same order).
_KS = (5, 10, 20, 50)
_ROUNDS = 2
_FOLDS = 5
#: Artificial doublets: as many as cells, at least this many.
_MIN_ARTIFICIAL = 1500


def _scrublet(
    adata: ad.AnnData, *, expected_rate: float, threshold: float | None, n_pcs: int, seed: int
) -> tuple[np.ndarray, float | None]:
    """Scrublet's doublet scores, as ``scanpy.pp.scrublet`` computes them, in time linear in the cells.

    The same steps as ``scanpy.pp.scrublet`` with its defaults (genes in >= 3 cells, cells with
    >= 3 genes; normalise, log1p, Seurat HVGs; two simulated doublets per cell from the raw counts
    of the HVGs; both normalised to 1e6; z-scored with the observed cells' means and SDs; PCA fitted
    on the observed cells; kNN classifier with k = 0.5 sqrt(n) scaled by the simulated share;
    threshold at the minimum between the simulated scores' modes), with two changes that keep the
    result and remove the cost that grew faster than the cells:

    - the z-scored PCA runs on the sparse matrix with implicit centring (the same decomposition,
      without the dense copies of observed and simulated cells);
    - the kNN search is always exact (``scanpy.pp.scrublet`` switches to pynndescent above 8,192
      observed + simulated cells: a numba compilation per process and a cost that grows with
      k ~ sqrt(n) at every point), faiss's brute force in the PCA space (:func:`_scrublet_scores`).
      The search stays quadratic in the cells: 12,362 cells (37,000 points with the simulated
      doublets, 168 neighbours) take 6.7 s on one core against scikit-learn's 9.0 s.

    Returns the observed cells' scores (NaN for cells Scrublet's own filter drops) and the
    threshold Scrublet found (``None`` when it found none or ``threshold`` was given).
    """
    try:
        from scanpy.preprocessing._scrublet import scrublet_simulate_doublets
        from scanpy.preprocessing._scrublet.core import Scrublet
        from scanpy.preprocessing._utils import _get_mean_var
    except ImportError:  # another scanpy layout: its own pipeline, exact neighbours
        tmp = ad.AnnData(adata.X.copy(), obs=pd.DataFrame(index=adata.obs_names))
        sc.pp.scrublet(
            tmp,
            expected_doublet_rate=expected_rate,
            threshold=threshold,
            n_prin_comps=n_pcs,
            use_approx_neighbors=False,
            random_state=seed,
            verbose=False,
        )
        return tmp.obs["doublet_score"].to_numpy(float), tmp.uns.get("scrublet", {}).get("threshold")
    from sklearn.decomposition import PCA

    # scanpy's preprocessing (filter_genes(min_cells=3), filter_cells(min_genes=3), normalize_total,
    # log1p, Seurat HVGs) on bare matrices: its filters and AnnData copies (every layer, at every
    # subset) cost more than the steps themselves (6 of 14 s at 12,800 cells)
    X = sp.csr_matrix(adata.X, dtype=np.float32, copy=True)
    X.eliminate_zeros()
    genes = np.flatnonzero(np.bincount(X.indices, minlength=X.shape[1]) >= 3)
    X = X[:, genes]
    cells = np.flatnonzero(np.diff(X.indptr) >= 3)
    if len(cells) < X.shape[0]:
        X = X[cells]
    names = adata.obs_names[cells]
    norm = ad.AnnData(X.copy())
    sc.pp.normalize_total(norm)
    logn = ad.AnnData(norm.X.copy())
    sc.pp.log1p(logn)
    hvg = sc.pp.highly_variable_genes(logn, inplace=False)["highly_variable"].to_numpy()
    del logn
    counts_hvg = ad.AnnData(X[:, hvg])
    del X
    obs = ad.AnnData(norm.X[:, hvg])
    del norm
    sim = scrublet_simulate_doublets(counts_hvg, sim_doublet_ratio=2.0, random_seed=seed)
    del counts_hvg
    sc.pp.normalize_total(obs, target_sum=1e6)
    sc.pp.normalize_total(sim, target_sum=1e6)
    scrub = Scrublet(
        obs.X, n_neighbors=None, expected_doublet_rate=expected_rate, stdev_doublet_rate=0.02, random_state=seed
    )
    # z-score with the observed cells' statistics (scanpy's pipeline.zscore), PCA fitted on the
    # observed cells (pipeline.pca): dividing by the SD keeps the matrices sparse and the PCA centres
    # them implicitly, which is the decomposition of the dense z-scores
    _, var = _get_mean_var(obs.X, axis=0)
    inv_sd = sp.diags(1 / np.sqrt(np.asarray(var, dtype=np.float64)))
    x_obs = sp.csr_matrix(obs.X, dtype=np.float64) @ inv_sd
    x_sim = sp.csr_matrix(sim.X, dtype=np.float64) @ inv_sd
    pca = PCA(n_components=n_pcs, random_state=scrub._random_state, svd_solver="arpack").fit(x_obs)
    scrub.set_manifold(pca.transform(x_obs), pca.transform(x_sim))
    scrub.doublet_parents_ = sim.obsm["doublet_parents"]
    with timed("Scrublet's neighbour classifier", log):
        _scrublet_scores(scrub, expected_rate=expected_rate, stdev_rate=0.02)
    scrub.call_doublets(threshold=threshold, verbose=False)
    scores = pd.Series(scrub.doublet_scores_obs_, index=names).reindex(adata.obs_names)
    return scores.to_numpy(float), getattr(scrub, "threshold_", None) if threshold is None else None


def _scrublet_scores(scrub, *, expected_rate: float, stdev_rate: float) -> None:
    """Scrublet's kNN doublet scores (``Scrublet._nearest_neighbor_classifier``), the search by faiss.

    Each point, observed or simulated, is scored by its ``k_adj - 1`` nearest other points (exact,
    over the observed and simulated cells' PCs; ties and float32 rounding of the distances aside),
    with scanpy's Bayesian score and standard error. The observed cells' scores are scanpy's.
    scanpy 1.11 puts each point itself first among its neighbours unless a row of its graph
    already starts with its own point (exact duplicate points, such as two simulated doublets of
    the same parents, cause that), so it may count a simulated doublet as its own doublet neighbour:
    its simulated scores, and the threshold found from them, are then higher (tested);
    faiss computes the distances as one matrix product instead of scikit-learn's chunked pairwise
    distances and argpartition (12,362 cells: 6.7 s against 9.0 s on one core).
    """
    obs, sim = scrub.manifold_obs_, scrub.manifold_sim_
    n_obs, n_sim = len(obs), len(sim)
    k_adj = round(scrub._n_neighbors * (1 + n_sim / float(n_obs)))
    is_sim = np.r_[np.zeros(n_obs, bool), np.ones(n_sim, bool)]
    manifold = np.ascontiguousarray(np.vstack([obs, sim]), dtype=np.float32)
    near = _neighbours(manifold, min(k_adj, len(manifold)) - 1)
    nd = is_sim[near].sum(axis=1).astype(np.float64)
    rho, r, n = expected_rate, n_sim / float(n_obs), float(k_adj)
    q = (nd + 1) / (n + 2)
    ld = q * rho / r / (1 - rho - q * (1 - rho - rho / r))
    se_q = np.sqrt(q * (1 - q) / (n + 3))
    se_ld = (
        q
        * rho
        / r
        / (1 - rho - q * (1 - rho - rho / r)) ** 2
        * np.sqrt((se_q / q * (1 - rho)) ** 2 + (stdev_rate / rho * (1 - q)) ** 2)
    )
    scrub.doublet_scores_obs_, scrub.doublet_scores_sim_ = ld[:n_obs], ld[n_obs:]
    scrub.doublet_errors_obs_, scrub.doublet_errors_sim_ = se_ld[:n_obs], se_ld[n_obs:]


def _log_normalised(X: sp.csr_matrix, total: np.ndarray, target_sum: float = 1e4) -> sp.csr_matrix:
    """log1p of counts scaled to ``target_sum`` per cell, ``total`` being each cell's counts over all genes.

    A subset of the genes' columns is so normalised as the whole matrix would be.
    """
    # each row scaled in place of a product with a diagonal matrix (the same float64 products, a
    # tenth of the time); entries that are zero are dropped, as the product drops them
    out = sp.csr_matrix(X, dtype=np.float64, copy=True)
    out.data *= np.repeat(target_sum / np.maximum(total, 1), np.diff(out.indptr))
    out.eliminate_zeros()
    np.log1p(out.data, out=out.data)
    return out


def _neighbours(Z: np.ndarray, k: int) -> np.ndarray:
    """Each point's ``k`` nearest other points (Euclidean; exact up to 300,000 points, HNSW above)."""
    return knn_indices(Z, k, n_jobs=sc.settings.n_jobs)


def _clusters(Z: np.ndarray, *, resolution: float, seed: int) -> np.ndarray:
    """Leiden clusters (RB configuration, as ``scanpy.tl.leiden``) of the 15-NN graph of ``Z``."""
    import igraph as ig
    import leidenalg

    idx = _neighbours(Z, min(15, len(Z) - 1))
    edges = np.column_stack([np.repeat(np.arange(len(Z)), idx.shape[1]), idx.ravel()])
    graph = ig.Graph(n=len(Z), edges=edges, directed=False).simplify()
    part = leidenalg.find_partition(
        graph, leidenalg.RBConfigurationVertexPartition, resolution_parameter=resolution, n_iterations=2, seed=seed
    )
    return np.asarray(part.membership)


def _heterotypic(
    adata: ad.AnnData, *, expected_rate: float, resolution: float, n_top_genes: int, n_pcs: int, seed: int
) -> tuple[np.ndarray, dict]:
    """Posterior doublet probability of each cell from a classifier of heterotypic artificial doublets.

    Returns the probabilities (NaN when the cells form a single cluster: there is no heterotypic
    doublet to simulate) and a record of the clusters and artificial doublets used.
    """
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(seed)
    # counts are exact in float32; the normalised values below are float64, on the columns they need
    X = sp.csr_matrix(adata.X, dtype=np.float32)
    X.sum_duplicates()
    n = X.shape[0]
    total = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    genes = np.flatnonzero(np.bincount(X.indices, minlength=X.shape[1]) >= 3)  # as Scrublet: genes in >= 3 cells
    logn = ad.AnnData(_log_normalised(X[:, genes], total).astype(np.float32))
    sc.pp.highly_variable_genes(logn, n_top_genes=min(n_top_genes, len(genes)), flavor="seurat")
    hvg = genes[logn.var["highly_variable"].to_numpy()]
    del logn
    n_pcs = int(min(n_pcs, n - 1, len(hvg) - 1))
    X_hvg = X[:, hvg]
    Z = PCA(n_components=n_pcs, svd_solver="arpack", random_state=seed).fit_transform(_log_normalised(X_hvg, total))
    cl = _clusters(Z, resolution=resolution, seed=seed)
    n_cl = int(cl.max()) + 1
    info = {"n_clusters": n_cl, "n_artificial": 0}
    if n_cl < 2:
        log.info("one cluster only: no heterotypic doublets to simulate")
        return np.full(n, np.nan), info
    # artificial doublets: every pair of clusters equally often, two random cells of each pair
    order = np.argsort(cl, kind="stable")
    size = np.bincount(cl)
    start = np.r_[0, np.cumsum(size)[:-1]]
    pairs = np.array([(i, j) for i in range(n_cl) for j in range(i + 1, n_cl)])
    n_art = max(_MIN_ARTIFICIAL, n)
    which = pairs[rng.integers(len(pairs), size=n_art)]
    cells = order[start[which] + (rng.random(which.shape) * size[which]).astype(int)]
    # an artificial doublet's counts are its parents' summed: library size adds up, detected genes
    # are the union of the parents' (counted on all genes)
    art_genes = np.diff((X[cells[:, 0]] + X[cells[:, 1]]).indptr)
    both_hvg = sp.vstack([X_hvg, X_hvg[cells[:, 0]] + X_hvg[cells[:, 1]]]).tocsr()
    both_total = np.r_[total, total[cells[:, 0]] + total[cells[:, 1]]]
    both_genes = np.r_[np.diff(X.indptr), art_genes]
    is_art = np.r_[np.zeros(n, bool), np.ones(n_art, bool)]
    # features: PCs of real + artificial cells, artificial share among the kNN, library size, genes
    Zb = PCA(n_components=n_pcs, svd_solver="arpack", random_state=seed).fit_transform(
        _log_normalised(both_hvg, both_total)
    )
    ks = [k for k in _KS if k < len(Zb)]
    near = is_art[_neighbours(Zb, max(ks))]
    feats = np.column_stack([Zb, *(near[:, :k].mean(axis=1) for k in ks), np.log1p(both_total), np.log1p(both_genes)])
    folds = rng.integers(_FOLDS, size=len(is_art))
    train = np.ones(len(is_art), bool)
    prior = expected_rate / (1 - expected_rate)
    for _ in range(_ROUNDS):
        p = np.zeros(len(is_art))
        for f in range(_FOLDS):
            fit = train & (folds != f)
            clf = HistGradientBoostingClassifier(
                max_depth=4, max_iter=100, learning_rate=0.1, early_stopping=False, random_state=seed
            )
            clf.fit(feats[fit], is_art[fit])
            p[folds == f] = clf.predict_proba(feats[folds == f])[:, 1]
        # the classifier's odds over the odds of its training mix: the likelihood ratio
        p = np.clip(p, 1e-9, 1 - 1e-9)
        ratio = p / (1 - p) / (is_art[train].sum() / (~is_art[train]).sum())
        # cells more like the artificial doublets than the real cells are no negatives in the next round
        train = is_art | (ratio <= 1)
    odds = ratio * prior
    posterior = odds / (1 + odds)
    info["n_artificial"] = int(n_art)
    return posterior[:n], info


def remove_doublets(
    adata: ad.AnnData,
    *,
    enabled: bool = True,
    scrublet: bool = True,
    heterotypic: bool = True,
    expected_rate: float = 0.05,
    threshold: float | None = None,
    fallback_threshold: float = 0.25,
    n_prin_comps: int = 30,
    resolution: float = 1.0,
    n_top_genes: int = 2000,
    classifier_n_pcs: int = 20,
    seed: int = 0,
) -> ad.AnnData:
    """Score doublets with Scrublet and the heterotypic classifier; remove the cells either calls.

    Parameters
    ----------
    adata
        QC-passed cells of one sample, raw counts in ``X``.
    enabled
        Detect doublets; ``False`` keeps every cell (and records that detection was off).
    scrublet, heterotypic
        Run each detector (module docstring); a cell called by either is removed.
    expected_rate
        Expected doublet rate: Scrublet's, and the prior of the heterotypic classifier.
    threshold
        Scrublet's doublet-score threshold; ``None`` lets Scrublet find it from the
        bimodal score distribution of simulated doublets, falling back to
        ``fallback_threshold`` when that distribution has no clear minimum.
    fallback_threshold
        See ``threshold``.
    n_prin_comps
        Principal components used by Scrublet (reduced for tiny samples).
    resolution
        Leiden resolution of the clusters between which heterotypic doublets are simulated.
    n_top_genes
        Highly variable genes of the heterotypic classifier.
    classifier_n_pcs
        Principal components of the heterotypic classifier's features.
    seed
        Random seed of the simulated doublets, clusters and classifier.

    Returns
    -------
    The predicted singlets (a copy) with ``obs["doublet_score"]`` (Scrublet's score) and
    ``obs["doublet_probability"]`` (the heterotypic classifier's posterior; NaN where a
    detector did not run). ``uns["milkcells"]["doublets"]`` holds the parameters, Scrublet's
    threshold used, ``n_cells_in``, ``n_doublets``, ``n_kept``, ``by_detector`` (cells each
    detector called, with ``both``), ``n_clusters``, ``n_artificial`` and both scores of every
    input cell (``scores``, ``probabilities``).
    """
    if not enabled:
        log.info("doublet detection disabled: every cell kept")
        adata = adata.copy()
        record_params(adata, "doublets", {"enabled": False})
        adata.uns["milkcells"]["doublets"].update(
            {"n_doublets": 0, "n_kept": int(adata.n_obs), "by_detector": {"scrublet": 0, "heterotypic": 0, "both": 0}}
        )
        return adata
    if not 0 < expected_rate < 1:
        raise ValueError(f"expected_rate must be between 0 and 1, but {expected_rate!r} was passed.")
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, but {resolution!r} was passed.")
    adata = adata.copy()
    n_pcs = int(min(n_prin_comps, adata.n_obs - 1, adata.n_vars - 1))
    used = threshold
    adata.obs["doublet_score"] = np.nan
    adata.obs["doublet_probability"] = np.nan
    by_scrublet = np.zeros(adata.n_obs, bool)
    by_classifier = np.zeros(adata.n_obs, bool)
    info: dict = {}
    if adata.n_obs < 30:
        log.warning("only %d cells: doublet detection skipped", adata.n_obs)
        used = float("nan")
    else:
        if scrublet:
            with warnings.catch_warnings():
                # Scrublet's own "failed to find threshold" and its summary statistics
                # (0/0 when no cell passes a fixed threshold): we report our own figures
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                with timed(f"Scrublet on {adata.n_obs} cells", log):
                    scores, found = _scrublet(
                        adata, expected_rate=expected_rate, threshold=threshold, n_pcs=n_pcs, seed=seed
                    )
            adata.obs["doublet_score"] = scores
            if threshold is None:
                used = found
                if used is None or not np.isfinite(used):
                    used = fallback_threshold
                    log.warning("Scrublet found no score threshold; using %.2f", used)
            by_scrublet = adata.obs["doublet_score"].to_numpy() > used
        if heterotypic:
            with timed(f"heterotypic classifier on {adata.n_obs} cells", log):
                prob, info = _heterotypic(
                    adata,
                    expected_rate=expected_rate,
                    resolution=resolution,
                    n_top_genes=n_top_genes,
                    n_pcs=classifier_n_pcs,
                    seed=seed,
                )
            adata.obs["doublet_probability"] = prob
            by_classifier = np.nan_to_num(prob) > 0.5
    pred = by_scrublet | by_classifier
    out = adata[~pred].copy()
    record_params(
        out,
        "doublets",
        dict(scrublet=scrublet, heterotypic=heterotypic, expected_rate=expected_rate, threshold=threshold,
             fallback_threshold=fallback_threshold, n_prin_comps=n_prin_comps, resolution=resolution,
             n_top_genes=n_top_genes, classifier_n_pcs=classifier_n_pcs, seed=seed),
    )  # fmt: skip
    by_detector = {
        "scrublet": int(by_scrublet.sum()),
        "heterotypic": int(by_classifier.sum()),
        "both": int((by_scrublet & by_classifier).sum()),
    }
    out.uns["milkcells"]["doublets"].update(
        {
            "threshold_used": float("nan") if used is None else float(used),
            "n_cells_in": int(adata.n_obs),
            "n_doublets": int(pred.sum()),
            "n_kept": int(out.n_obs),
            "by_detector": by_detector,
            "n_clusters": int(info.get("n_clusters", 0)),
            "n_artificial": int(info.get("n_artificial", 0)),
            "scores": adata.obs["doublet_score"].to_numpy(dtype=float),
            "probabilities": adata.obs["doublet_probability"].to_numpy(dtype=float),
        }
    )
    log.info(
        "doublets: removed %d of %d cells (Scrublet %d at threshold %.3f, heterotypic classifier %d, both %d)",
        pred.sum(),
        adata.n_obs,
        by_detector["scrublet"],
        np.nan if used is None else used,
        by_detector["heterotypic"],
        by_detector["both"],
    )
    return out
