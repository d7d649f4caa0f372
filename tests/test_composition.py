import anndata as ad
import numpy as np
import pandas as pd
import pytest

from milkcells import InputError, composition, lactation, nyquist2022, plots

from .conftest import SHARED, needs_shared

SCP = SHARED / "nyquist2022" / "scp1671_per_sample.tsv"
NYQUIST = SHARED / "nyquist2022" / "nyquist2022_sample_celltype_counts.csv"


@pytest.mark.parametrize(
    ("name", "days"),
    [
        ("BM01_5dpp_r1", 5),
        ("BM01_7wkpp_r1", 49),
        ("BM01_23wk_r1", 161),
        ("X_3mo_r2", 3 * 30.4375),
        ("BM05_26wk_r1_", 182),
        ("BM04_t1_r2", np.nan),
        ("B2_", np.nan),
        ("SIM1_d004", np.nan),
    ],
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


# ---- the model on workflow-shaped tables (no ../shared needed) ----


def _cohort_adata(design, seed=0, n=300):
    """Cells of samples (sample, donor, days): epithelial LC1/LC2 and immune macrophage/T cell."""
    rng = np.random.default_rng(seed)
    obs = []
    for sample, donor, days in design:
        lc1 = 0.05 + (0.0 if days is None or np.isnan(days) else 0.001 * days)
        p = np.array([lc1, 0.8 - lc1, 0.1, 0.1])
        for t, c in zip(rng.choice(4, size=n, p=p), rng.random(n), strict=True):
            ct = ["LC1", "LC2", "macrophage", "T cell"][t]
            obs.append(
                {
                    "sample": sample,
                    "donor": donor,
                    "days_postpartum": days,
                    "compartment": "epithelial" if t < 2 else "immune",
                    "cell_type": ct,
                    "_": c,
                }
            )
    obs = pd.DataFrame(obs)
    obs.index = obs.index.astype(str)
    return ad.AnnData(obs=obs.drop(columns="_"))


DEMO = [("SIM1_d004", "SIM1", 4.0), ("SIM1_d120", "SIM1", 120.0), ("SIM2_d010", "SIM2", 10.0)]


def _notes(res):
    return set(res["note"].astype(str))


def test_demo_shaped_cohort_is_not_estimable_but_runs():
    table = composition.composition_table(_cohort_adata(DEMO))
    res = composition.composition_over_time(table, n_perm=99)
    assert {"level", "label", "spearman_r", "pvalue", "qvalue", "odds_ratio", "ci_low", "ci_high"} <= set(res)
    assert res["pvalue"].isna().all()
    assert all(n.startswith("not estimable: fewer than two donors") for n in res["note"])
    # the epithelial share is the rest of the others: the compartment level tests the immune share only
    assert list(res.loc[res["level"] == "compartment", "label"]) == ["immune"]
    # within a compartment of two types only the smaller is tested (the other is its rest)
    within = res.loc[res["level"] == "within_compartment", ["label", "denominator"]]
    assert set(within["denominator"]) == {"epithelial", "immune"} and len(within) == 2
    stages = composition.composition_by_stage(table)
    assert set(stages["stage"]) == {"early", "transitional", "late_2"}
    fig = plots.composition_over_days(table, res)
    assert fig.axes


@pytest.mark.parametrize(
    ("design", "note"),
    [
        ([("A_1", "A", np.nan), ("A_2", "A", np.nan), ("B_1", "B", np.nan)], "no sample with a donor and days"),
        ([(f"A_{d}", "A", float(d)) for d in (3, 10, 40, 90, 200)], "fewer than two donors"),
    ],
    ids=["no_days", "single_donor"],
)
def test_cohorts_without_an_estimable_effect(design, note):
    table = composition.composition_table(_cohort_adata(design))
    res = composition.composition_over_time(table, n_perm=99)
    assert res["pvalue"].isna().all() and all(note in n for n in res["note"])
    composition.composition_by_stage(table)
    plots.composition_over_days(table, res)


def test_three_donors_two_times_is_estimable_with_an_honest_p():
    design = [(f"{d}_{t}", d, float(t)) for d in ("A", "B", "C") for t in (5, 150)]
    table = composition.composition_table(_cohort_adata(design))
    res = composition.composition_over_time(table, n_perm=999).set_index(["level", "label"])
    lc1 = res.loc[("cell_type", "LC1")]
    assert lc1["design"] == "within-donor" and lc1["n_perm"] == 8  # all 2^3 within-donor permutations
    assert lc1["estimate"] > 0 and lc1["pvalue"] >= 0.25  # 8 permutations cannot give less
    assert lc1["ci_low"] <= lc1["estimate"] <= lc1["ci_high"]


def test_cross_sectional_cohort_is_analysed_between_donors():
    design = [(f"D{k}", f"D{k}", float(d)) for k, d in enumerate((3, 5, 8, 12, 20, 40, 60, 90, 150, 250))]
    table = composition.composition_table(_cohort_adata(design, n=600))
    res = composition.composition_over_time(table, n_perm=999).set_index(["level", "label"])
    lc1 = res.loc[("cell_type", "LC1")]
    assert lc1["design"] == "between-donor" and lc1["n_donors_informative"] == 10
    assert lc1["estimate"] > 0 and lc1["qvalue"] < 0.05


def test_composition_over_time_names_a_missing_column():
    with pytest.raises(InputError, match="n_cells"):
        composition.composition_over_time(pd.DataFrame({"sample": [], "level": [], "label": [], "compartment": []}))


# ---- SCP1671 reader ----


def _scp_file(tmp_path, **change):
    df = pd.DataFrame(
        {
            "biosample_id": ["S1", "S2"],
            "donor_id": ["D1", "D1"],
            "time_post_partum_days_inferred": [5, 50],
            "milk_stage_inferred": ["early", "late_1"],
            "n_cells": [30, 40],
            "LC1": [10, 20],
            "LC2": [15, 15],
            "T cells": [5, 5],
            "frac_immune": [0.17, 0.125],
        }
    )
    for k, v in change.items():
        df[k] = v
    path = tmp_path / "scp.tsv"
    df.to_csv(path, sep="\t", index=False)
    return path


def test_read_scp1671(tmp_path):
    t = nyquist2022.read_scp1671(_scp_file(tmp_path))
    imm = t[(t["level"] == "compartment") & (t["label"] == "immune")].set_index("sample")
    assert imm.loc["S1", "n_cells"] == 5 and imm.loc["S2", "fraction"] == pytest.approx(5 / 40)
    tc = t[t["label"] == "T cell"].set_index("sample")
    assert tc.loc["S1", "fraction_of_compartment"] == 1.0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"n_cells": [30, 41]}, "sample 'S2'.*field 'n_cells'"),
        ({"mystery cells": [1, 1]}, "field 'mystery cells'"),
        ({"LC1": [10, -1], "n_cells": [30, 19]}, "sample 'S2'"),
    ],
    ids=["n_cells", "unknown_label", "negative"],
)
def test_read_scp1671_names_the_problem(tmp_path, change, match):
    with pytest.raises(InputError, match=match) as err:
        nyquist2022.read_scp1671(_scp_file(tmp_path, **change))
    assert "scp.tsv" in str(err.value)


