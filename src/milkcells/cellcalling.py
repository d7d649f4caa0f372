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
from scipy.interpolate import BSpline
from scipy.linalg import eigh

from ._utils import InputError, record_params

__all__ = [
    "ambient_lower",
    "barcode_ranks",
    "curve_shape",
    "is_raw_matrix",
    "ambient_profile",
    "call_cells",
    "check_losses",
]

log = logging.getLogger(__name__)


def _totals(adata: ad.AnnData) -> np.ndarray:
    return np.asarray(adata.X.sum(axis=1)).ravel()


#: The reference total of a matrix is that of its barcode at this rank (a cell in any real sample).
TOP_RANK = 10
#: A raw matrix's low-count tail lies at least this factor below the reference total ...
TAIL_DEPTH = 30.0
#: ... and holds at least this many times as many barcodes as the head above it ...
TAIL_RATIO = 1.0
#: ... and at least this many barcodes.
MIN_TAIL = 50
#: The ambient pool (barcodes with 1 to ``lower`` UMIs) is too thin below this share of the tail.
MIN_POOL_SHARE = 0.1


def curve_shape(totals: np.ndarray) -> dict[str, float]:
    """Measure the head and the low-count tail of the barcode-rank curve.

    The reference total is that of the barcode ranked :data:`TOP_RANK`; the
    *tail* is the barcodes with totals more than :data:`TAIL_DEPTH` times
    below it (empty droplets, 1.5 decades under the largest cells), the *head*
    the others.
    """
    t = np.sort(np.asarray(totals, dtype=float))[::-1]
    t = t[t > 0]
    ref = float(t[min(TOP_RANK, t.size) - 1]) if t.size else 0.0
    tail = t[t < ref / TAIL_DEPTH]
    return {
        "reference_total": ref,
        "n_head": int(t.size - tail.size),
        "n_tail": int(tail.size),
        "tail_median": float(np.median(tail)) if tail.size else np.nan,
    }


def ambient_lower(totals: np.ndarray, lower: float = 100) -> float:
    """Return the ``lower`` to use on a matrix: ``lower``, or higher when the matrix is pre-trimmed.

    When fewer barcodes hold 1 to ``lower`` UMIs than :data:`MIN_POOL_SHARE`
    of the low-count tail (:func:`curve_shape`), as in a raw matrix trimmed at
    or above ``lower``, the ambient pool would be empty or tiny: the median
    total of the tail is returned instead (its lower half pools the ambient
    profile, its upper half is tested).
    """
    totals = np.asarray(totals, dtype=float)
    shape = curve_shape(totals)
    n_pool = int(((totals > 0) & (totals <= lower)).sum())
    if (
        shape["n_tail"]
        and n_pool < MIN_POOL_SHARE * shape["n_tail"]
        and shape["tail_median"] > lower
    ):
        return float(np.floor(shape["tail_median"]))
    return float(lower)


def _is_raw(shape: dict) -> bool:
    return bool(shape["n_tail"] >= max(MIN_TAIL, TAIL_RATIO * shape["n_head"]))


def is_raw_matrix(adata: ad.AnnData | np.ndarray) -> bool:
    """Whether ``adata`` (or an array of barcode totals) holds raw droplets, not called cells.

    Decided from the shape of the barcode-rank curve, not from one UMI cut: a
    raw matrix has its cells followed by a long low-count tail of empty
    droplets: at least :data:`MIN_TAIL` barcodes, and at least as many as in
    the head, with totals :data:`TAIL_DEPTH` times or more below the
    :data:`TOP_RANK`-th largest (:func:`curve_shape`). A filtered matrix
    (called cells only, small immune cells included) has no such tail. So a raw
    matrix pre-trimmed to, say, >= 100 UMIs, or a milk
    sample whose ambient cloud sits above 100 UMIs, is still raw.
    """
    totals = adata if isinstance(adata, np.ndarray) else _totals(adata)
    return _is_raw(curve_shape(totals))


def _nknots_smspl(n: int) -> int:
    """Return the knot count of R's ``smooth.spline`` for ``n`` unique x (``.nknots.smspl``)."""
    if n < 50:
        return n
    a1, a2, a3, a4 = np.log2([50.0, 100.0, 140.0, 200.0])
    if n < 200:
        v = 2 ** (a1 + (a2 - a1) * (n - 50) / 150)
    elif n < 800:
        v = 2 ** (a2 + (a3 - a2) * (n - 200) / 600)
    elif n < 3200:
        v = 2 ** (a3 + (a4 - a3) * (n - 800) / 2400)
    else:
        v = 200 + (n - 3200) ** 0.2
    return int(v)


