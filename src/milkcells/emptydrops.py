"""EmptyDrops: calling cells by testing droplets against the ambient RNA profile.

A Python implementation of ``DropletUtils::emptyDrops`` (Lun et al. 2019,
*Genome Biology* 20:63). Barcodes with a total count at or below ``lower`` are
assumed to be empty: their pooled counts give the ambient profile (Good-Turing
smoothed, so that genes unseen in the pool still get a small probability) and
the Dirichlet-multinomial concentration ``alpha``. Every barcode above
``lower`` is then tested against the null hypothesis that its molecules were
drawn from the ambient pool: its Dirichlet-multinomial log-likelihood is
compared with those of ``niters`` count vectors simulated under the null at the
same total, giving a Monte Carlo p-value ``(n_sim <= obs + 1) / (niters + 1)``.
Barcodes whose total reaches ``retain`` (the knee of the barcode-rank curve by
default) are always called. Benjamini-Hochberg FDR over the tested barcodes
decides the rest.

Unlike a threshold on the barcode-rank curve, EmptyDrops calls small cells
(neutrophils, T cells, damaged lactocytes) whose totals overlap the empty
droplets', provided their expression differs from the ambient milk-protein
profile.

The simulation follows DropletUtils: each Monte Carlo iteration is one path of
molecules drawn one at a time, and the path's log-likelihood is read off at
every distinct tested total, so a single path serves all barcodes. Here the
paths are drawn as a Pólya urn (equivalent to a Dirichlet draw followed by
categorical draws) and vectorised over batches of iterations with numpy.
"""

from __future__ import annotations

import logging
import numbers
import os

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import gammaln

from .barcoderanks import barcode_ranks
from .nullmodel import ALPHA_BOUNDS, alpha_mle, ambient_proportions, data_loglik, monte_carlo_counts

__all__ = ["emptydrops"]

log = logging.getLogger(__name__)

#: The knee is not trusted when this share of the barcodes between it and twice it look ambient.
KNEE_AMBIENT_SHARE = 0.2
#: ... where "look ambient" is a Monte Carlo p-value above this ...
KNEE_AMBIENT_P = 0.05
#: ... from this many iterations (at most niters).
KNEE_CHECK_ITERS = 1000


