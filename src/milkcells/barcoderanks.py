"""The barcode-rank curve of a droplet matrix: its knee and inflection, its shape, the ambient pool's bound.

As DropletUtils' ``barcodeRanks`` (Lun et al. 2019): barcodes are ranked by
total UMI count, the curve of log10(total) against log10(rank) is smoothed,
and two points are found on it above a lower bound: the *inflection* (the
steepest fall, which separates cells from empty droplets) and the *knee* (the
point of greatest curvature before it). The curve's shape (a long low-count
tail of empty droplets, or none) tells a raw matrix from a filtered one.
Both cell-calling methods use it: :mod:`milkcells.cellcalling` and
:mod:`milkcells.emptydrops`.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
from scipy.interpolate import BSpline
from scipy.linalg import eigh

__all__ = [
    "MIN_POOL_SHARE",
    "MIN_TAIL",
    "TAIL_DEPTH",
    "TAIL_RATIO",
    "TOP_RANK",
    "ambient_lower",
    "barcode_ranks",
    "barcode_totals",
    "curve_shape",
    "is_raw_matrix",
    "is_raw_shape",
]


def barcode_totals(adata: ad.AnnData) -> np.ndarray:
    """Total count of each barcode (the row sums of ``X``)."""
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
    if shape["n_tail"] and n_pool < MIN_POOL_SHARE * shape["n_tail"] and shape["tail_median"] > lower:
        return float(np.floor(shape["tail_median"]))
    return float(lower)


def is_raw_shape(shape: dict) -> bool:
    """Whether a curve measured by :func:`curve_shape` is a raw matrix's (see :func:`is_raw_matrix`)."""
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
    totals = adata if isinstance(adata, np.ndarray) else barcode_totals(adata)
    return is_raw_shape(curve_shape(totals))


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