def _smooth_spline(x: np.ndarray, y: np.ndarray, df: float) -> BSpline:
    """Cubic smoothing spline with ``df`` equivalent degrees of freedom, as R's ``smooth.spline``.

    Same basis as R (cubic B-splines on x scaled to [0, 1], knots at
    ``.nknots.smspl`` evenly spaced unique x), same criterion (residual sum of
    squares plus lambda times the integrated squared second derivative), and
    lambda chosen so that the trace of the smoother matrix equals ``df``.
    Returns the spline in the original x units.
    """
    x0, r = float(x[0]), float(x[-1] - x[0])
    xs = (x - x0) / r
    n = xs.size
    nk = _nknots_smspl(n)
    kidx = np.trunc(np.linspace(1, n, nk) + 1e-9).astype(int) - 1
    inner = xs[kidx]
    t = np.concatenate([[inner[0]] * 3, inner, [inner[-1]] * 3])
    nb = t.size - 4
    basis = BSpline.design_matrix(np.clip(xs, inner[0], inner[-1]), t, 3).toarray()
    # penalty: integral of B_i'' B_j'' (piecewise linear: two-point Gauss-Legendre is exact)
    a, b = inner[:-1], inner[1:]
    g = np.array([-1.0, 1.0]) / np.sqrt(3.0)
    xq = (((b - a)[:, None] * g[None, :] + (a + b)[:, None]) / 2).ravel()
    wq = np.repeat((b - a) / 2, 2)
    d2 = np.empty((nb, xq.size))
    eye = np.eye(nb)
    d2[:] = BSpline(t, eye, 3).derivative(2)(xq).T
    omega = (d2 * wq) @ d2.T
    btb = basis.T @ basis
    bty = basis.T @ y
    # Demmler-Reinsch: omega v = s btb v, so trace(lambda) = sum 1 / (1 + lambda s)
    ridge = 1e-10 * np.trace(btb) / nb
    s_eig, vecs = eigh(omega, btb + ridge * np.eye(nb))
    s_eig = np.clip(s_eig, 0.0, None)

    def trace(log_lam: float) -> float:
        return float(np.sum(1.0 / (1.0 + np.exp(log_lam) * s_eig)))

    target = min(float(df), nb - 1e-6)
    lo, hi = -60.0, 60.0
    if trace(lo) <= target:
        log_lam = lo
    else:
        for _ in range(200):  # trace falls as lambda grows
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if trace(mid) > target else (lo, mid)
            if hi - lo < 1e-10:
                break
        log_lam = (lo + hi) / 2
    coef = np.linalg.solve(btb + np.exp(log_lam) * omega, bty)
    # back to the original x: t in x units, same coefficients
    return BSpline(t * r + x0, coef, 3)