# ---- the reproduction on the real SCP1671 counts ----


@pytest.fixture(scope="module")
def scp():
    return nyquist2022.reproduce(SCP)


@needs_shared(SCP)
def test_stages_are_the_portals():
    raw = pd.read_csv(SCP, sep="\t").dropna(subset=["milk_stage_inferred"])
    assert len(raw) == 50
    got = lactation.lactation_stage(raw["time_post_partum_days_inferred"])
    assert list(got) == list(raw["milk_stage_inferred"])


@needs_shared(SCP)
def test_nyquist2022_reproduction(scp):
    assert (scp["n_samples"], scp["n_dated"], scp["n_donors"], scp["n_units"]) == (59, 50, 13, 44)
    res = scp["results"].set_index("claim")
    print(res.drop(columns="why").to_string())
    # exactly what reproduces under the donor-aware model, and nothing more
    assert res["verdict"].to_dict() == {
        "LC1 share rises with days postpartum": "reproduced",
        "LC2 share falls with days postpartum": "direction only",
        "dendritic-cell share rises": "direction only",
        "B-cell share rises": "direction only",
        "immune share falls after the first weeks": "direction only",
    }
    eff = scp["effects"].set_index(["level", "label"])
    lc1 = eff.loc[("cell_type", "LC1")]
    # acceptance: the LC1 rise, direction and q < 0.01 (odds ratio 1.75 per doubling of days)
    assert lc1["estimate"] > 0 and lc1["qvalue"] < 0.01 and lc1["or_ci_low"] > 1
    assert lc1["odds_ratio"] == pytest.approx(1.75, abs=0.01) and lc1["n_donors_informative"] == 10
    # the published trends that do not reach q < 0.05 here
    for label in ("LC2", "dendritic cell", "B cell"):
        assert eff.loc[("cell_type", label), "qvalue"] >= 0.05
    assert scp["immune_contrast"]["pvalue"] >= 0.05 and scp["immune_contrast"]["estimate"] < 0
    # the immune share is ONE test at the compartment level; the epithelial share is not tested
    assert ("compartment", "epithelial") not in eff.index
    assert eff.loc[("compartment", "immune"), "qvalue"] >= 0.05
    # replicates are pooled: 50 samples, 44 units; naive Spearman is on the 50 samples
    assert lc1["n_units"] == 44 and lc1["n_samples"] == 50
    assert lc1["spearman_r"] == pytest.approx(0.784, abs=0.001)


@needs_shared(SCP)
def test_immune_share_per_stage(scp):
    st = scp["stages"].set_index("stage")
    assert list(st.index) == ["early", "transitional", "mature", "late_1", "late_2", "late_3", "late_4"]
    assert st["n_samples"].sum() == 50
    assert ((st["ci_low"] <= st["share"]) & (st["share"] <= st["ci_high"])).all()
    # highest in the first days (colostrum); the mature-milk interval overlaps it: no claim beyond that
    assert st["share"].idxmax() == "early" and st.loc["early", "share"] == pytest.approx(0.307, abs=0.005)
    assert st.loc["mature", "ci_high"] > st.loc["early", "ci_low"]
    coarse = scp["stages_coarse"].set_index("stage")
    assert list(coarse.index) == ["early", "transitional", "mature", "late"]


@needs_shared(SCP)
def test_immune_subtypes_per_donor(scp):
    d = scp["immune_by_donor"]
    assert d[["donor", "days_postpartum"]].drop_duplicates().shape[0] == 44
    sums = d[d["n_immune"] > 0].groupby(["donor", "days_postpartum"])["share_of_immune"].sum()
    assert np.allclose(sums, 1.0)
    assert set(d["label"]) == {
        "GPNMB macrophage",
        "CSN1S1 macrophage",
        "neutrophil",
        "T cell",
        "B cell",
        "dendritic cell",
        "eosinophil",
    }


@needs_shared(NYQUIST)
def test_published_overall_shares():
    # overall shares as published: epithelial 82.2 %, immune 17.6 %
    counts = pd.read_csv(NYQUIST, index_col=0).fillna(0)
    total = counts.to_numpy().sum()
    assert counts[["luminal 2", "luminal/lactocyte"]].to_numpy().sum() / total == pytest.approx(0.822, abs=0.001)
