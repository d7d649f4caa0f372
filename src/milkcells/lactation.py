"""Lactation stages and a simulated cohort for the composition model.

:func:`lactation_stage` names the stages of Nyquist et al. 2022 (the Single
Cell Portal study SCP1671's ``milk_stage``); :func:`stage_shares` gives a
share per stage with an interval over donors; :func:`simulate_cohort` draws a
longitudinal cohort at the level of cell counts with known time effects and
strong donor effects, and :func:`simulation_error_rates` scores the
donor-aware model (:func:`milkcells.composition_model.time_effects`) and naive
Spearman on such cohorts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from .composition_model import bh_qvalues, time_effects, williams_fit

__all__ = [
    "STAGES",
    "STAGE_SHARE_COLUMNS",
    "lactation_stage",
    "stage_shares",
    "simulate_cohort",
    "simulation_error_rates",
]

# Stages as in the Single Cell Portal study SCP1671 (milk_stage): upper bounds in days.
# The bounds reproduce the portal's milk_stage of all 50 dated SCP1671 samples; the end of
# 'mature' (30 d) is not pinned by those data (no sample between 18 and 40 days).
STAGES = (
    ("early", 6),
    ("transitional", 14),
    ("mature", 30),
    ("late_1", 95),
    ("late_2", 180),
    ("late_3", 250),
    ("late_4", np.inf),
)

_DEFAULT_SHARES = {"LC2": 0.80, "LC1": 0.05, "macrophage": 0.08, "T cell": 0.02, "B cell": 0.005, "neutrophil": 0.02}
_DEFAULT_EFFECTS = {"LC1": 0.5, "macrophage": -0.3}

#: Columns of :func:`stage_shares`' table, one row per stage.
STAGE_SHARE_COLUMNS = (
    "stage",
    "days_min",
    "days_max",
    "n_samples",
    "n_donors",
    "n_cells",
    "pooled_share",
    "share",
    "ci_low",
    "ci_high",
)


def lactation_stage(days, *, coarse: bool = False):
    """Lactation stage of each time (see :data:`STAGES`); NaN days give NaN.

    ``coarse=True`` merges ``late_1`` .. ``late_4`` into ``late``.
    """
    d = pd.Series(np.asarray(days, dtype=float))
    names = [s for s, _ in STAGES]
    bins = [-np.inf, *[b for _, b in STAGES]]
    stage = pd.cut(d, bins=bins, labels=names, right=True).astype(object)
    stage[d.isna()] = np.nan
    if coarse:
        stage = stage.map(lambda s: "late" if isinstance(s, str) and s.startswith("late") else s)
    return stage.to_numpy()


def stage_shares(
    counts: pd.Series, totals: pd.Series, donor: pd.Series, days: pd.Series, *, coarse: bool = False
) -> pd.DataFrame:
    """A share per lactation stage with a 95 % interval over donors.

    The cells of each donor within a stage are pooled into one unit; the
    stage's share is the quasi-binomial (Williams) estimate over those units,
    with the dispersion shared across stages and a Wald t-interval on the
    residual degrees of freedom (units - stages). It estimates the share of a typical donor in that
    stage; intervals need two donors in the stage (else NaN).

    Parameters
    ----------
    counts, totals
        Per sample: cells of the label and of the denominator.
    donor, days
        Per sample; samples without either are left out.
    coarse
        Merge the late stages (see :func:`lactation_stage`).

    Returns
    -------
    One row per stage present, in stage order: ``stage``, ``days_min``,
    ``days_max``, ``n_samples``, ``n_donors``, ``n_cells``, ``pooled_share``
    (all cells together), ``share``, ``ci_low``, ``ci_high``.
    """
    from scipy import stats

    days = pd.to_numeric(days.reindex(counts.index), errors="coerce")
    df = pd.DataFrame(
        {
            "y": counts.astype(float),
            "n": totals.reindex(counts.index).astype(float),
            "donor": donor.reindex(counts.index),
            "days": days,
        }
    ).dropna()
    df = df[df["n"] > 0]
    df["stage"] = lactation_stage(df["days"], coarse=coarse)
    order = [s for s, _ in STAGES] if not coarse else ["early", "transitional", "mature", "late"]
    units = df.groupby(["stage", "donor"], observed=True).agg(y=("y", "sum"), n=("n", "sum")).reset_index()
    present = [s for s in order if s in set(units["stage"])]
    rows = []
    if not present:
        return pd.DataFrame(columns=list(STAGE_SHARE_COLUMNS))
    sums = units.groupby("stage")[["y", "n"]].sum()
    fitted = [s for s in present if 0 < sums.loc[s, "y"] < sums.loc[s, "n"]]
    params, bse = {}, {}
    fu = units[units["stage"].isin(fitted)]
    if fitted and len(fu) > len(fitted):
        blocks = pd.Categorical(fu["stage"], categories=fitted).codes.astype(int)
        yy, nn = fu["y"].to_numpy(), fu["n"].to_numpy()
        _, _, mu, _, w = williams_fit(yy, nn, blocks, len(fitted))
        a = np.log(mu / (1 - mu))
        info = np.bincount(blocks, w * nn * mu * (1 - mu), len(fitted))
        params = {s: float(a[blocks == k][0]) for k, s in enumerate(fitted)}
        bse = {s: float(1 / np.sqrt(info[k])) for k, s in enumerate(fitted)}
        tq = stats.t.ppf(0.975, len(fu) - len(fitted))
    for s in present:
        d, u = df[df["stage"] == s], units[units["stage"] == s]
        row = {
            "stage": s,
            "days_min": d["days"].min(),
            "days_max": d["days"].max(),
            "n_samples": len(d),
            "n_donors": int(u["donor"].nunique()),
            "n_cells": int(d["n"].sum()),
            "pooled_share": d["y"].sum() / d["n"].sum(),
            "share": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
        }
        if s in params:
            b, se = float(params[s]), float(bse[s])
            row["share"] = float(expit(b))
            if row["n_donors"] >= 2 and np.isfinite(se):
                row["ci_low"], row["ci_high"] = float(expit(b - tq * se)), float(expit(b + tq * se))
        else:
            row["share"] = row["pooled_share"]
        rows.append(row)
    return pd.DataFrame(rows)


def simulate_cohort(
    *,
    n_donors: int = 10,
    shares: dict | None = None,
    effects: dict | None = None,
    donor_sd: float = 1.5,
    concentration: float = 50.0,
    max_times: int = 6,
    replicate_rate: float = 0.2,
    cells: tuple[int, int] = (200, 1500),
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A simulated longitudinal milk cohort with known time effects, at the level of cell counts.

    Each donor is sampled at one to ``max_times`` consecutive visits of the
    schedule 3-6, 10-14, 15-18, 40-50, 84-98, 155-185, 220-330 days, starting
    at a random visit (so some donors are seen only late, as in Nyquist et al.
    2022). Every non-reference label has a donor effect ``N(0, donor_sd)`` on
    the logit scale and a share ``expit(logit(base) + donor + effect * log2(days / 14))``;
    the first label of ``shares`` (the reference, the lactocytes) takes the
    rest, kept at 2 % or more by scaling down the labels with an effect (those
    without stay exactly constant over time). Cells are drawn
    Dirichlet-multinomially (``concentration``: smaller is more overdispersed;
    rare types are then absent from most samples and abundant in a few); a
    visit is sequenced twice with probability ``replicate_rate``.

    Parameters
    ----------
    n_donors
        Donors.
    shares
        Label -> baseline share at 14 days; the first label is the reference.
    effects
        Label -> true log odds ratio per doubling of days (0 or absent: none).
    donor_sd, concentration, max_times, replicate_rate, cells, seed
        See above; ``cells`` bounds the cells per sample (uniform).

    Returns
    -------
    ``(counts, samples)``: samples x labels cell counts, and ``donor`` and
    ``days_postpartum`` per sample.
    """
    rng = np.random.default_rng(seed)
    shares = shares or _DEFAULT_SHARES
    effects = _DEFAULT_EFFECTS if effects is None else effects
    labels = list(shares)
    ref, others = labels[0], labels[1:]
    base = np.log(np.array([shares[k] for k in others]) / (1 - np.array([shares[k] for k in others])))
    beta = np.array([effects.get(k, 0.0) for k in others])
    moving = beta != 0
    visits = [(3, 6), (10, 14), (15, 18), (40, 50), (84, 98), (155, 185), (220, 330)]
    rows, meta = [], []
    for d in range(n_donors):
        donor = f"D{d + 1:02d}"
        u = rng.normal(0.0, donor_sd, len(others))
        k = int(rng.integers(1, max_times + 1))
        start = int(rng.integers(0, len(visits) - k + 1))
        for lo, hi in visits[start : start + k]:
            day = float(rng.integers(lo, hi + 1))
            p = expit(base + u + beta * np.log2(day / 14.0))
            # keep the reference >= 2 %: without touching the types without effect over time
            # (their cap depends on the donor only), so that they stay exactly constant
            if p[~moving].sum() > 0.9:
                p[~moving] *= 0.9 / p[~moving].sum()
            room = 0.98 - p[~moving].sum()
            if p[moving].sum() > room:
                p[moving] *= room / p[moving].sum()
            mean = np.concatenate([[1.0 - p.sum()], p])
            for r in range(1 + int(rng.random() < replicate_rate)):
                n = int(rng.integers(cells[0], cells[1] + 1))
                counts = rng.multinomial(n, rng.dirichlet(concentration * mean))
                name = f"{donor}_{int(day)}d_r{r + 1}"
                rows.append(pd.Series(counts, index=[ref, *others], name=name))
                meta.append({"sample": name, "donor": donor, "days_postpartum": day})
    return pd.DataFrame(rows), pd.DataFrame(meta).set_index("sample")


