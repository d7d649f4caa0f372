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
import math
import numbers
import os
from concurrent.futures import ThreadPoolExecutor

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from scipy.special import gammaln

from .barcoderanks import barcode_ranks

__all__ = ["emptydrops", "ambient_proportions", "estimate_alpha"]

log = logging.getLogger(__name__)

#: Search interval of the maximum-likelihood ``alpha`` (as DropletUtils' ``.estimate_alpha``).
ALPHA_BOUNDS = (0.01, 10000.0)
#: The knee is not trusted when this share of the barcodes between it and twice it look ambient.
KNEE_AMBIENT_SHARE = 0.2
#: ... where "look ambient" is a Monte Carlo p-value above this ...
KNEE_AMBIENT_P = 0.05
#: ... from this many iterations (at most niters).
KNEE_CHECK_ITERS = 1000
#: Simulated molecules per Monte Carlo batch when ``batch_size`` is not given (memory ~60 B each).
_MOLECULES_PER_BATCH = 1 << 20


# --------------------------------------------------------------------------------------
# Ambient profile: simple Good-Turing
# --------------------------------------------------------------------------------------


def _simple_good_turing(
    r: np.ndarray, n: np.ndarray, conf: float = 1.96
) -> tuple[float, np.ndarray]:
    """Gale & Sampson's simple Good-Turing estimator, as edgeR's ``goodTuring``.

    Parameters
    ----------
    r
        Distinct positive counts, ascending.
    n
        Number of genes observed with each count in ``r``.
    conf
        Confidence factor for switching from the Turing to the smoothed
        (linear log-log) estimates.

    Returns
    -------
    ``(p0, proportions)``: the total probability of all unseen genes and the
    probability of *one* gene observed ``r[i]`` times.
    """
    r = r.astype(float)
    n = n.astype(float)
    big_n = float(np.sum(r * n))
    p0 = float(n[0] / big_n) if r[0] == 1 else 0.0
    if r.size < 2:
        # A single distinct count: no slope can be fitted. Fall back to the
        # maximum-likelihood proportions (unseen genes are handled by the caller).
        return 0.0, r / big_n
    # Averaging transform Z_r = 2 N_r / (t - q), t and q the neighbouring counts.
    prev = np.concatenate(([0.0], r[:-1]))
    nxt = np.concatenate((r[1:], [2.0 * r[-1] - prev[-1]]))
    log_r = np.log(r)
    log_z = np.log(2.0 * n) - np.log(nxt - prev)
    dx = log_r - log_r.mean()
    slope = np.sum(dx * (log_z - log_z.mean())) / np.sum(dx**2)
    # Smoothed r* = (r+1) S(r+1)/S(r) with log S linear in log r (the intercept cancels).
    y = (r + 1.0) * np.exp(slope * (np.log(r + 1.0) - log_r))
    out = np.empty_like(r)
    use_smooth = False
    for i in range(r.size):
        if not use_smooth:
            if i == r.size - 1 or r[i + 1] != r[i] + 1:
                use_smooth = True
            else:
                x = (r[i] + 1.0) * n[i + 1] / n[i]
                if abs(x - y[i]) <= conf * x * math.sqrt(1.0 / n[i + 1] + 1.0 / n[i]):
                    use_smooth = True
                else:
                    out[i] = x
        if use_smooth:
            out[i] = y[i]
    out *= (1.0 - p0) / np.sum(out * n)
    return p0, out


