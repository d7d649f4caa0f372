"""Ambient RNA: how much of each sample's cells is milk soup, and counts without it.

Every droplet of a milk sample holds ambient RNA, mostly casein and
lactalbumin from lysed lactocytes. Each sample's ambient profile ``a`` (gene
fractions) is measured on its empty droplets at cell calling
(``var["ambient_fraction_<sample>"]``). Cells that cannot express milk
proteins (the non-epithelial compartments) show how much ambient RNA a droplet
picks up: their milk-protein counts over what the ambient profile predicts for
their library size gives the contamination fraction ``rho`` (the SoupX idea,
Young & Behjati 2020, with the milk-protein genes as the genes known not to be
expressed). A droplet encloses about the same volume of soup whatever cell it
holds, so each sample gets one number of ambient UMIs per droplet, estimated
robustly over its non-epithelial cells; a cell's contamination ``rho`` is that
number over its library size. Corrected counts subtract the expected ambient
counts, ``max(0, y - rho * n * a)``.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import trim_mean

from ._utils import record_params
from .markertable import curated_ambient_genes

__all__ = ["estimate_contamination", "correct_ambient"]

log = logging.getLogger(__name__)


def _profile(adata: ad.AnnData, sample: str) -> np.ndarray | None:
    col = f"ambient_fraction_{sample}"
    if col not in adata.var:
        return None
    a = pd.to_numeric(adata.var[col], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(a).any() or np.nansum(a) <= 0:
        return None
    return np.nan_to_num(a)


def estimate_contamination(
    adata: ad.AnnData,
    *,
    sample_key: str = "sample",
    compartment_key: str = "compartment",
    expressing: tuple[str, ...] = ("epithelial", "unassigned"),
    genes: list[str] | None = None,
    layer: str = "counts",
    max_rho: float = 0.5,
    outlier_factor: float = 3.0,
) -> pd.DataFrame:
    """Estimate the ambient contamination of each sample and cell.

    Parameters
    ----------
    adata
        Annotated cells with raw counts in ``layers[layer]``, compartments in
        ``obs[compartment_key]`` and the samples' ambient profiles in
        ``var["ambient_fraction_<sample>"]``.
    sample_key
        ``obs`` column of the samples.
    compartment_key
        ``obs`` column of the compartments.
    expressing
        Compartments whose cells may really express the milk genes; they are
        not used for the estimate and get their sample's pooled value.
    genes
        Genes known not to be expressed by the other cells; default: the
        curated milk transcripts.
    layer
        Layer of raw counts.
    max_rho
        Estimates are clipped to ``[0, max_rho]``.
    outlier_factor
        Cells whose estimate exceeds this multiple of the sample's median are
        left out: they express milk transcripts themselves (for example
        CSN1S1 macrophages, which take up milk).

    Returns
    -------
    One row per sample: ``sample``, ``ambient_umis`` (ambient UMIs per droplet:
    10 %-trimmed mean over the usable cells of their milk counts over the milk
    share of the ambient profile), ``rho`` (median over the sample's cells of
    ``ambient_umis`` over their library size), ``rho_pooled`` (the usable
    cells' milk counts over what their library sizes predict), ``n_cells_used``,
    ``ambient_milk_fraction`` (share of the milk genes in the ambient profile) and
    ``top_ambient_genes``; NaN where a sample has no ambient profile (filtered input) or no usable cell. Sets
    ``obs["ambient_contamination"]``: each cell's expected ambient share,
    ``ambient_umis / library size``.
    """
    genes = [g for g in (genes or curated_ambient_genes()) if g in adata.var_names]
    counts = adata.layers[layer] if layer in adata.layers else adata.X
    counts = sp.csr_matrix(counts)
    gi = adata.var_names.get_indexer(genes)
    n = np.asarray(counts.sum(axis=1)).ravel()
    milk = np.asarray(counts[:, gi].sum(axis=1)).ravel() if len(gi) else np.zeros(adata.n_obs)
    rho_cell = np.full(adata.n_obs, np.nan)
    rows = []
    samples = adata.obs[sample_key].astype(str).to_numpy()
    usable = ~adata.obs[compartment_key].astype(str).isin(expressing).to_numpy()
    for s in pd.unique(samples):
        a = _profile(adata, s)
        in_s = samples == s
        row = {
            "sample": s,
            "ambient_umis": np.nan,
            "rho": np.nan,
            "rho_pooled": np.nan,
            "n_cells_used": 0,
            "ambient_milk_fraction": np.nan,
            "top_ambient_genes": "",
        }
        if a is not None and len(gi):
            a_milk = float(a[gi].sum())
            row["ambient_milk_fraction"] = a_milk
            row["top_ambient_genes"] = ",".join(adata.var_names[np.argsort(-a)[:5]])
            use = in_s & usable & (n > 0)
            if use.any() and a_milk > 0:
                # ambient UMIs in each usable droplet, from its milk transcripts
                amb = milk / a_milk
                # cells holding far more milk RNA than their neighbours take it up themselves
                # (CSN1S1 macrophages): leave them out of the estimate
                use &= amb <= outlier_factor * max(float(np.median(amb[use])), 1.0)
                umis = float(trim_mean(amb[use], 0.1))
                # a droplet encloses about the same volume of soup whatever its cell:
                # the same ambient UMIs in every droplet of the sample
                rho_cell[in_s & (n > 0)] = np.clip(umis / n[in_s & (n > 0)], 0, max_rho)
                row.update(
                    ambient_umis=umis,
                    rho=float(np.median(rho_cell[in_s & (n > 0)])),
                    rho_pooled=float(milk[use].sum() / (n[use] * a_milk).sum()),
                    n_cells_used=int(use.sum()),
                )
        rows.append(row)
    adata.obs["ambient_contamination"] = rho_cell.astype(np.float32)
    table = pd.DataFrame(rows)
    record_params(
        adata,
        "ambient",
        {"genes": genes, "expressing": list(expressing), "max_rho": max_rho, "outlier_factor": outlier_factor},
    )
    adata.uns["milkcells"]["ambient"]["per_sample"] = table
    log.info("ambient contamination per sample: %s", dict(zip(table["sample"], table["rho"].round(3), strict=True)))
    return table


def correct_ambient(
    adata: ad.AnnData,
    *,
    sample_key: str = "sample",
    layer: str = "counts",
    key_added: str = "ambient_corrected",
) -> None:
    """Subtract each cell's expected ambient counts (``rho * n * a``), floored at zero.

    Needs ``obs["ambient_contamination"]`` from :func:`estimate_contamination`;
    cells of samples without an ambient profile are left unchanged. Sets
    ``layers[key_added]`` (float32 CSR, never negative).
    """
    if "ambient_contamination" not in adata.obs:
        raise ValueError("correct_ambient needs obs['ambient_contamination']: run estimate_contamination first")
    counts = sp.csr_matrix(adata.layers[layer] if layer in adata.layers else adata.X, dtype=np.float32)
    n = np.asarray(counts.sum(axis=1)).ravel()
    rho = np.nan_to_num(adata.obs["ambient_contamination"].to_numpy(dtype=float))
    samples = adata.obs[sample_key].astype(str)
    names = list(pd.unique(samples))
    profiles = np.zeros((len(names), adata.n_vars))
    for i, name in enumerate(names):
        a = _profile(adata, name)
        if a is not None:
            profiles[i] = a
    code = pd.Categorical(samples, categories=names).codes
    out = counts.copy()
    # only stored (non-zero) entries can lose counts; in blocks of cells, so that the float64
    # temporaries stay small beside the matrix
    block = 10_000
    for start in range(0, adata.n_obs, block):
        stop = min(start + block, adata.n_obs)
        lo, hi = out.indptr[start], out.indptr[stop]
        row_of = np.repeat(np.arange(start, stop), np.diff(out.indptr[start : stop + 1]))
        expected = rho[row_of] * n[row_of] * profiles[code[row_of], out.indices[lo:hi]]
        out.data[lo:hi] = np.maximum(out.data[lo:hi] - expected, 0)
    out.eliminate_zeros()
    adata.layers[key_added] = out
