"""Neighbourhood graph, UMAP and Leiden clustering."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc

from ._utils import record_params

__all__ = ["cluster", "resolution_sweep"]

log = logging.getLogger(__name__)


def cluster(
    adata: ad.AnnData,
    *,
    use_rep: str | None = None,
    n_neighbors: int = 15,
    resolution: float = 1.0,
    key_added: str = "leiden",
    umap: bool = True,
    seed: int = 0,
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
    sc.pp.neighbors(adata, n_neighbors=k, use_rep=use_rep, random_state=seed)
    sc.tl.leiden(
        adata, resolution=resolution, key_added=key_added, flavor="igraph",
        n_iterations=2, directed=False, random_state=seed,
    )  # fmt: skip
    if umap:
        sc.tl.umap(adata, random_state=seed)
    record_params(
        adata, key_added,
        {"use_rep": use_rep, "n_neighbors": k, "resolution": resolution, "seed": seed},
    )  # fmt: skip
    log.info("Leiden (resolution %.2f): %d clusters", resolution, adata.obs[key_added].nunique())


def resolution_sweep(
    adata: ad.AnnData,
    *,
    resolutions: tuple[float, ...] = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0),
    n_seeds: int = 3,
    marker_sets: dict | None = None,
    expr_floor: float = 0.5,
    seed: int = 0,
) -> pd.DataFrame:
    """Leiden at several resolutions, scored by stability and marker coherence.

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
    marker_sets
        ``{label: {"positive": [...], "negative": [...]}}``
        (:func:`milkcells.annotate.marker_sets`); *coherence* is the
        size-weighted mean, over clusters, of the lead of the best marker set
        over the runner-up (:func:`milkcells.annotate.assign_labels`), so
        clusters that each match one cell type score high and clusters that mix
        types or split nothing new score low. Without sets, coherence is 1.
    expr_floor
        As in :func:`milkcells.annotate.score_marker_sets`.
    seed
        First seed.

    Returns
    -------
    One row per resolution: ``resolution``, ``n_clusters``, ``stability``,
    ``coherence`` and ``score`` (their product); ``attrs["best"]`` holds the
    chosen resolution (highest score; the lower resolution on ties within 0.01).
    """
    from sklearn.metrics import adjusted_rand_score

    from .annotate import assign_labels, score_marker_sets

    if "connectivities" not in adata.obsp:
        raise ValueError("resolution_sweep needs the kNN graph: run milkcells.cluster.cluster first")
    if n_seeds < 2:
        raise ValueError(f"n_seeds must be at least 2, but {n_seeds} was passed.")
    rows = []
    tmp = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names))
    tmp.obsp["connectivities"] = adata.obsp["connectivities"]
    tmp.uns["neighbors"] = {"connectivities_key": "connectivities", "params": {"method": "umap"}}
    for res in resolutions:
        parts = []
        for k in range(n_seeds):
            sc.tl.leiden(tmp, resolution=res, key_added="_sweep", flavor="igraph", n_iterations=2,
                         directed=False, random_state=seed + k)
            parts.append(tmp.obs["_sweep"].to_numpy().copy())
        aris = [adjusted_rand_score(parts[i], parts[j]) for i in range(n_seeds) for j in range(i + 1, n_seeds)]
        coherence = 1.0
        if marker_sets:
            adata.obs["_sweep"] = pd.Categorical(parts[0])
            _, grp = score_marker_sets(adata, marker_sets, groupby="_sweep", expr_floor=expr_floor)
            calls = assign_labels(grp, min_score=0.0, min_margin=0.0)
            sizes = adata.obs["_sweep"].value_counts().reindex(calls.index.astype(str)).to_numpy(dtype=float)
            coherence = float(np.nansum(np.clip(calls["margin"].to_numpy(), 0, 1) * sizes) / sizes.sum())
            del adata.obs["_sweep"]
        rows.append({"resolution": float(res), "n_clusters": int(len(np.unique(parts[0]))),
                     "stability": float(np.mean(aris)), "coherence": coherence})
    table = pd.DataFrame(rows)
    table["score"] = table["stability"] * table["coherence"]
    best = table.loc[table["score"] >= table["score"].max() - 0.01, "resolution"].min()
    table.attrs["best"] = float(best)
    return table