def ambient_proportions(counts_sum: np.ndarray) -> np.ndarray:
    """Good-Turing proportions of the summed ambient counts (DropletUtils' ambient profile).

    Follows ``edgeR::goodTuringProportions`` as used by DropletUtils'
    ``ambientProfileEmpty``: the Gale-Sampson simple Good-Turing estimator
    smooths the proportions of the observed genes and gives the genes with
    zero counts an equal share of the estimated unseen mass. When that
    estimate still leaves genes at zero probability (no gene was seen exactly
    once), a pseudo-gene of count 1 provides their share, ``1 / sum(counts)``,
    and the other proportions shrink to make room (DropletUtils'
    ``.safe_good_turing``).

    Parameters
    ----------
    counts_sum
        Per-gene counts summed over the ambient barcodes (1-D, non-negative
        integers). Drop genes that have no counts anywhere in the sample first:
        DropletUtils gives those a proportion of zero.

    Returns
    -------
    Proportions (float64, summing to 1), one per gene, all positive.
    """
    x = np.asarray(counts_sum)
    if x.ndim != 1:
        raise ValueError(f"counts_sum must be one-dimensional, but has shape {x.shape}.")
    if x.size == 0:
        raise ValueError("counts_sum is empty: there are no genes to estimate proportions for.")
    if not np.all(np.isfinite(x)) or np.any(x < 0) or np.any(x != np.round(x)):
        raise ValueError("counts_sum must hold non-negative integer counts.")
    x = x.astype(np.int64)
    total = int(x.sum())
    if total == 0:
        raise ValueError("counts_sum holds no counts: the ambient profile cannot be estimated.")
    r, inverse, n = np.unique(x, return_inverse=True, return_counts=True)
    seen = r > 0
    p0, prop_r = _simple_good_turing(r[seen], n[seen])
    per_value = np.zeros(r.size)
    per_value[seen] = prop_r
    n0 = int(n[~seen].sum()) if (~seen).any() else 0
    if n0:
        per_value[~seen] = p0 / n0
    out = per_value[inverse]
    still_zero = ~(out > 0)
    if still_zero.any():
        pseudo = 1.0 / total
        out[~still_zero] *= 1.0 - pseudo
        out[still_zero] = pseudo / still_zero.sum()
    return out


# --------------------------------------------------------------------------------------
# Dirichlet-multinomial concentration
# --------------------------------------------------------------------------------------


