"""Cell calling from raw (unfiltered) droplet matrices.

Barcodes are called as cells by EmptyDrops (:mod:`milkcells.emptydrops`), or
at a point of the barcode-rank curve (its knee or inflection,
:mod:`milkcells.barcoderanks`), or all kept when the matrix is judged already
filtered (no low-count tail of empty droplets). Barcodes below the lower bound
are pooled into the ambient RNA profile.
"""

from __future__ import annotations

import logging
from typing import Literal

import anndata as ad
import numpy as np

from ._utils import InputError, record_params
from .barcoderanks import ambient_lower, barcode_ranks, barcode_totals, curve_shape, is_raw_shape
from .emptydrops import emptydrops

__all__ = [
    "ambient_profile",
    "call_cells",
    "check_losses",
    "sample_name",
]

log = logging.getLogger(__name__)


def ambient_profile(adata: ad.AnnData, *, lower: float = 100) -> np.ndarray:
    """Ambient RNA profile: gene fractions in the pooled barcodes holding 1 to ``lower`` UMIs."""
    totals = barcode_totals(adata)
    pool = (totals > 0) & (totals <= lower)
    if not pool.any():
        return np.full(adata.n_vars, np.nan)
    summed = np.asarray(adata.X[pool].sum(axis=0)).ravel()
    return summed / summed.sum()


def sample_name(adata: ad.AnnData) -> str | None:
    """The sample ``adata`` holds: the one it was read as, else its cells' one ``sample``; ``None`` when unknown."""
    ing = adata.uns.get("milkcells", {}).get("ingest", {}).get("params", {})
    if "sample" in ing:
        return str(ing["sample"])
    if "sample" in adata.obs and adata.n_obs and adata.obs["sample"].nunique() == 1:
        return str(adata.obs["sample"].iloc[0])
    return None


def check_losses(
    n_in: int,
    n_out: int,
    *,
    step: str,
    max_removed_fraction: float,
    error: bool,
    sample: str | None = None,
    field: str | None = None,
) -> str:
    """Warn (or raise :class:`~milkcells._utils.InputError`) when a step removes too many cells.

    Returns the flag text ("" when the loss is within ``max_removed_fraction``).
    """
    if n_in == 0 or (n_in - n_out) / n_in <= max_removed_fraction:
        return ""
    share = (n_in - n_out) / n_in
    flag = f"{step} removed {share:.0%} of {n_in} cells"
    if error:
        raise InputError(
            f"{flag} (more than max_removed_fraction={max_removed_fraction:g}); the matrix may be "
            "mis-judged raw or filtered, or the thresholds computed on empty droplets. Check "
            "cell_calling.method and lower, or set error_on_excess_loss: false to keep going",
            sample=sample, field=field,
            expected=f"at most {max_removed_fraction:.0%} of the cells removed",
        )  # fmt: skip
    log.warning("%s%s (more than %.0f%%)", f"sample {sample}: " if sample else "", flag,
                100 * max_removed_fraction)  # fmt: skip
    return flag


