"""EmptyDrops' null model: the ambient profile, its concentration, the simulated null paths."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.special import gammaln
from scipy.stats import ks_2samp

from milkcells.nullmodel import NullSimulator, ambient_proportions, estimate_alpha


@pytest.mark.parametrize("alpha", [np.inf, 30.0, 3000.0])
def test_null_paths_match_direct_sampling(alpha):
    # one simulated path read at several totals == independent DM draws at each total
    rng = np.random.default_rng(0)
    p = rng.gamma(0.4, 1.0, 200)
    p /= p.sum()
    checkpoints = np.array([3, 40, 250])
    sims = NullSimulator(p, alpha, checkpoints).simulate(np.random.default_rng(1), 2000)
    for k, total in enumerate(checkpoints):
        direct = np.empty(2000)
        for i in range(direct.size):
            q = p if np.isinf(alpha) else rng.dirichlet(alpha * p)
            c = rng.multinomial(total, q)
            nz = c > 0
            if np.isinf(alpha):
                direct[i] = np.sum(c[nz] * np.log(p[nz]) - gammaln(c[nz] + 1))
            else:
                ap = alpha * p[nz]
                direct[i] = np.sum(gammaln(ap + c[nz]) - gammaln(ap) - gammaln(c[nz] + 1))
        assert ks_2samp(sims[:, k], direct).pvalue > 0.001, (alpha, total)


def test_ambient_proportions_good_turing():
    rng = np.random.default_rng(3)
    counts = rng.negative_binomial(0.3, 0.05, size=2000)
    counts[:50] = 0
    prop = ambient_proportions(counts)
    assert prop.sum() == pytest.approx(1.0) and (prop > 0).all()
    n1 = np.sum(counts == 1)
    # Good-Turing: the unseen genes share N1 / N, equally
    assert prop[counts == 0].sum() == pytest.approx(n1 / counts.sum())
    assert np.ptp(prop[counts == 0]) == 0
    # same count, same proportion; smoothed ones near the maximum-likelihood ones for big counts
    per_count = pd.Series(prop).groupby(counts)
    assert (per_count.max() == per_count.min()).all()
    assert np.argmax(prop) == np.argmax(counts)
    big = counts > 200
    np.testing.assert_allclose(prop[big], counts[big] / counts.sum(), rtol=0.05)


def test_ambient_proportions_without_singletons():
    # no gene seen once: Good-Turing leaves the unseen at zero; a pseudo-count fills in
    counts = np.array([0, 0, 2, 3, 5, 8, 13, 2, 3, 40])
    prop = ambient_proportions(counts)
    assert prop.sum() == pytest.approx(1.0)
    assert prop[:2] == pytest.approx([0.5 / counts.sum()] * 2)
    assert (prop > 0).all()


def test_ambient_proportions_bad_input():
    with pytest.raises(ValueError, match="counts_sum"):
        ambient_proportions(np.array([1.0, -2.0, 3.0]))
    with pytest.raises(ValueError, match="counts_sum"):
        ambient_proportions(np.zeros(5))
    with pytest.raises(ValueError, match="counts_sum"):
        ambient_proportions(np.ones((2, 2)))


def test_estimate_alpha_recovers_concentration():
    rng = np.random.default_rng(4)
    p = rng.gamma(1.0, 1.0, 400)
    p /= p.sum()
    totals = rng.integers(30, 100, 3000)
    dm = np.vstack([rng.multinomial(t, rng.dirichlet(50.0 * p)) for t in totals])
    assert estimate_alpha(sp.csr_matrix(dm), p) == pytest.approx(50.0, rel=0.2)
    multi = rng.multinomial(totals, p)
    assert estimate_alpha(multi, p) > 5000  # multinomial: towards the upper bound
    with pytest.raises(ValueError, match="proportions"):
        estimate_alpha(dm, p[:-1])
    with pytest.raises(ValueError, match="bounds"):
        estimate_alpha(dm, p, bounds=(10, 1))
