"""Neighbourhood graph, UMAP and Leiden clustering."""

from __future__ import annotations

import logging

import anndata as ad
import scanpy as sc

from ._utils import record_params

__all__ = ["cluster"]

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
