"""Marker genes per cluster."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc

__all__ = ["rank_markers"]


def rank_markers(
    adata: ad.AnnData,
    *,
    groupby: str = "leiden",
    method: str = "wilcoxon",
    n_genes: int = 50,
    max_cells_per_group: int | None = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Rank marker genes of each group against the rest (log-normalised ``X``).

    A group larger than ``max_cells_per_group`` is represented by that many of its
    cells (drawn with ``seed``), in the test and as the reference of the other
    groups (Seurat's ``max.cells.per.ident``): the ranking of the top markers barely
    moves, p-values are those of the smaller sample, and the cost no longer grows
    with the number of cells. ``None``: all cells.

    Returns
    -------
    A table with one row per group and gene: ``group``, ``rank``, ``gene``,
    ``score``, ``logfoldchange``, ``pval``, ``pval_adj``, ``pct_in`` and
    ``pct_out``. Results are also in ``uns["rank_genes_groups"]``.
    """
    if groupby not in adata.obs:
        raise ValueError(f"groupby {groupby!r} is not an obs column")
    if adata.obs[groupby].nunique() < 2:
        return pd.DataFrame(
            columns=["group", "rank", "gene", "score", "logfoldchange", "pval", "pval_adj", "pct_in", "pct_out"]
        )
    test = adata
    codes = pd.Categorical(adata.obs[groupby]).codes
    if max_cells_per_group is not None and np.bincount(codes[codes >= 0]).max() > max_cells_per_group:
        rng = np.random.default_rng(seed)
        keep = np.concatenate(
            [
                idx if len(idx) <= max_cells_per_group else rng.choice(idx, max_cells_per_group, replace=False)
                for idx in (np.flatnonzero(codes == c) for c in np.unique(codes[codes >= 0]))
            ]
        )
        test = adata[np.sort(keep)].copy()
    sc.tl.rank_genes_groups(test, groupby, method=method, pts=True, use_raw=False)
    if test is not adata:
        adata.uns["rank_genes_groups"] = test.uns["rank_genes_groups"]
    df = sc.get.rank_genes_groups_df(test, group=None)
    df = df.rename(
        columns={
            "names": "gene",
            "scores": "score",
            "logfoldchanges": "logfoldchange",
            "pvals": "pval",
            "pvals_adj": "pval_adj",
            "pct_nz_group": "pct_in",
            "pct_nz_reference": "pct_out",
        }
    )
    if "group" not in df:
        df.insert(0, "group", adata.obs[groupby].cat.categories[0])
    df["rank"] = df.groupby("group", observed=True).cumcount() + 1
    df = df[df["rank"] <= n_genes]
    cols = ["group", "rank", "gene", "score", "logfoldchange", "pval", "pval_adj", "pct_in", "pct_out"]
    return df[[c for c in cols if c in df.columns]].reset_index(drop=True)
