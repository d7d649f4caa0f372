import numpy as np
import pandas as pd
import pytest

from milkcells import composition

from .conftest import SHARED, needs_shared

NYQUIST = SHARED / "nyquist2022" / "nyquist2022_sample_celltype_counts.csv"


@pytest.mark.parametrize(
    ("name", "days"),
    [("BM01_5dpp_r1", 5), ("BM01_7wkpp_r1", 49), ("BM01_23wk_r1", 161), ("X_3mo_r2", 3 * 30.4375),
     ("BM05_26wk_r1_", 182), ("BM04_t1_r2", np.nan), ("B2_", np.nan), ("SIM1_d004", np.nan)],
)
def test_parse_days(name, days):
    got = composition.parse_days_postpartum(name)
    assert (np.isnan(got) and np.isnan(days)) or got == pytest.approx(days)


def test_time_correlations_recover_a_trend(rng):
    days = pd.Series(np.linspace(3, 300, 40), index=[f"s{i}" for i in range(40)])
    up = 0.1 + days / 600 + rng.normal(0, 0.02, 40)
    shares = pd.DataFrame({"up": up, "down": 1 - up})
    res = composition.time_correlations(shares, days).set_index("label")
    assert res.loc["up", "spearman_r"] > 0.9 and res.loc["down", "spearman_r"] < -0.9
    assert res.loc["up", "pvalue"] < 1e-6


def test_shares_from_counts():
    s = composition.shares_from_counts(pd.DataFrame({"a": [1, np.nan], "b": [3, 2]}, index=["x", "y"]))
    assert s.loc["x", "a"] == 0.25 and s.loc["y", "a"] == 0.0
    with pytest.raises(ValueError, match="without cells"):
        composition.shares_from_counts(pd.DataFrame({"a": [1, 0], "b": [3, 0]}, index=["x", "y"]))


def test_author_label_map_covers_nyquist_columns():
    m = composition.author_label_map("nyquist2022")
    assert m.set_index("author_label").loc["luminal 2", "cell_type"] == "LC1"
    assert m.set_index("author_label").loc["luminal/lactocyte", "cell_type"] == "LC2"


@needs_shared(NYQUIST)
def test_nyquist2022_published_trends():
    res = composition.nyquist2022_analysis(NYQUIST)
    cor = res["correlations"].set_index("label")
    print(cor.round(4).to_string())
    print(res["immune_periods"])
    assert res["n_samples"] == 59
    # LC1 rises over lactation (published R = +0.583, p = 2.4e-6)
    assert cor.loc["LC1", "spearman_r"] > 0.5 and cor.loc["LC1", "pvalue"] < 1e-3
    # LC2 falls (published R = -0.272): same direction
    assert cor.loc["LC2", "spearman_r"] < 0
    # dendritic and B cells rise (published +0.331 and +0.282, p < 0.05)
    assert cor.loc["dendritic cell", "spearman_r"] > 0.2 and cor.loc["dendritic cell", "pvalue"] < 0.05
    assert cor.loc["B cell", "spearman_r"] > 0.2 and cor.loc["B cell", "pvalue"] < 0.05
    # the immune share is lower after 20 weeks than in the first 3 weeks
    per = res["immune_periods"]
    assert per["mean_late"] < per["mean_early"] and per["pooled_late"] < per["pooled_early"]
    # overall shares as published: epithelial 82.2 %, immune 17.6 %
    counts = pd.read_csv(NYQUIST, index_col=0).fillna(0)
    assert counts[["luminal 2", "luminal/lactocyte"]].to_numpy().sum() / counts.to_numpy().sum() == pytest.approx(0.822, abs=0.001)