def _alpha_mle(
    genes: np.ndarray,
    x: np.ndarray,
    totals: np.ndarray,
    prop: np.ndarray,
    bounds: tuple[float, float],
) -> float:
    """Maximum-likelihood Dirichlet-multinomial ``alpha`` from non-zero entries.

    ``genes`` and ``x`` are the gene index and count of every non-zero entry of
    the ambient barcodes, ``totals`` the barcodes' totals. Identical
    ``(gene, count)`` pairs and identical totals are collapsed first, so each
    evaluation of the likelihood costs far less than one pass over the entries.
    """
    x = x.astype(np.int64)
    totals = totals[totals > 0].astype(np.int64)  # empty barcodes add nothing
    xmax = int(x.max()) if x.size else 0
    n_keys = prop.size * (xmax + 1)
    key = genes.astype(np.int64) * (xmax + 1) + x
    if n_keys <= 50_000_000:
        key_n = np.bincount(key, minlength=n_keys)
        key_u = np.flatnonzero(key_n)
        key_n = key_n[key_u]
    else:
        key_u, key_n = np.unique(key, return_counts=True)
    g_u, x_u = np.divmod(key_u, xmax + 1)
    p_u = prop[g_u]
    t_u, t_n = np.unique(totals, return_counts=True)
    n_bc = totals.size

    def negloglik(log_alpha: float) -> float:
        a = math.exp(log_alpha)
        ap = a * p_u
        ll = n_bc * gammaln(a) - np.dot(t_n, gammaln(t_u + a))
        ll += np.dot(key_n, gammaln(x_u + ap) - gammaln(ap))
        return -float(ll)

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(negloglik, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    alpha = float(math.exp(res.x))
    if hi - res.x < 1e-3:
        log.info("alpha at its upper bound %.4g: the ambient counts look multinomial", alpha)
    return alpha


def estimate_alpha(
    counts, proportions: np.ndarray, *, bounds: tuple[float, float] = ALPHA_BOUNDS
) -> float:
    """Maximum-likelihood Dirichlet-multinomial concentration of ambient barcodes.

    As DropletUtils' ``.estimate_alpha``: each barcode's counts are taken as
    Dirichlet-multinomial with parameter vector ``alpha * proportions``, and the
    log-likelihood summed over barcodes is maximised over ``alpha`` within
    ``bounds`` (here by a bounded Brent search on ``log(alpha)``). Small values
    mean overdispersion; the likelihood of multinomial counts keeps rising with
    ``alpha``, so they end at the upper bound.

    Parameters
    ----------
    counts
        Counts of the ambient barcodes (barcodes x genes; dense or scipy sparse,
        non-negative integers).
    proportions
        Ambient proportions, one per gene (e.g. :func:`ambient_proportions`);
        must be positive wherever ``counts`` has a non-zero entry.
    bounds
        ``(low, high)`` search interval for ``alpha``.

    Returns
    -------
    The estimate of ``alpha``.
    """
    lo, hi = (float(b) for b in bounds)
    if not (0 < lo < hi < np.inf):
        raise ValueError(
            f"bounds must be (low, high) with 0 < low < high < inf, but {bounds!r} was passed."
        )
    m = sp.csr_matrix(counts)
    m.sum_duplicates()
    prop = np.asarray(proportions, dtype=float).ravel()
    if prop.size != m.shape[1]:
        raise ValueError(
            f"proportions has {prop.size} entries but counts has {m.shape[1]} genes (columns)."
        )
    data = m.data
    if np.any(data < 0) or np.any(data != np.round(data)):
        raise ValueError("counts must hold non-negative integer counts.")
    keep = data > 0
    genes, x = m.indices[keep], data[keep]
    if np.any(prop[genes] <= 0):
        raise ValueError("proportions must be positive for every gene with a non-zero count.")
    totals = np.asarray(m.sum(axis=1, dtype=np.float64)).ravel()
    if totals.sum() == 0:
        raise ValueError("counts holds no counts: alpha cannot be estimated.")
    return _alpha_mle(genes, x, totals, prop, (lo, hi))


# --------------------------------------------------------------------------------------
# Monte Carlo
# --------------------------------------------------------------------------------------


def _alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table for O(1) categorical draws from ``p``."""
    k = p.size
    scaled = p * (k / p.sum())
    accept = np.ones(k)
    alias = np.arange(k)
    small = np.flatnonzero(scaled < 1.0).tolist()
    large = np.flatnonzero(scaled >= 1.0).tolist()
    while small and large:
        s, g = small.pop(), large.pop()
        accept[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    # leftovers are 1 up to rounding
    return accept, alias


class _NullSimulator:
    """Monte Carlo paths of ambient molecules and their log-likelihoods.

    One path per iteration, grown molecule by molecule up to the largest
    checkpoint. The log-likelihood (its data-dependent part, as in
    DropletUtils) gains ``log(alpha p_g + c_g) - log(c_g + 1)`` when a molecule of
    gene ``g`` arrives while ``c_g`` are already there (``log p_g - log(c_g + 1)``
    for the multinomial).
    """

    def __init__(self, prop: np.ndarray, alpha: float, checkpoints: np.ndarray):
        self.prop = prop
        self.alpha = alpha
        self.checkpoints = checkpoints
        self.n_mol = int(checkpoints[-1])
        self.accept, self.alias = _alias_table(prop)
        self.gene_dtype = np.uint16 if prop.size <= np.iinfo(np.uint16).max else np.int32
        self.log_k = np.log(np.arange(1, self.n_mol + 1, dtype=float))  # log(c + 1) for c = 0..
        self.log_p = np.log(prop)

    def _draw_ambient(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Categorical draws from the ambient profile (alias method)."""
        k = self.prop.size
        u = rng.random(size) * k
        bucket = np.minimum(u.astype(np.int64), k - 1)
        take_alias = (u - bucket) >= self.accept[bucket]
        out = np.where(take_alias, self.alias[bucket], bucket)
        return out.astype(self.gene_dtype)

    def _paths(self, rng: np.random.Generator, b: int) -> np.ndarray:
        """Gene of every molecule of ``b`` paths, flattened path by path (``b * n_mol``)."""
        n = self.n_mol
        if not np.isfinite(self.alpha):
            return self._draw_ambient(rng, b * n)
        # Pólya urn: molecule j (j earlier ones) is a fresh ambient draw with
        # probability alpha / (alpha + j), else a copy of a uniform earlier one.
        scale = np.tile(self.alpha + np.arange(n, dtype=np.float64), b)
        u = rng.random(b * n)
        u *= scale
        fresh = u < self.alpha
        # given not fresh, u * (alpha + j) - alpha is uniform on [0, j)
        u -= self.alpha
        del scale
        start = np.repeat(np.arange(0, b * n, n, dtype=np.intp), n)
        self_idx = np.arange(b * n, dtype=np.intp)
        ptr = np.where(fresh, self_idx, np.minimum(start + u.astype(np.intp), self_idx))
        del u, start, self_idx
        # follow copy pointers to the fresh molecule at the root (pointer jumping)
        while True:
            nxt = ptr[ptr]
            if np.array_equal(nxt, ptr):
                break
            ptr = nxt
        genes = np.zeros(b * n, dtype=self.gene_dtype)
        genes[fresh] = self._draw_ambient(rng, int(fresh.sum()))
        return genes[ptr]

    def simulate(self, rng: np.random.Generator, b: int) -> np.ndarray:
        """Log-likelihoods (``b x n_checkpoints``) of ``b`` simulated paths."""
        n = self.n_mol
        genes = self._paths(rng, b).reshape(b, n)
        # rank of each molecule among the earlier ones of its gene: stable sort
        # of each path by gene (a radix sort for uint16); position minus the
        # start of its run of equal genes
        order = np.argsort(genes, axis=1, kind="stable")
        order += np.arange(0, b * n, n, dtype=order.dtype)[:, None]
        order = order.ravel()
        sorted_genes = genes.ravel()[order]
        del genes
        pos = np.tile(np.arange(n, dtype=np.intp), b)  # position within its path
        run_start = np.zeros(b * n, dtype=np.intp)
        new_run = sorted_genes[1:] != sorted_genes[:-1]
        run_start[1:] = np.where(new_run, pos[1:], 0)  # (pos is 0 where a path starts)
        run_start = run_start.reshape(b, n)
        np.maximum.accumulate(run_start, axis=1, out=run_start)
        before = pos - run_start.ravel()  # molecules of the same gene already present
        del run_start, new_run, pos
        if np.isfinite(self.alpha):
            inc = self.alpha * self.prop[sorted_genes]
            inc += before
            np.log(inc, out=inc)
        else:
            inc = self.log_p[sorted_genes]
        inc -= self.log_k[before]
        del before, sorted_genes
        path = np.empty(b * n)
        path[order] = inc
        del inc, order
        path = path.reshape(b, n)
        np.cumsum(path, axis=1, out=path)
        return path[:, self.checkpoints - 1]


def _count_at_most(sims: np.ndarray, column: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per observation, how many simulated values in its column are <= its value.

    ``sims`` is ``b x k`` (paths x checkpoints); ``column[i]`` indexes the
    checkpoint of observation ``i``. A vectorised binary search over the
    column-sorted simulations.
    """
    srt = np.sort(sims, axis=0)
    b = srt.shape[0]
    lo = np.zeros(value.size, dtype=np.intp)
    hi = np.full(value.size, b, dtype=np.intp)
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        below = srt[np.minimum(mid, b - 1), column] <= value
        lo = np.where(active & below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)


def _monte_carlo_counts(
    totals: np.ndarray,
    logp: np.ndarray,
    prop: np.ndarray,
    alpha: float,
    *,
    niters: int,
    rng: np.random.Generator,
    batch_size: int | None,
    n_jobs: int,
) -> np.ndarray:
    """Number of the ``niters`` null paths with log-likelihood <= each observed one.

    ``totals`` and ``logp`` are the tested barcodes' totals and the
    data-dependent part of their log-likelihoods; ``prop`` the ambient profile
    (positive entries only). Each batch of iterations has its own random
    stream, spawned from ``rng``, so the result does not depend on ``n_jobs``.
    """
    checkpoints, column = np.unique(totals, return_inverse=True)
    sim = _NullSimulator(prop, alpha, checkpoints)
    if batch_size is None:
        batch_size = max(1, _MOLECULES_PER_BATCH // sim.n_mol)
    sizes = [min(batch_size, niters - s) for s in range(0, niters, batch_size)]
    rngs = rng.spawn(len(sizes))
    # a tiny tolerance makes ties of the two ways of summing the log-likelihood count as ties
    value = logp + 1e-10 * (1.0 + np.abs(logp))
    log.debug(
        "Monte Carlo: %d iterations in %d batches, paths of %d molecules, %d checkpoints",
        niters, len(sizes), sim.n_mol, checkpoints.size,
    )  # fmt: skip

    def run(i: int) -> np.ndarray:
        return _count_at_most(sim.simulate(rngs[i], sizes[i]), column, value)

    if n_jobs == 1 or len(sizes) == 1:
        return sum(run(i) for i in range(len(sizes)))
    with ThreadPoolExecutor(max_workers=min(n_jobs, len(sizes))) as pool:
        return sum(pool.map(run, range(len(sizes))))


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


def _data_loglik(
    x: sp.csr_matrix, rows: np.ndarray, prop: np.ndarray, alpha: float, chunk_nnz: int = 1 << 21
) -> np.ndarray:
    """Data-dependent part of the log-likelihood of each of ``rows``, from the non-zeros only.

    ``sum_g lgamma(alpha p_g + x_g) - lgamma(alpha p_g) - lgamma(x_g + 1)`` over
    the genes with ``x_g > 0`` (``x_g log p_g - lgamma(x_g + 1)`` for the
    multinomial), as DropletUtils' ``.compute_multinom_prob_data``. Rows are
    processed in chunks of about ``chunk_nnz`` non-zeros to bound memory.
    """
    out = np.zeros(rows.size)
    if rows.size == 0:
        return out
    csum = np.cumsum(np.diff(x.indptr)[rows])
    cuts = np.searchsorted(csum, np.arange(chunk_nnz, csum[-1], chunk_nnz), side="right")
    edges = np.unique(np.concatenate(([0], cuts, [rows.size])))
    for start, stop in zip(edges[:-1], edges[1:], strict=True):
        sub = x[rows[start:stop]]
        keep = sub.data > 0  # explicit zeros add nothing
        cnt = sub.data[keep].astype(np.int64)
        p = prop[sub.indices[keep]]
        log_fact = gammaln(np.arange(cnt.max() + 2.0)) if cnt.size else np.zeros(2)
        if np.isfinite(alpha):
            # lgamma(ap + x) - lgamma(ap) = sum_{k<x} log(ap + k): direct for the
            # (very common) counts of 1 and 2, lgamma for the rest
            ap = alpha * p
            terms = np.log(ap)
            two = cnt == 2
            terms[two] += np.log(ap[two] + 1.0)
            big = cnt > 2
            terms[big] = gammaln(ap[big] + cnt[big]) - gammaln(ap[big])
        else:
            terms = cnt * np.log(p)
        terms -= log_fact[cnt + 1]
        row_of = np.repeat(np.arange(stop - start), np.diff(sub.indptr))[keep]
        out[start:stop] = np.bincount(row_of, weights=terms, minlength=stop - start)
    return out


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
        (:func:`estimate_alpha`); ``np.inf``: multinomial.
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
        alpha = _alpha_mle(amb.indices[nz], amb.data[nz], totals[ambient], prop, ALPHA_BOUNDS)
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
    data_part = _data_loglik(x, idx, prop, alpha)
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
        return _monte_carlo_counts(
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
