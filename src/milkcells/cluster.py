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
    scores: pd.DataFrame | None = None,
    min_score: float = 0.15,
    min_share: float = 0.05,
    seed: int = 0,
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
        Per-cell marker-set scores (:func:`milkcells.annotate.score_cells`).
        Each cell's own best set (after kNN smoothing; cells whose best score
        is under half ``min_score`` are uninformative) defines *purity*: the
        size-weighted share of each cluster's informative cells that agree
        with the cluster's majority. Without scores, purity is 1.
    min_score
        As in :func:`milkcells.annotate.call_groups`.
    min_share
        The compartment is *heterogeneous* when at least two sets are the best
        set of at least this share (and 10) of its informative cells. A
        one-cluster partition of a heterogeneous compartment is not stable
        (stability 0), so it cannot be chosen; of a homogeneous one it is
        (stability 1).
    seed
        First seed.

    Returns
    -------
    One row per resolution: ``resolution``, ``n_clusters``, ``stability``,
    ``purity``, ``score`` (their product) and ``reason``; ``attrs["best"]``
    holds the chosen resolution (highest score; the lower resolution on ties
    within 0.01) and ``attrs["heterogeneous"]`` the sets seen.
    """
    from sklearn.metrics import adjusted_rand_score

    from .annotate import smooth_scores

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
    tmp = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names))
    tmp.obsp["connectivities"] = adata.obsp["connectivities"]
    tmp.uns["neighbors"] = {"connectivities_key": "connectivities", "params": {"method": "umap"}}
    for res in resolutions:
        parts = []
        for k in range(n_seeds):
            sc.tl.leiden(tmp, resolution=res, key_added="_sweep", flavor="igraph", n_iterations=2,
                         directed=False, random_state=seed + k)
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
            reason = ("one cluster of a heterogeneous compartment: not stable" if heterogeneous
                      else "one cluster: the compartment looks homogeneous")
        rows.append({"resolution": float(res), "n_clusters": n_clusters, "stability": stability,
                     "purity": purity, "reason": reason})
    table = pd.DataFrame(rows)
    table["score"] = table["stability"] * table["purity"]
    best = table.loc[table["score"] >= table["score"].max() - 0.01, "resolution"].min()
    note = "chosen: highest stability x purity (lowest resolution within 0.01)"
    if seen:
        note += f"; cells' best sets {seen}"
    i = table.index[table["resolution"] == best][0]
    table.loc[i, "reason"] = "; ".join(x for x in (table.loc[i, "reason"], note) if x)
    table.attrs["best"] = float(best)
    table.attrs["heterogeneous"] = seen
    return table