# --------------------------------------------------------------------------------------
# EmptyDrops
# --------------------------------------------------------------------------------------


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (R's ``p.adjust(method="BH")``)."""
    n = p.size
    if n == 0:
        return p.copy()
    order = np.argsort(p)[::-1]
    ranked = p[order] * n / np.arange(n, 0, -1)
    adj = np.minimum(1.0, np.minimum.accumulate(ranked))
    out = np.empty(n)
    out[order] = adj
    return out


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_params(lower, niters, retain, alpha, ignore, fdr, seed, batch_size, n_jobs) -> None:
    def bad(name, value, expected):
        raise ValueError(f"{name} must be {expected}, but {value!r} was passed.")

    if not _is_number(lower) or not (0 <= lower < np.inf):
        bad("lower", lower, "a finite number >= 0")
    if not _is_int(niters) or niters < 1:
        bad("niters", niters, "a positive integer")
    if retain is not None and (not _is_number(retain) or np.isnan(retain) or retain <= lower):
        bad("retain", retain, f"None or a number greater than lower={lower} (np.inf to disable)")
    if alpha is not None and (not _is_number(alpha) or np.isnan(alpha) or alpha <= 0):
        bad("alpha", alpha, "None, a positive number or np.inf")
    if ignore is not None and (not _is_number(ignore) or not (0 <= ignore < np.inf)):
        bad("ignore", ignore, "None or a finite number >= 0")
    if not _is_number(fdr) or not (0 < fdr <= 1):
        bad("fdr", fdr, "a number in (0, 1]")
    seed_types = (np.random.SeedSequence, np.random.Generator)
    if not (seed is None or isinstance(seed, seed_types) or (_is_int(seed) and seed >= 0)):
        bad("seed", seed, "None, a non-negative integer, a SeedSequence or a numpy Generator")
    if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
        bad("batch_size", batch_size, "None or a positive integer")
    if not _is_int(n_jobs) or not (n_jobs >= 1 or n_jobs == -1):
        bad("n_jobs", n_jobs, "a positive integer or -1 (all cores)")


def _count_matrix(adata: ad.AnnData) -> sp.csr_matrix:
    """``adata.X`` as a canonical CSR matrix of integer counts (``adata`` is never modified)."""
    x = adata.X
    if x is None:
        raise ValueError("adata.X is empty: emptydrops needs the raw counts in X.")
    if not sp.issparse(x):
        x = sp.csr_matrix(np.asarray(x))
    elif x.format != "csr":
        x = sp.csr_matrix(x)
    if not x.has_canonical_format:
        x = x.copy()
        x.sum_duplicates()
    data = x.data
    if data.size and data.min() < 0:
        raise ValueError("adata.X holds negative values: emptydrops needs raw UMI counts.")
    step = 1 << 22  # check in chunks: no full-size temporaries
    chunks = (data[i : i + step] for i in range(0, data.size, step))
    if not all(np.array_equal(c, np.round(c)) for c in chunks):
        log.warning("adata.X holds non-integer values; rounding them to the nearest integer")
        x = x.copy()
        x.data = np.round(x.data)
        x.eliminate_zeros()
    return x


def emptydrops(
    adata: ad.AnnData,
    *,
    lower: float = 100,
    niters: int = 10000,
    retain: float | None = None,
    alpha: float | None = None,
    ignore: float | None = None,
    fdr: float = 0.01,
    test_ambient: bool = False,
    check_knee: bool = True,
    seed: int | np.random.Generator | None = 0,
    batch_size: int | None = None,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """Call cells with EmptyDrops (Lun et al. 2019; ``DropletUtils::emptyDrops``).

    Parameters
    ----------
    adata
        Raw (unfiltered) droplets of one sample, barcodes x genes, with UMI
        counts in ``X`` (dense or sparse; non-integer values are rounded).
        Never modified.
    lower
        Barcodes with totals at or below this are assumed empty: they make up
        the ambient pool and are not tested.
    niters
        Monte Carlo iterations. The smallest attainable p-value is
        ``1 / (niters + 1)``; see the ``limited`` column.
    retain
        Barcodes with totals at or above this are always called cells (their
        p-values are set to 0 for the FDR). ``None``: the knee of the
        barcode-rank curve (:func:`milkcells.barcoderanks.barcode_ranks` with
        ``lower``); ``np.inf`` disables retention.
    alpha
        Dirichlet-multinomial concentration of the null model. ``None``:
        maximum-likelihood estimate from the ambient barcodes
        (:func:`~milkcells.nullmodel.estimate_alpha`); ``np.inf``: multinomial.
    ignore
        Barcodes with totals at or below this are not tested (nor used for the
        ambient profile unless also at or below ``lower``).
    fdr
        Barcodes above ``lower`` with an FDR at or below this are cells.
    test_ambient
        Also compute p-values for the barcodes with ``0 < total <= lower``
        (a calibration check: under the null they are uniform). They stay out
        of the FDR correction, as in DropletUtils with ``test.ambient=TRUE``.
    check_knee
        With the default ``retain`` (the knee), check that the knee does not
        lie within the ambient cloud: the barcodes with totals from the knee
        to twice the knee are tested too, and when at least
        :data:`KNEE_AMBIENT_SHARE` of them (and at least two) are
        indistinguishable from the ambient RNA (p-value above
        :data:`KNEE_AMBIENT_P`, from :data:`KNEE_CHECK_ITERS` iterations), the
        knee is not trusted: a warning is logged and ``retain`` doubles until
        the barcodes from it to twice it no longer look ambient (``inf`` past
        the largest total); the test alone decides below it, and barcodes
        found to look ambient are never retained (``attrs``:
        ``knee_trusted`` False, ``retain`` the value used). This happens when a sample
        holds fewer cells than ``exclude_from`` of the barcode-rank curve (50):
        the curve's knee then falls among the empty droplets.
    seed
        Seed for :func:`numpy.random.default_rng` (or a Generator). Results
        are reproducible for a given ``seed`` and ``batch_size``.
    batch_size
        Monte Carlo iterations simulated together (memory grows with
        ``batch_size`` times the largest simulated total). ``None``: about
        a million molecules per batch.
    n_jobs
        Threads running Monte Carlo batches (``-1``: all cores). Results do
        not depend on it.

    Returns
    -------
    One row per barcode of ``adata`` (same order and index):

    ``total``
        Total UMI count.
    ``log_prob``
        Log-probability of the barcode's counts under the Dirichlet-multinomial
        ambient model.
    ``pvalue``
        Monte Carlo p-value ``(n + 1) / (niters + 1)``, ``n`` the number of
        simulated ambient vectors of the same total that are at most as
        likely. Barcodes at or above ``retain`` are not simulated and get 0
        (DropletUtils still simulates them, for diagnostics only).
    ``limited``
        Whether the p-value is at its lower limit (no simulated vector was as
        unlikely); a ``limited`` barcode that is not a cell suggests raising
        ``niters``. False for retained barcodes.
    ``fdr``
        Benjamini-Hochberg adjusted p-value over the tested barcodes above
        ``lower``, with the retained barcodes' p-values set to 0.
    ``is_cell``
        ``fdr <= fdr`` (the argument).

    Untested barcodes (``total <= lower``, or ``<= ignore``) have NaN/NA in
    ``log_prob``, ``pvalue``, ``limited`` and ``fdr`` and ``is_cell`` False.
    ``attrs`` holds ``alpha``, ``retain``, ``lower``, ``niters``, ``ignore``,
    ``fdr``, ``n_tested``, ``n_cells``, ``knee`` (NaN when ``retain`` was
    given), ``knee_trusted`` (None when not checked) and ``knee_ambient_share``.
    """
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"adata must be an AnnData, but a {type(adata).__name__} was passed.")
    _check_params(lower, niters, retain, alpha, ignore, fdr, seed, batch_size, n_jobs)
    if not isinstance(test_ambient, (bool, np.bool_)):
        raise ValueError(f"test_ambient must be True or False, but {test_ambient!r} was passed.")
    if n_jobs == -1:
        n_jobs = os.cpu_count() or 1
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    x = _count_matrix(adata)
    n_bc, n_genes = x.shape
    totals = np.asarray(x.sum(axis=1, dtype=np.float64)).ravel().astype(np.int64)

    # ambient profile over the genes with any count in the sample
    expressed = np.asarray(x.sum(axis=0, dtype=np.float64)).ravel() > 0
    ambient = totals <= lower
    amb = x[np.flatnonzero(ambient & (totals > 0))]
    amb_sums = np.asarray(amb.sum(axis=0, dtype=np.float64)).ravel()
    if amb_sums.sum() == 0:
        raise ValueError(
            f"no counts in barcodes with totals <= lower={lower} ({int(ambient.sum())} such "
            "barcodes): the ambient profile cannot be estimated; is this a filtered matrix? "
            "EmptyDrops needs the raw droplets (or a larger lower)."
        )
    prop = np.zeros(n_genes)
    prop[expressed] = ambient_proportions(np.rint(amb_sums[expressed]))

    if alpha is None:
        nz = amb.data > 0
        alpha = alpha_mle(amb.indices[nz], amb.data[nz], totals[ambient], prop, ALPHA_BOUNDS)
    alpha = float(alpha)
    n_amb = int((ambient & (totals > 0)).sum())
    log.info("emptydrops: alpha %.4g from %d ambient barcodes", alpha, n_amb)

    # which barcodes to test
    tested = totals > (0 if test_ambient else lower)
    if ignore is not None:
        tested &= totals > ignore
    knee_check = retain is None and bool(check_knee)
    knee = float("nan")
    if retain is None:
        try:
            retain = knee = barcode_ranks(totals, lower=lower)["knee"]
        except ValueError as err:
            raise ValueError(
                "could not find the knee of the barcode-rank curve for the default retain "
                f"({err}); pass retain= explicitly (np.inf to disable retention)."
            ) from err
    retain = float(retain)

    # log-likelihood of each tested barcode: data part (summed over non-zero
    # genes) plus the part that depends on the total only
    idx = np.flatnonzero(tested)
    data_part = data_loglik(x, idx, prop, alpha)
    t_idx = totals[idx].astype(float)
    rest = gammaln(t_idx + 1.0)
    if np.isfinite(alpha):
        rest += gammaln(alpha) - gammaln(t_idx + alpha)
    log_prob = np.full(n_bc, np.nan)
    log_prob[idx] = data_part + rest

    # Monte Carlo p-values for the tested barcodes below retain (and the knee window)
    n_le = np.zeros(n_bc, dtype=np.int64)
    expr_idx = np.flatnonzero(expressed)

    def simulate(mask: np.ndarray, iters: int = niters) -> np.ndarray:
        in_sim = mask[idx]
        out = np.zeros(int(in_sim.sum()), dtype=np.int64)
        if not in_sim.any():
            return out
        log.info(
            "emptydrops: %d Monte Carlo iterations for %d barcodes (totals %d-%d)",
            iters, int(in_sim.sum()), totals[idx][in_sim].min(), totals[idx][in_sim].max(),
        )  # fmt: skip
        return monte_carlo_counts(
            totals[idx][in_sim], data_part[in_sim], prop[expr_idx], alpha,
            niters=iters, rng=rng, batch_size=batch_size, n_jobs=n_jobs,
        )  # fmt: skip

    below = tested & (totals < retain)
    n_le[below] = simulate(below)
    done = below.copy()
    knee_trusted = None
    knee_share = float("nan")
    ambient_like = np.zeros(n_bc, dtype=bool)
    if knee_check and np.isfinite(retain):
        # a cheaper check: fewer iterations resolve p > KNEE_AMBIENT_P well enough
        n_guard = min(niters, KNEE_CHECK_ITERS)
        knee_trusted = True
        while True:
            window = tested & (totals >= retain) & (totals < 2.0 * retain)
            p_window = (simulate(window, n_guard) + 1.0) / (n_guard + 1.0)
            flagged = np.flatnonzero(window)[p_window > KNEE_AMBIENT_P]
            ambient_like[flagged] = True
            share = flagged.size / window.sum() if window.any() else 0.0
            if knee_share != knee_share:  # the knee's own window
                knee_share = share
            if not (flagged.size >= 2 and share >= KNEE_AMBIENT_SHARE):
                break
            if knee_trusted:
                log.warning(
                    "emptydrops: the knee of the barcode-rank curve (%.0f UMIs) lies within the "
                    "ambient cloud: %d of the %d barcodes with %.0f-%.0f UMIs look like ambient "
                    "RNA (p > %g); only barcodes above the cloud are retained, the EmptyDrops "
                    "test decides the rest",
                    retain, flagged.size, int(window.sum()), retain, 2 * retain,
                    KNEE_AMBIENT_P,
                )  # fmt: skip
            knee_trusted = False
            retain *= 2.0
            if retain > totals.max():
                retain = float("inf")
                break
        if not knee_trusted:
            log.warning("emptydrops: retaining barcodes with >= %.0f UMIs (not looking like "
                        "ambient RNA) instead of the knee", retain)  # fmt: skip
    retained = tested & (totals >= retain) & ~ambient_like
    simulated = tested & ~retained
    n_le[simulated & ~done] = simulate(simulated & ~done)
    pvalue = np.full(n_bc, np.nan)
    pvalue[simulated] = (n_le[simulated] + 1.0) / (niters + 1.0)
    pvalue[retained] = 0.0
    limited = pd.arrays.BooleanArray(np.zeros(n_bc, dtype=bool), mask=~(simulated | retained))
    limited[simulated] = n_le[simulated] == 0
    limited[retained] = False

    # FDR over the tested barcodes above lower (retained ones at p = 0)
    corrected = tested & (totals > lower)
    fdr_vals = np.full(n_bc, np.nan)
    fdr_vals[corrected] = _bh(pvalue[corrected])
    is_cell = corrected & (fdr_vals <= fdr)

    out = pd.DataFrame(
        {
            "total": totals,
            "log_prob": log_prob,
            "pvalue": pvalue,
            "limited": limited,
            "fdr": fdr_vals,
            "is_cell": is_cell,
        },
        index=adata.obs_names.copy(),
    )
    out.attrs.update(
        {
            "alpha": alpha,
            "retain": retain,
            "lower": float(lower),
            "niters": int(niters),
            "ignore": None if ignore is None else float(ignore),
            "fdr": float(fdr),
            "n_tested": int(corrected.sum()),
            "n_cells": int(is_cell.sum()),
            "knee": knee,
            "knee_trusted": knee_trusted,
            "knee_ambient_share": knee_share,
        }
    )
    check = simulated & corrected
    n_lim = int((limited[check] & ~is_cell[check]).sum()) if check.any() else 0
    log.info(
        "emptydrops: %d of %d tested barcodes called cells "
        "(%d retained at >= %.0f UMIs, FDR <= %g)",
        int(is_cell.sum()), int(corrected.sum()), int(retained.sum()), retain, fdr,
    )  # fmt: skip
    if n_lim:
        log.warning(
            "emptydrops: %d barcodes have p-values at their lower limit but are not called; "
            "consider raising niters (now %d)", n_lim, niters,
        )  # fmt: skip
    return out
