"""Cell calling from raw (unfiltered) droplet matrices.

The first method is the barcode-rank curve of DropletUtils' ``barcodeRanks``
(Lun et al. 2019): barcodes are ranked by total UMI count, the curve of
log10(total) against log10(rank) is smoothed, and two points are found on it
above a lower bound: the *inflection* (the steepest fall, which separates
cells from empty droplets) and the *knee* (the point of greatest curvature
before it). Barcodes with totals at or above the chosen point are called as
cells. Barcodes below the lower bound are pooled into the ambient RNA profile.
"""

from __future__ import annotations

import logging
from typing import Literal

import anndata as ad
import numpy as np
from scipy.ndimage import gaussian_filter1d

from ._utils import record_params

__all__ = ["barcode_ranks", "is_raw_matrix", "ambient_profile", "call_cells"]

log = logging.getLogger(__name__)


def _totals(adata: ad.AnnData) -> np.ndarray:
    return np.asarray(adata.X.sum(axis=1)).ravel()


def is_raw_matrix(adata: ad.AnnData, *, lower: float = 100, raw_fraction: float = 0.5) -> bool:
    """Whether ``adata`` holds raw droplets rather than called cells.

    A matrix is taken as raw when more than ``raw_fraction`` of its barcodes
    hold fewer than ``lower`` UMIs: Cell Ranger's filtered matrices hold almost
    none such, raw ones mostly such.
    """
    totals = _totals(adata)
    return bool(np.mean(totals < lower) > raw_fraction)


def barcode_ranks(
    totals: np.ndarray,
    *,
    lower: float = 100,
    exclude_from: int = 50,
    smooth_sigma: float = 3.0,
    n_grid: int = 400,
) -> dict[str, float]:
    """Knee and inflection of the barcode-rank curve.

    Parameters
    ----------
    totals
        Total UMI count per barcode.
    lower
        Barcodes below this total are ignored when looking for the two points.
    exclude_from
        The top-ranked barcodes (sparse, noisy; as DropletUtils'
        ``exclude.from``) are not searched for either point.
    smooth_sigma
        Width (in grid steps) of the Gaussian smoothing of the log-log curve.
    n_grid
        Number of points of the uniform log-rank grid the curve is resampled on.

    Returns
    -------
    ``{"knee": total, "inflection": total, "knee_rank": r, "inflection_rank": r}``.
    """
    t = np.sort(np.asarray(totals, dtype=float))[::-1]
    t = t[t >= lower]
    if t.size < 10:
        raise ValueError(
            f"only {t.size} barcodes have at least lower={lower} UMIs; "
            "too few to find a knee on the barcode-rank curve"
        )
    ranks = np.arange(1, t.size + 1, dtype=float)
    # ties: one point per unique total, at the mid rank (as barcodeRanks does)
    uniq, first = np.unique(t[::-1], return_index=True)
    n = t.size
    last_rank = n - first  # rank of the last barcode with that total (descending order)
    counts = np.diff(np.append(first, n))
    mid = last_rank - (counts - 1) / 2.0
    x = np.log10(mid[::-1])
    y = np.log10(uniq[::-1])
    grid = np.linspace(x.min(), x.max(), n_grid)
    yi = np.interp(grid, x, y)
    ys = gaussian_filter1d(yi, smooth_sigma, mode="nearest")
    d1 = np.gradient(ys, grid)
    d2 = np.gradient(d1, grid)
    # ignore the top barcodes: they are sparse and noisy
    start = max(1, int(np.searchsorted(grid, np.log10(min(exclude_from, t.size / 2)))))
    infl = start + int(np.argmin(d1[start:]))
    curvature = d2 / (1 + d1**2) ** 1.5
    knee = start + int(np.argmin(curvature[start : max(infl, start + 1)])) if infl > start else infl
    to_total = lambda i: float(10 ** np.interp(grid[i], x, y))  # noqa: E731
    return {
        "knee": to_total(knee),
        "inflection": to_total(infl),
        "knee_rank": float(10 ** grid[knee]),
        "inflection_rank": float(10 ** grid[infl]),
        "n_ranked": int(ranks.size),
    }


def ambient_profile(adata: ad.AnnData, *, lower: float = 100) -> np.ndarray:
    """Ambient RNA profile: gene fractions in the pooled barcodes holding 1 to ``lower`` UMIs."""
    totals = _totals(adata)
    pool = (totals > 0) & (totals < lower)
    if not pool.any():
        return np.full(adata.n_vars, np.nan)
    summed = np.asarray(adata.X[pool].sum(axis=0)).ravel()
    return summed / summed.sum()


