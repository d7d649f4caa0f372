"""EmptyDrops' null model: ambient droplets as Dirichlet-multinomial draws from the ambient profile.

The ambient profile is the pooled counts of the low-count barcodes, Good-Turing
smoothed so that genes unseen in the pool still get a small probability
(:func:`ambient_proportions`); its concentration ``alpha`` is the maximum
likelihood one (:func:`estimate_alpha`). A barcode's log-likelihood under the
model (:func:`data_loglik`) is compared with those of count vectors simulated
under it (:class:`NullSimulator`, :func:`monte_carlo_counts`): one path of
molecules per Monte Carlo iteration, drawn one at a time as a Pólya urn and
read off at every distinct tested total, as DropletUtils does. Used by
:func:`milkcells.emptydrops.emptydrops`.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from scipy.special import gammaln

__all__ = [
    "ALPHA_BOUNDS",
    "NullSimulator",
    "alpha_mle",
    "ambient_proportions",
    "data_loglik",
    "estimate_alpha",
    "monte_carlo_counts",
]

log = logging.getLogger(__name__)

#: Search interval of the maximum-likelihood ``alpha`` (as DropletUtils' ``.estimate_alpha``).
ALPHA_BOUNDS = (0.01, 10000.0)
#: Simulated molecules per Monte Carlo batch when ``batch_size`` is not given (memory ~60 B each).
_MOLECULES_PER_BATCH = 1 << 20


# --------------------------------------------------------------------------------------
# Ambient profile: simple Good-Turing
# --------------------------------------------------------------------------------------


def _simple_good_turing(r: np.ndarray, n: np.ndarray, conf: float = 1.96) -> tuple[float, np.ndarray]:
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


def alpha_mle(
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

    Returns
    -------
    ``alpha`` within ``bounds``.
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


def estimate_alpha(counts, proportions: np.ndarray, *, bounds: tuple[float, float] = ALPHA_BOUNDS) -> float:
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
        raise ValueError(f"bounds must be (low, high) with 0 < low < high < inf, but {bounds!r} was passed.")
    m = sp.csr_matrix(counts)
    m.sum_duplicates()
    prop = np.asarray(proportions, dtype=float).ravel()
    if prop.size != m.shape[1]:
        raise ValueError(f"proportions has {prop.size} entries but counts has {m.shape[1]} genes (columns).")
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
    return alpha_mle(genes, x, totals, prop, (lo, hi))


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


class NullSimulator:
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


def monte_carlo_counts(
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

    Returns
    -------
    One count per tested barcode (its Monte Carlo p-value is ``(count + 1) / (niters + 1)``).
    """
    checkpoints, column = np.unique(totals, return_inverse=True)
    sim = NullSimulator(prop, alpha, checkpoints)
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


def data_loglik(
    x: sp.csr_matrix, rows: np.ndarray, prop: np.ndarray, alpha: float, chunk_nnz: int = 1 << 21
) -> np.ndarray:
    """Data-dependent part of the log-likelihood of each of ``rows``, from the non-zeros only.

    ``sum_g lgamma(alpha p_g + x_g) - lgamma(alpha p_g) - lgamma(x_g + 1)`` over
    the genes with ``x_g > 0`` (``x_g log p_g - lgamma(x_g + 1)`` for the
    multinomial), as DropletUtils' ``.compute_multinom_prob_data``. Rows are
    processed in chunks of about ``chunk_nnz`` non-zeros to bound memory.

    Returns
    -------
    One log-likelihood per row of ``rows``.
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