def call_cells(
    adata: ad.AnnData,
    *,
    method: Literal["auto", "emptydrops", "inflection", "knee", "none"] = "auto",
    lower: float = 100,
    retain: float | None = None,
    ambient_range: list[float] | tuple[float, float] | None = None,
    min_umis: float = 200,
    fdr: float = 0.01,
    niters: int = 10000,
    max_removed_fraction: float = 0.5,
    error_on_excess_loss: bool = False,
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
        at ``fdr``, plus every barcode at or above ``retain`` (the knee);
        ``"inflection"`` or ``"knee"``: keep barcodes at or above that point of
        the barcode-rank curve; ``"none"``: keep every barcode (input already
        filtered); ``"auto"``: ``"emptydrops"`` when :func:`~milkcells.barcoderanks.is_raw_matrix`
        says the matrix is raw (its cells followed by a long low-count tail),
        else ``"none"``. Setting ``"emptydrops"`` forces EmptyDrops whatever
        the curve looks like.
    lower
        Lower bound of the barcode-rank curve and upper bound of the ambient
        pool (barcodes with 1 to ``lower`` UMIs, which are never called), as
        DropletUtils' ``lower``. When the matrix holds too few such barcodes
        (fewer than :data:`~milkcells.barcoderanks.MIN_POOL_SHARE` of its low-count tail: a raw matrix
        pre-trimmed at or above ``lower``), ``lower`` is raised to the median
        total of the tail, with a warning.
    retain
        Barcodes with at least this many UMIs are always called (EmptyDrops'
        ``retain``). ``None``: the knee of the barcode-rank curve, unless it
        lies within the ambient cloud (then a warning, and the test alone
        decides; see :func:`milkcells.emptydrops.emptydrops`'s ``check_knee``).
    ambient_range
        ``[low, high]`` UMIs: the barcodes pooled into the ambient profile and
        not tested, instead of 1 to ``lower`` (``high`` replaces ``lower``;
        barcodes below ``low`` are ignored altogether). ``None``: from
        ``lower``.
    min_umis
        Never call a barcode with fewer UMIs than this.
    fdr, niters, seed
        EmptyDrops' false discovery rate, Monte Carlo iterations and seed.
    max_removed_fraction, error_on_excess_loss
        When the input is judged filtered but a calling method removes more
        than this share of its barcodes, log a warning and flag the sample
        (``uns["milkcells"]["cell_calling"]["flags"]``); with
        ``error_on_excess_loss``, raise :class:`~milkcells._utils.InputError`.

    Returns
    -------
    The called cells (a copy). ``uns["milkcells"]["cell_calling"]`` holds the
    parameters, the counts (``n_barcodes``, ``n_called``), the threshold,
    ``input_type`` (``"raw"`` or ``"filtered"``), ``method_used``,
    ``lower_used``, ``knee_trusted``, ``flags`` (warnings for the QC table,
    ``""`` when none) and a thinned barcode-rank curve;
    ``var["ambient_fraction"]`` the ambient profile (NaN when the input is
    filtered).
    """
    if method not in ("auto", "emptydrops", "inflection", "knee", "none"):
        raise ValueError(
            f"method must be one of 'auto', 'emptydrops', 'inflection', 'knee', 'none', but {method!r} was passed."
        )
    sample = sample_name(adata)
    if ambient_range is not None:
        rng_ = list(ambient_range)
        if len(rng_) != 2 or not (0 <= float(rng_[0]) < float(rng_[1])):
            raise InputError(
                f"ambient_range is {ambient_range!r}", sample=sample,
                field="cell_calling.ambient_range",
                expected="null or [low, high] UMIs with 0 <= low < high",
            )  # fmt: skip
    if retain is not None and not float(retain) > lower:
        raise InputError(
            f"retain is {retain!r}", sample=sample, field="cell_calling.retain",
            expected=f"null (the knee) or a number of UMIs above lower={lower}",
        )  # fmt: skip
    totals = barcode_totals(adata)
    shape = curve_shape(totals)
    raw = is_raw_shape(shape)
    used = ("emptydrops" if raw else "none") if method == "auto" else method
    flags: list[str] = []
    points: dict[str, float] = {}
    extra: dict = {}
    knee_trusted = None
    lower_used, floor = float(lower), 0.0
    if ambient_range is not None:
        floor, lower_used = float(ambient_range[0]), float(ambient_range[1])
    elif used != "none":
        lower_used = ambient_lower(totals, lower)
        if lower_used != lower:
            n_pool = int(((totals > 0) & (totals <= lower)).sum())
            log.warning(
                "%sonly %d barcodes hold 1-%g UMIs (a pre-trimmed raw matrix?): the ambient pool "
                "and the lower bound of the curve are raised to %.0f UMIs (the median of the "
                "low-count tail); set cell_calling.ambient_range to choose",
                f"sample {sample}: " if sample else "", n_pool, lower, lower_used,
            )  # fmt: skip
            flags.append(f"pre-trimmed matrix: lower raised from {lower:g} to {lower_used:.0f} UMIs")
    adata_fdr = None
    if used == "none":
        keep = totals > 0
        threshold = float(totals[keep].min()) if keep.any() else 0.0
    elif used == "emptydrops":
        sub = totals >= floor
        res = emptydrops(adata[sub] if floor > 0 else adata, lower=lower_used, retain=retain,
                         niters=niters, fdr=fdr, seed=seed)  # fmt: skip
        keep = np.zeros(adata.n_obs, dtype=bool)
        keep[np.flatnonzero(sub) if floor > 0 else slice(None)] = res["is_cell"].to_numpy(dtype=bool)
        keep &= totals >= min_umis
        adata_fdr = np.full(adata.n_obs, np.nan)
        adata_fdr[np.flatnonzero(sub) if floor > 0 else slice(None)] = res["fdr"].to_numpy(dtype=float)
        threshold = float(totals[keep].min()) if keep.any() else float("nan")
        points = barcode_ranks(totals, lower=lower_used)
        knee_trusted = res.attrs["knee_trusted"]
        if knee_trusted is False:
            flags.append(
                f"knee ({points['knee']:.0f} UMIs) within the ambient cloud: not trusted, "
                "barcodes retained "
                f"only from {res.attrs['retain']:.0f} UMIs, the EmptyDrops test decides below"
            )
        extra = {
            "alpha": float(res.attrs["alpha"]),
            "retain": float(res.attrs["retain"]),
            "n_tested": int(res.attrs["n_tested"]),
            "fdr": fdr,
            "niters": niters,
        }
    else:
        points = barcode_ranks(totals, lower=lower_used)
        threshold = max(points[used], min_umis)
        keep = totals >= threshold
    if not raw and used != "none":
        flag = check_losses(int((totals > 0).sum()), int(keep.sum()),
                            step=f"cell calling ({used}) of a filtered matrix",
                            max_removed_fraction=max_removed_fraction, error=error_on_excess_loss,
                            sample=sample, field="cell_calling.method")  # fmt: skip
        if flag:
            flags.append(flag)
    out = adata[keep].copy()
    if adata_fdr is not None:
        out.obs["emptydrops_fdr"] = adata_fdr[keep].astype(np.float32)
    out.var["ambient_fraction"] = ambient_profile(adata, lower=lower_used) if raw else np.nan
    srt = np.sort(totals[totals > 0])[::-1]
    idx = np.unique(np.geomspace(1, srt.size, num=min(300, srt.size)).astype(int) - 1)
    uns = out.uns.setdefault("milkcells", {})
    record_params(out, "cell_calling", {"method": method, "lower": lower, "retain": retain,
                                        "ambient_range": ambient_range, "min_umis": min_umis,
                                        "fdr": fdr, "niters": niters, "seed": seed,
                                        "max_removed_fraction": max_removed_fraction,
                                        "error_on_excess_loss": error_on_excess_loss})  # fmt: skip
    uns["cell_calling"].update(
        {
            "method_used": used,
            "input_type": "raw" if raw else "filtered",
            "lower_used": lower_used,
            "knee_trusted": "" if knee_trusted is None else bool(knee_trusted),
            "flags": "; ".join(flags),
            "curve_reference_total": shape["reference_total"],
            "curve_head": shape["n_head"],
            "curve_tail": shape["n_tail"],
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
        "cell calling (%s, input %s: %d barcodes in the low-count tail, %d in the head): "
        "%d of %d barcodes called (threshold %.0f UMIs)",
        used, "raw" if raw else "filtered", shape["n_tail"], shape["n_head"], keep.sum(),
        adata.n_obs, threshold,
    )  # fmt: skip
    return out