def call_cells(
    adata: ad.AnnData,
    *,
    method: Literal["auto", "emptydrops", "inflection", "knee", "none"] = "auto",
    lower: float = 100,
    min_umis: float = 200,
    fdr: float = 0.01,
    niters: int = 10000,
    seed: int = 0,
) -> ad.AnnData:
    """Call cells in one sample's droplets.

    Parameters
    ----------
    adata
        Raw or filtered counts of one sample.
    method
        ``"emptydrops"``: EmptyDrops (:func:`milkcells.emptydrops.emptydrops`,
        Lun et al. 2019), barcodes whose profile differs from the ambient RNA
        at ``fdr``, plus every barcode above the knee; ``"inflection"`` or
        ``"knee"``: keep barcodes at or above that point of the barcode-rank
        curve; ``"none"``: keep every barcode (input already filtered);
        ``"auto"``: ``"emptydrops"`` when :func:`is_raw_matrix` says the
        matrix is raw, else ``"none"``.
    lower
        Lower bound of the curve, and the upper bound of the ambient pool.
    min_umis
        Never call a barcode with fewer UMIs than this.
    fdr, niters, seed
        EmptyDrops' false discovery rate, Monte Carlo iterations and seed.

    Returns
    -------
    The called cells (a copy). ``uns["milkcells"]["cell_calling"]`` holds the
    parameters, the counts (``n_barcodes``, ``n_called``), the threshold,
    ``input_type`` (``"raw"`` or ``"filtered"``) and a thinned barcode-rank
    curve; ``var["ambient_fraction"]`` the ambient profile (NaN when the input
    is filtered).
    """
    if method not in ("auto", "emptydrops", "inflection", "knee", "none"):
        raise ValueError(
            "method must be one of 'auto', 'emptydrops', 'inflection', 'knee', 'none', "
            f"but {method!r} was passed."
        )
    totals = _totals(adata)
    raw = is_raw_matrix(adata, lower=lower)
    used = ("emptydrops" if raw else "none") if method == "auto" else method
    points: dict[str, float] = {}
    extra: dict = {}
    if used == "none":
        keep = totals > 0
        threshold = float(totals[keep].min()) if keep.any() else 0.0
    elif used == "emptydrops":
        from .emptydrops import emptydrops

        res = emptydrops(adata, lower=lower, niters=niters, fdr=fdr, seed=seed)
        keep = res["is_cell"].to_numpy(dtype=bool) & (totals >= min_umis)
        threshold = float(totals[keep].min()) if keep.any() else float("nan")
        points = barcode_ranks(totals, lower=lower)
        adata_fdr = res["fdr"].to_numpy(dtype=float)
        extra = {"alpha": float(res.attrs["alpha"]), "retain": float(res.attrs["retain"]),
                 "n_tested": int(res.attrs["n_tested"]), "fdr": fdr, "niters": niters}
    else:
        points = barcode_ranks(totals, lower=lower)
        threshold = max(points[used], min_umis)
        keep = totals >= threshold
    out = adata[keep].copy()
    if used == "emptydrops":
        out.obs["emptydrops_fdr"] = adata_fdr[keep].astype(np.float32)
    out.var["ambient_fraction"] = ambient_profile(adata, lower=lower) if raw else np.nan
    srt = np.sort(totals[totals > 0])[::-1]
    idx = np.unique(np.geomspace(1, srt.size, num=min(300, srt.size)).astype(int) - 1)
    uns = out.uns.setdefault("milkcells", {})
    record_params(out, "cell_calling", {"method": method, "lower": lower, "min_umis": min_umis,
                                        "fdr": fdr, "niters": niters, "seed": seed})
    uns["cell_calling"].update(
        {
            "method_used": used,
            "input_type": "raw" if raw else "filtered",
            "threshold": threshold,
            "n_barcodes": int(adata.n_obs),
            "n_called": int(keep.sum()),
            "curve_rank": (idx + 1).astype(float),
            "curve_total": srt[idx].astype(float),
            **{k: float(v) for k, v in points.items()},
            **({"emptydrops": extra} if extra else {}),
        }
    )
    log.info(
        "cell calling (%s, input %s): %d of %d barcodes called (threshold %.0f UMIs)",
        used, "raw" if raw else "filtered", keep.sum(), adata.n_obs, threshold,
    )  # fmt: skip
    return out
