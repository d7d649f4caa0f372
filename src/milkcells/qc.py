"""Per-sample quality control with adaptive (MAD-based) thresholds.

For each sample, cells are flagged as outliers when they lie more than
``nmads`` scaled median absolute deviations (MAD x 1.4826, as R's ``mad``)
from the sample's median on

* log1p total counts (both tails),
* log1p detected genes (both tails),
* mitochondrial percentage (upper tail only),

with fixed floors on top: never fewer than ``min_counts`` UMIs or ``min_genes``
genes, and a mitochondrial cut never stricter than ``min_mito_threshold`` %
nor looser than ``max_mito_threshold`` %. Thresholds are therefore per sample,
never one global mitochondrial cut only.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc

from ._utils import record_params
from .genes import is_mitochondrial, is_ribosomal

__all__ = ["QC_FILTERS", "mad_bounds", "compute_qc_metrics", "qc_thresholds", "filter_cells", "qc_summary_table"]

log = logging.getLogger(__name__)

#: The per-cell filters, in the order they are reported.
QC_FILTERS = ("low_counts", "high_counts", "low_genes", "high_genes", "high_mito")


def mad_bounds(values: np.ndarray, nmads: float) -> tuple[float, float]:
    """``median -/+ nmads * 1.4826 * MAD`` of ``values``."""
    v = np.asarray(values, dtype=float)
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med))) * 1.4826
    return med - nmads * mad, med + nmads * mad


def compute_qc_metrics(adata: ad.AnnData) -> None:
    """Add ``total_counts``, ``n_genes_by_counts``, ``pct_counts_mt`` and ``pct_counts_ribo`` to ``obs``."""
    for flag, is_flagged in (("mt", is_mitochondrial), ("ribo", is_ribosomal)):
        if flag not in adata.var:
            adata.var[flag] = is_flagged(adata.var_names)
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt", "ribo"], percent_top=None, log1p=False, inplace=True)


def qc_thresholds(
    obs: pd.DataFrame,
    *,
    nmads_counts: float = 5.0,
    nmads_genes: float = 5.0,
    nmads_mito: float = 3.0,
    min_counts: float = 500,
    min_genes: float = 200,
    min_mito_threshold: float = 10.0,
    max_mito_threshold: float = 50.0,
    has_mito: bool = True,
) -> dict[str, float]:
    """Adaptive thresholds of one sample from its QC metrics.

    Parameters
    ----------
    obs
        ``total_counts``, ``n_genes_by_counts`` and ``pct_counts_mt`` per cell.
    nmads_counts, nmads_genes, nmads_mito, min_counts, min_genes, min_mito_threshold, max_mito_threshold
        See :func:`filter_cells`.
    has_mito
        Whether the sample has mitochondrial genes (if not, no mitochondrial cut).

    Returns
    -------
    ``min_counts``, ``max_counts``, ``min_genes``, ``max_genes`` and ``max_pct_mito``.
    """
    lo_c, hi_c = mad_bounds(np.log1p(obs["total_counts"]), nmads_counts)
    lo_g, hi_g = mad_bounds(np.log1p(obs["n_genes_by_counts"]), nmads_genes)
    th = {
        "min_counts": max(float(np.expm1(lo_c)), float(min_counts)),
        "max_counts": float(np.expm1(hi_c)),
        "min_genes": max(float(np.expm1(lo_g)), float(min_genes)),
        "max_genes": float(np.expm1(hi_g)),
        "max_pct_mito": float("inf"),
    }
    if has_mito:
        _, hi_m = mad_bounds(obs["pct_counts_mt"], nmads_mito)
        th["max_pct_mito"] = float(np.clip(hi_m, min_mito_threshold, max_mito_threshold))
    return th


def filter_cells(
    adata: ad.AnnData,
    *,
    nmads_counts: float = 5.0,
    nmads_genes: float = 5.0,
    nmads_mito: float = 3.0,
    min_counts: float = 500,
    min_genes: float = 200,
    min_mito_threshold: float = 10.0,
    max_mito_threshold: float = 50.0,
    max_removed_fraction: float = 0.5,
    error_on_excess_loss: bool = False,
) -> ad.AnnData:
    """QC one sample: compute metrics, flag outliers, return the cells that pass.

    Parameters
    ----------
    adata
        Called cells of one sample (raw counts in ``X``).
    nmads_counts, nmads_genes, nmads_mito
        Width of the accepted band, in scaled MADs, on log1p total counts,
        log1p detected genes (both tails) and mitochondrial % (upper tail).
    min_counts, min_genes
        Floors: cells below these are removed whatever the MADs say.
    min_mito_threshold, max_mito_threshold
        The adaptive mitochondrial cut is clipped into this range (in %).
    max_removed_fraction, error_on_excess_loss
        When QC removes more than this share of the sample's cells, log a
        warning and flag the sample (``uns["milkcells"]["qc"]["flags"]``, the
        ``flags`` column of :func:`qc_summary_table`): the thresholds were
        probably computed on empty droplets (a raw matrix kept whole). With
        ``error_on_excess_loss``, raise :class:`~milkcells._utils.InputError`
        instead.

    Returns
    -------
    The passing cells (a copy), with the metrics and a boolean ``obs`` column
    ``qc_<filter>`` per filter (see :data:`QC_FILTERS`);
    ``uns["milkcells"]["qc"]`` holds the parameters, the thresholds,
    ``n_cells_in``, ``removed`` per filter (a cell can fail several) and
    ``n_kept``. The QC metrics of *all* input cells are in
    ``uns["milkcells"]["qc"]["metrics"]`` for plotting.
    """
    params = dict(
        nmads_counts=nmads_counts, nmads_genes=nmads_genes, nmads_mito=nmads_mito,
        min_counts=min_counts, min_genes=min_genes,
        min_mito_threshold=min_mito_threshold, max_mito_threshold=max_mito_threshold,
    )  # fmt: skip
    for k, v in params.items():
        if v is None or not np.isfinite(v) or v < 0:
            raise ValueError(f"{k} must be a non-negative number, but {v!r} was passed.")
    if not 0 <= max_removed_fraction <= 1:
        raise ValueError(f"max_removed_fraction must be in [0, 1], but {max_removed_fraction!r} was passed.")
    if adata.n_obs == 0:
        raise ValueError("no cells to filter: cell calling kept no barcode")
    adata = adata.copy()
    compute_qc_metrics(adata)
    has_mito = bool(adata.var["mt"].any())
    th = qc_thresholds(adata.obs, has_mito=has_mito, **params)
    obs = adata.obs
    flags = {
        "low_counts": obs["total_counts"] < th["min_counts"],
        "high_counts": obs["total_counts"] > th["max_counts"],
        "low_genes": obs["n_genes_by_counts"] < th["min_genes"],
        "high_genes": obs["n_genes_by_counts"] > th["max_genes"],
        "high_mito": obs["pct_counts_mt"] > th["max_pct_mito"],
    }
    fail = np.zeros(adata.n_obs, bool)
    for name in QC_FILTERS:
        obs[f"qc_{name}"] = flags[name].to_numpy()
        fail |= flags[name].to_numpy()
    metrics = obs[["total_counts", "n_genes_by_counts", "pct_counts_mt"]].copy()
    metrics["kept"] = ~fail
    from .cellcalling import check_losses, sample_name

    flag = check_losses(adata.n_obs, int((~fail).sum()), step="QC", max_removed_fraction=max_removed_fraction,
                        error=error_on_excess_loss, sample=sample_name(adata), field="qc")  # fmt: skip
    out = adata[~fail].copy()
    record_params(out, "qc", {**params, "max_removed_fraction": max_removed_fraction,
                              "error_on_excess_loss": error_on_excess_loss})  # fmt: skip
    out.uns["milkcells"]["qc"].update(
        {
            "thresholds": th,
            "has_mito": has_mito,
            "n_cells_in": int(adata.n_obs),
            "removed": {name: int(flags[name].sum()) for name in QC_FILTERS},
            "n_removed": int(fail.sum()),
            "n_kept": int(out.n_obs),
            "flags": flag,
            "metrics": {c: metrics[c].to_numpy() for c in metrics.columns},
        }
    )
    log.info(
        "QC: kept %d of %d cells; thresholds %s",
        out.n_obs, adata.n_obs, {k: round(v, 1) for k, v in th.items()},
    )  # fmt: skip
    return out


def qc_summary_table(records: dict[str, dict]) -> pd.DataFrame:
    """Per-sample table of barcodes in, cells called, removed by each filter, doublets, kept.

    ``doublets`` counts the cells removed as doublets; ``doublets_scrublet`` and
    ``doublets_heterotypic`` the cells each detector called (``doublets_both`` by both).

    ``input_type`` says whether the matrix was judged raw or filtered,
    ``cell_calling`` the method the sample actually got, ``knee_trusted``
    whether EmptyDrops retained the barcodes above the knee, and ``flags`` the
    warnings of cell calling and QC ("" when none: e.g. QC removing more than
    half of the cells, a knee within the ambient cloud, a pre-trimmed matrix).

    Parameters
    ----------
    records
        ``{sample: uns["milkcells"]}`` of each sample after doublet removal
        (as kept by :func:`milkcells.preprocess.merge_samples` in
        ``uns["milkcells"]["samples"]``).
    """
    rows = []
    for sample, rec in records.items():
        cc = rec.get("cell_calling", {})
        q = rec.get("qc", {})
        d = rec.get("doublets", {})
        th = q.get("thresholds", {})
        row = {
            "sample": sample,
            "input_type": cc.get("input_type", ""),
            "cell_calling": cc.get("method_used", ""),
            "barcodes_in": cc.get("n_barcodes", np.nan),
            "cells_called": cc.get("n_called", np.nan),
            "calling_threshold_umis": cc.get("threshold", np.nan),
            "knee_trusted": cc.get("knee_trusted", ""),
            "flags": "; ".join(f for f in (cc.get("flags", ""), q.get("flags", "")) if f),
        }
        for name in QC_FILTERS:
            row[f"removed_{name}"] = q.get("removed", {}).get(name, np.nan)
        row.update(
            {
                "removed_qc_total": q.get("n_removed", np.nan),
                "doublets": d.get("n_doublets", np.nan),
                "doublets_scrublet": d.get("by_detector", {}).get("scrublet", np.nan),
                "doublets_heterotypic": d.get("by_detector", {}).get("heterotypic", np.nan),
                "doublets_both": d.get("by_detector", {}).get("both", np.nan),
                "kept": d.get("n_kept", q.get("n_kept", np.nan)),
                "min_counts": th.get("min_counts", np.nan),
                "max_counts": th.get("max_counts", np.nan),
                "min_genes": th.get("min_genes", np.nan),
                "max_genes": th.get("max_genes", np.nan),
                "max_pct_mito": th.get("max_pct_mito", np.nan),
            }
        )
        rows.append(row)
    df = pd.DataFrame(rows)
    df["kept_fraction_of_called"] = df["kept"] / df["cells_called"]
    return df