def barcode_ranks(
    totals: np.ndarray,
    *,
    lower: float = 100,
    exclude_from: int = 50,
    df: float = 20,
    fit_bounds: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Knee and inflection of the barcode-rank curve, as ``DropletUtils::barcodeRanks``.

    Barcodes are ranked by total count (ties share their mid rank), and only
    the unique totals above ``lower`` are used. On log10(total) against
    log10(rank), the *inflection* is the upper end of the steepest segment of
    the curve (its first-derivative minimum, ignoring the ``exclude_from``
    top-ranked barcodes); the curve between the flattest point before it and
    the inflection is fitted with a cubic smoothing spline of ``df`` degrees
    of freedom (R's ``smooth.spline``), and the *knee* is the observed total
    at that spline's point of greatest curvature, ``d2 / (1 + d1^2)^1.5``
    (its minimum, the curve bending down). Both are observed totals, as in
    DropletUtils 1.18.

    Parameters
    ----------
    totals
        Total UMI count per barcode.
    lower
        Only totals above this are used.
    exclude_from
        The first point of the curve searched is the first rank above this.
    df
        Degrees of freedom of the smoothing spline.
    fit_bounds
        ``(low, high)`` totals: fit the spline over the points with totals
        strictly between them instead of the edges found above.

    Returns
    -------
    ``{"knee", "inflection", "knee_rank", "inflection_rank", "n_ranked"}``.
    """
    t = np.asarray(totals, dtype=float)
    t = np.sort(t[np.isfinite(t)])[::-1]
    # unique totals, descending, at their mid ranks
    values, starts, lengths = np.unique(-t, return_index=True, return_counts=True)
    values = -values
    mid = (starts + lengths) - (lengths - 1) / 2.0
    keep = values > lower
    if keep.sum() < 3:
        raise ValueError(
            f"only {int(keep.sum())} distinct totals above lower={lower} UMIs "
            f"({int((t > lower).sum())} "
            "barcodes); too few to find the knee and inflection of the barcode-rank curve"
        )
    y = np.log10(values[keep])
    x = np.log10(mid[keep])
    d1n = np.diff(y) / np.diff(x)
    skip = min(d1n.size - 1, int(np.sum(x <= np.log10(exclude_from))))
    tail = d1n[skip:]
    right = int(np.argmin(tail))
    left = int(np.argmax(tail[: right + 1]))
    right += skip
    left += skip
    inflection = 10 ** y[right]
    if fit_bounds is None:
        sel = np.arange(left, right + 1)
    else:
        sel = np.flatnonzero((y > np.log10(fit_bounds[0])) & (y < np.log10(fit_bounds[1])))
    if sel.size >= 4:
        spline = _smooth_spline(x[sel], y[sel], df)
        d1 = spline.derivative(1)(x[sel])
        d2 = spline.derivative(2)(x[sel])
        curvature = d2 / (1 + d1**2) ** 1.5
        k = int(sel[np.argmin(curvature)])
    else:
        k = int(sel[0]) if sel.size else right
    return {
        "knee": float(10 ** y[k]),
        "inflection": float(inflection),
        "knee_rank": float(10 ** x[k]),
        "inflection_rank": float(10 ** x[right]),
        "n_ranked": int((t > lower).sum()),
    }


def ambient_profile(adata: ad.AnnData, *, lower: float = 100) -> np.ndarray:
    """Ambient RNA profile: gene fractions in the pooled barcodes holding 1 to ``lower`` UMIs."""
    totals = _totals(adata)
    pool = (totals > 0) & (totals <= lower)
    if not pool.any():
        return np.full(adata.n_vars, np.nan)
    summed = np.asarray(adata.X[pool].sum(axis=0)).ravel()
    return summed / summed.sum()


def _sample_name(adata: ad.AnnData) -> str | None:
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
        filtered); ``"auto"``: ``"emptydrops"`` when :func:`is_raw_matrix`
        says the matrix is raw (its cells followed by a long low-count tail),
        else ``"none"``. Setting ``"emptydrops"`` forces EmptyDrops whatever
        the curve looks like.
    lower
        Lower bound of the barcode-rank curve and upper bound of the ambient
        pool (barcodes with 1 to ``lower`` UMIs, which are never called), as
        DropletUtils' ``lower``. When the matrix holds too few such barcodes
        (fewer than :data:`MIN_POOL_SHARE` of its low-count tail: a raw matrix
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
            "method must be one of 'auto', 'emptydrops', 'inflection', 'knee', 'none', "
            f"but {method!r} was passed."
        )
    sample = _sample_name(adata)
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
    totals = _totals(adata)
    shape = curve_shape(totals)
    raw = _is_raw(shape)
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
            flags.append(
                f"pre-trimmed matrix: lower raised from {lower:g} to {lower_used:.0f} UMIs"
            )
    adata_fdr = None
    if used == "none":
        keep = totals > 0
        threshold = float(totals[keep].min()) if keep.any() else 0.0
    elif used == "emptydrops":
        from .emptydrops import emptydrops

        sub = totals >= floor
        res = emptydrops(adata[sub] if floor > 0 else adata, lower=lower_used, retain=retain,
                         niters=niters, fdr=fdr, seed=seed)  # fmt: skip
        keep = np.zeros(adata.n_obs, dtype=bool)
        keep[np.flatnonzero(sub) if floor > 0 else slice(None)] = res["is_cell"].to_numpy(
            dtype=bool
        )
        keep &= totals >= min_umis
        adata_fdr = np.full(adata.n_obs, np.nan)
        adata_fdr[np.flatnonzero(sub) if floor > 0 else slice(None)] = res["fdr"].to_numpy(
            dtype=float
        )
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
