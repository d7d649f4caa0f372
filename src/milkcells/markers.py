"""Marker genes per cluster."""

from __future__ import annotations

import anndata as ad
import pandas as pd
import scanpy as sc

__all__ = ["rank_markers"]


def rank_markers(
    adata: ad.AnnData,
    *,
    groupby: str = "leiden",
    method: str = "wilcoxon",
    n_genes: int = 50,
) -> pd.DataFrame:
    """Rank marker genes of each group against the rest (log-normalised ``X``).

    Returns
    -------
    A table with one row per group and gene: ``group``, ``rank``, ``gene``,
    ``score``, ``logfoldchange``, ``pval``, ``pval_adj``, ``pct_in`` and
    ``pct_out``. Results are also in ``uns["rank_genes_groups"]``.
    """
    if groupby not in adata.obs:
        raise ValueError(f"groupby {groupby!r} is not an obs column")
    if adata.obs[groupby].nunique() < 2:
        return pd.DataFrame(columns=["group", "rank", "gene", "score", "logfoldchange", "pval", "pval_adj", "pct_in", "pct_out"])
    sc.tl.rank_genes_groups(adata, groupby, method=method, pts=True, use_raw=False)
    df = sc.get.rank_genes_groups_df(adata, group=None)
    df = df.rename(columns={"names": "gene", "scores": "score", "logfoldchanges": "logfoldchange",
                            "pvals": "pval", "pvals_adj": "pval_adj", "pct_nz_group": "pct_in",
                            "pct_nz_reference": "pct_out"})
    if "group" not in df:
        df.insert(0, "group", adata.obs[groupby].cat.categories[0])
    df["rank"] = df.groupby("group", observed=True).cumcount() + 1
    df = df[df["rank"] <= n_genes]
    cols = ["group", "rank", "gene", "score", "logfoldchange", "pval", "pval_adj", "pct_in", "pct_out"]
    return df[[c for c in cols if c in df.columns]].reset_index(drop=True)