def simulation_error_rates(
    n_seeds: int = 100, *, alpha: float = 0.05, n_perm: int = 999, ci: bool = False, **simulate
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the donor-aware model and naive Spearman on ``n_seeds`` simulated cohorts.

    Parameters
    ----------
    n_seeds
        Cohorts, seeds ``0 .. n_seeds - 1``.
    alpha
        Significance level (for p- and q-values alike).
    n_perm
        Permutations per test.
    ci
        Also compute the intervals (slower) and their coverage of the truth.
    **simulate
        Passed to :func:`simulate_cohort`.

    Returns
    -------
    ``(per_seed, summary)``: the :func:`~milkcells.composition_model.time_effects`
    rows of every cohort with ``seed``, ``true_effect`` and ``spearman_q``;
    and per label the true effect and the share of cohorts in which the model
    (``model_p``, ``model_q``) and Spearman (``spearman_p``, ``spearman_q``)
    called a change, the mean estimate and, with ``ci``, the coverage. For a
    label without effect these shares are false-positive rates; for the others,
    power. The reference label (its share is the rest) is left out.
    """
    rows = []
    for seed in range(n_seeds):
        counts, samples = simulate_cohort(seed=seed, **simulate)
        res = time_effects(
            counts, counts.sum(axis=1), samples["donor"], samples["days_postpartum"], n_perm=n_perm, seed=seed, ci=ci
        )
        res["spearman_q"] = bh_qvalues(res["spearman_p"])
        res["seed"] = seed
        rows.append(res.iloc[1:])
    per_seed = pd.concat(rows, ignore_index=True)
    effects = simulate.get("effects")
    effects = _DEFAULT_EFFECTS if effects is None else effects
    per_seed["true_effect"] = per_seed["label"].map(lambda k: float(effects.get(k, 0.0)))
    g = per_seed.groupby("label", sort=False)
    summary = pd.DataFrame(
        {
            "true_effect": g["true_effect"].first(),
            "n_cohorts": g.size(),
            "model_p": g["pvalue"].apply(lambda p: float((p < alpha).mean())),
            "model_q": g["qvalue"].apply(lambda p: float((p < alpha).mean())),
            "spearman_p": g["spearman_p"].apply(lambda p: float((p < alpha).mean())),
            "spearman_q": g["spearman_q"].apply(lambda p: float((p < alpha).mean())),
            "mean_estimate": g["estimate"].mean(),
            "not_estimable": g["pvalue"].apply(lambda p: float(p.isna().mean())),
        }
    )
    if ci:
        per_seed["covered"] = (per_seed["ci_low"] <= per_seed["true_effect"]) & (
            per_seed["true_effect"] <= per_seed["ci_high"]
        )
        summary["coverage"] = per_seed.groupby("label", sort=False)["covered"].mean()
    return per_seed, summary.reset_index()
