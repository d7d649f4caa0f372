"""Per-sample doublet detection with Scrublet (``scanpy.pp.scrublet``)."""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import scanpy as sc

from ._utils import record_params

__all__ = ["remove_doublets"]

log = logging.getLogger(__name__)


def remove_doublets(
    adata: ad.AnnData,
    *,
    expected_rate: float = 0.05,
    threshold: float | None = None,
    fallback_threshold: float = 0.25,
    n_prin_comps: int = 30,
    seed: int = 0,
) -> ad.AnnData:
    """Score doublets with Scrublet and remove the predicted ones.

    Parameters
    ----------
    adata
        QC-passed cells of one sample, raw counts in ``X``.
    expected_rate
        Expected doublet rate, passed to Scrublet.
    threshold
        Doublet-score threshold; ``None`` lets Scrublet find it from the
        bimodal score distribution of simulated doublets, falling back to
        ``fallback_threshold`` when that distribution has no clear minimum.
    fallback_threshold
        See ``threshold``.
    n_prin_comps
        Principal components used by Scrublet (reduced for tiny samples).
    seed
        Random seed of the simulated doublets.

    Returns
    -------
    The predicted singlets (a copy) with ``obs["doublet_score"]``;
    ``uns["milkcells"]["doublets"]`` holds the parameters, the threshold used,
    ``n_cells_in``, ``n_doublets`` and ``n_kept``.
    """
    if not 0 < expected_rate < 1:
        raise ValueError(f"expected_rate must be between 0 and 1, but {expected_rate!r} was passed.")
    adata = adata.copy()
    n_pcs = int(min(n_prin_comps, adata.n_obs - 1, adata.n_vars - 1))
    used = threshold
    if adata.n_obs < 30:
        log.warning("only %d cells: doublet detection skipped", adata.n_obs)
        adata.obs["doublet_score"] = np.nan
        pred = np.zeros(adata.n_obs, bool)
        used = float("nan")
    else:
        with warnings.catch_warnings():
            # Scrublet's own "failed to find threshold" and its summary statistics
            # (0/0 when no cell passes a fixed threshold): we report our own figures
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            sc.pp.scrublet(
                adata,
                expected_doublet_rate=expected_rate,
                threshold=threshold,
                n_prin_comps=n_pcs,
                random_state=seed,
                verbose=False,
            )
        if threshold is None:
            used = adata.uns.get("scrublet", {}).get("threshold")
            if used is None or not np.isfinite(used):
                used = fallback_threshold
                log.warning("Scrublet found no score threshold; using %.2f", used)
        pred = adata.obs["doublet_score"].to_numpy() > used
    adata.obs.drop(columns=["predicted_doublet"], errors="ignore", inplace=True)
    adata.uns.pop("scrublet", None)
    out = adata[~pred].copy()
    record_params(
        out,
        "doublets",
        dict(expected_rate=expected_rate, threshold=threshold, fallback_threshold=fallback_threshold,
             n_prin_comps=n_prin_comps, seed=seed),
    )  # fmt: skip
    out.uns["milkcells"]["doublets"].update(
        {
            "threshold_used": float(used),
            "n_cells_in": int(adata.n_obs),
            "n_doublets": int(pred.sum()),
            "n_kept": int(out.n_obs),
            "scores": adata.obs["doublet_score"].to_numpy(dtype=float),
        }
    )
    log.info("doublets: removed %d of %d cells (threshold %.3f)", pred.sum(), adata.n_obs, used)
    return out
