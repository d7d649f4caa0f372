import time

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from milkcells import composition_model, lactation
from milkcells.composition_model import _permutations, williams_fit


def _fe_data(seed=0, donors=6, times=4, phi=0.02):
    rng = np.random.default_rng(seed)
    blocks = np.repeat(np.arange(donors), times)
    x = np.tile(np.log2([5, 14, 60, 180][:times]), donors)
    n = rng.integers(200, 1500, len(x)).astype(float)
    eta = -2.5 + rng.normal(0, 1, donors)[blocks] + 0.4 * x
    p = 1 / (1 + np.exp(-eta))
    a = p * (1 / phi - 1)
    y = rng.binomial(n.astype(int), rng.beta(a, (1 / phi - 1) - a)).astype(float)
    return y, n, x, blocks


def test_fit_matches_statsmodels_glm():
    y, n, x, blocks = _fe_data()
    nb = blocks.max() + 1
    beta, info, mu, phi, w = williams_fit(y, n, blocks, nb, x=x)
    X = np.column_stack([x, np.eye(nb)[blocks]])
    ref = sm.GLM(y / n, X, family=sm.families.Binomial(), var_weights=n * w).fit(scale=1.0)
    assert beta == pytest.approx(ref.params[0], abs=1e-7)
    assert 1 / np.sqrt(info) == pytest.approx(ref.bse[0], rel=1e-6)
    assert np.allclose(mu, ref.mu, atol=1e-9)
    # Williams: with the fitted phi the Pearson statistic equals the residual degrees of freedom
    x2 = np.sum(w * (y - n * mu) ** 2 / (n * mu * (1 - mu)))
    assert phi > 0 and x2 == pytest.approx(len(y) - nb - 1, rel=1e-5)


def test_dispersion_is_recovered_roughly():
    phis = [
        williams_fit(
            *_fe_data(seed=s, donors=20, phi=0.05)[:2],
            _fe_data(seed=s, donors=20)[3],
            20,
            x=_fe_data(seed=s, donors=20)[2],
        )[3]
        for s in range(10)
    ]
    assert 0.02 < np.median(phis) < 0.08


def test_permutations_stay_within_donors():
    blocks = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 1])
    perms = _permutations(blocks, 999, np.random.default_rng(0))  # 2! 4! 5! = 5760 > 999: at random
    assert perms.shape == (1000, 11) and (perms[0] == np.arange(11)).all()
    assert (blocks[perms] == blocks).all()
    assert all(sorted(p) == list(range(11)) for p in perms)
    assert len({tuple(p) for p in perms}) > 900
    small = _permutations(np.array([0, 0, 1, 1, 2, 2]), 999, np.random.default_rng(0))
    assert len(small) == 8 and len({tuple(p) for p in small}) == 8  # all of them, once each


def test_bh_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.01, 0.04, np.nan, 0.03, 0.5])
    q = composition_model.bh_qvalues(p)
    assert np.isnan(q[2])
    assert np.allclose(q[[0, 1, 3, 4]], multipletests(p[[0, 1, 3, 4]], method="fdr_bh")[1])


def test_fit_share_trend_reports_why_not():
    donor = ["A", "A", "B", "B"]
    r = composition_model.fit_share_trend([0, 0, 0, 0], [100] * 4, [1, 2, 1, 2], donor)
    assert np.isnan(r["pvalue"]) and "fewer than two donors" in r["note"]
    r = composition_model.fit_share_trend([1, 2, 1, 3], [100] * 4, [1, 2, 1, 2], donor)
    assert "fewer than 10 cells" in r["note"]
    r = composition_model.fit_share_trend([0, 40, 0, 30], [100] * 4, [1, 2, 1, 2], donor, min_cells=1)
    assert "not estimable" in r["note"]  # separation (absent early, present late) or no df left
    with pytest.raises(ValueError, match="time_scale"):
        composition_model.time_covariate([1, 2], time_scale="weeks")
    assert composition_model.time_covariate([0, 1, 8])[2] == 3.0


def test_pool_units_sums_replicates():
    counts = pd.DataFrame({"a": [1, 2, 3]}, index=["s1_r1", "s1_r2", "s2"])
    pooled, units = composition_model.pool_units(
        counts, pd.Series({"s1_r1": "D", "s1_r2": "D", "s2": "D"}), pd.Series({"s1_r1": 5, "s1_r2": 5, "s2": 40})
    )
    assert list(pooled["a"]) == [3, 3] and list(units["n_samples"]) == [2, 1]
    assert units.loc[0, "samples"] == "s1_r1,s1_r2"


def test_simulate_cohort():
    c1, s1 = lactation.simulate_cohort(seed=3)
    c2, _ = lactation.simulate_cohort(seed=3)
    assert c1.equals(c2) and list(c1.columns[:2]) == ["LC2", "LC1"]
    assert (c1.sum(axis=1).between(200, 1500 * 2)).all() and s1["donor"].nunique() == 10
    assert s1.groupby(["donor", "days_postpartum"]).size().max() >= 2  # replicates exist
    assert s1["days_postpartum"].between(3, 330).all()


def test_false_positive_rate_over_100_simulated_cohorts():
    """Acceptance: strong donor effects, donors sampled on different schedules (some only late)."""
    start = time.perf_counter()
    per_seed, summary = lactation.simulation_error_rates(100, donor_sd=1.5)
    elapsed = time.perf_counter() - start
    s = summary.set_index("label")
    print(f"\n{elapsed:.1f} s\n{s.round(3).to_string()}")
    nulls = s[s["true_effect"] == 0]
    assert list(nulls.index) == ["T cell", "B cell", "neutrophil"]
    assert (nulls["not_estimable"] == 0).all()
    # a cell type without time effect is called changing (q < 0.05) in at most 5 % of cohorts
    assert (nulls["model_q"] <= 0.05).all()
    pooled = per_seed[per_seed["true_effect"] == 0]
    assert (pooled["qvalue"] < 0.05).mean() <= 0.05
    # the within-donor permutation test is exact (p < 0.05 in 5 % of 4,500 other null tests): 300 vary
    assert (pooled["pvalue"] < 0.05).mean() <= 0.07
    # naive Spearman, replicates and repeated samples as independent, calls more false changes
    assert (pooled["spearman_p"] < 0.05).mean() > 1.5 * (pooled["pvalue"] < 0.05).mean()
    # and the known effects are found, with unbiased estimates
    assert s.loc["LC1", "model_q"] >= 0.95 and s.loc["macrophage", "model_q"] >= 0.8
    assert s.loc["LC1", "mean_estimate"] == pytest.approx(0.5, abs=0.05)
    assert s.loc["macrophage", "mean_estimate"] == pytest.approx(-0.3, abs=0.05)
    assert elapsed < 60
