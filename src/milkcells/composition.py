"""Composition per sample, and how it changes over lactation.

:func:`composition_table` counts compartments and cell types per sample;
:func:`composition_over_time` fits the donor-aware model of
:mod:`milkcells.composition_model` to every share (replicates pooled, donor
fixed effects, overdispersion, within-donor permutation tests, q-values) with
the papers' naive Spearman beside it; :func:`composition_by_stage` gives the
shares per lactation stage (:mod:`milkcells.lactation`, which also simulates
a cohort with known effects: :func:`milkcells.lactation.simulate_cohort`).
"""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd

from ._utils import InputError
from .composition_model import time_effects
from .lactation import STAGE_SHARE_COLUMNS, stage_shares
from .samplesheet import DAYS_PER_UNIT

__all__ = [
    "composition_table",
    "parse_days_postpartum",
    "shares_from_counts",
    "time_correlations",
    "composition_over_time",
    "composition_by_stage",
    "author_label_map",
]

_UNASSIGNED = "unassigned"
_SAMPLE_FIELDS = ("donor", "batch", "sample_type", "days_postpartum")


def composition_table(adata: ad.AnnData, *, groupby: str = "sample") -> pd.DataFrame:
    """Counts and fractions of every compartment and cell type per sample.

    Returns
    -------
    A long table, one row per sample and label: ``sample``, the sample fields
    (``donor``, ``batch``, ``sample_type``, ``days_postpartum`` where present),
    ``level`` (``compartment`` or ``cell_type``), ``compartment``, ``label``,
    ``n_cells``, ``fraction`` (of the sample's cells) and
    ``fraction_of_compartment`` (cell types only). Every label appears for
    every sample, with zero counts where absent.
    """
    for col in (groupby, "compartment", "cell_type"):
        if col not in adata.obs:
            raise ValueError(f"composition needs obs[{col!r}]")
    obs = adata.obs
    fields = [f for f in _SAMPLE_FIELDS if f in obs]
    meta = obs.groupby(groupby, observed=True)[fields].first() if fields else None
    totals = obs[groupby].astype(str).value_counts()
    rows = []
    comp_counts = pd.crosstab(obs[groupby].astype(str), obs["compartment"].astype(str))
    for s in comp_counts.index:
        for c in comp_counts.columns:
            n = int(comp_counts.loc[s, c])
            rows.append(
                {
                    groupby: s,
                    "level": "compartment",
                    "compartment": c,
                    "label": c,
                    "n_cells": n,
                    "fraction": n / totals[s],
                    "fraction_of_compartment": np.nan,
                }
            )
    pairs = obs[["compartment", "cell_type"]].astype(str).drop_duplicates()
    ct_counts = obs.groupby(
        [obs[groupby].astype(str), obs["compartment"].astype(str), obs["cell_type"].astype(str)]
    ).size()
    for s in comp_counts.index:
        for _, (c, t) in pairs.iterrows():
            n = int(ct_counts.get((s, c, t), 0))
            nc = int(comp_counts.loc[s, c])
            rows.append(
                {
                    groupby: s,
                    "level": "cell_type",
                    "compartment": c,
                    "label": t,
                    "n_cells": n,
                    "fraction": n / totals[s],
                    "fraction_of_compartment": n / nc if nc else np.nan,
                }
            )
    df = pd.DataFrame(rows)
    if meta is not None:
        df = df.merge(meta.reset_index().astype({groupby: str}), on=groupby, how="left")
        df = df[[groupby, *fields, "level", "compartment", "label", "n_cells", "fraction", "fraction_of_compartment"]]
    return df.sort_values([groupby, "level", "compartment", "label"]).reset_index(drop=True)


_TIME = re.compile(r"(?:^|_)(\d+(?:\.\d+)?)(dpp|d|wkpp|wk|w|mopp|mo|m)(?=_|$)", re.IGNORECASE)
_UNIT_DAYS = {unit[0]: DAYS_PER_UNIT[unit] for unit in ("day", "week", "month")}  # d, w, m


def parse_days_postpartum(name: str) -> float:
    """Days postpartum encoded in a sample name, NaN when there is none.

    Understands the Nyquist et al. 2022 convention: ``BM01_5dpp_r1`` (5 days),
    ``BM01_7wkpp_r1`` and ``BM01_23wk_r1`` (weeks), ``..._3mo_...`` (months of
    30.44 days). Names such as ``BM04_t1_r2`` carry no time.
    """
    m = _TIME.search(str(name))
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNIT_DAYS[m.group(2)[0].lower()]


def shares_from_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """Per-sample shares from a samples x labels table of cell counts (missing = 0)."""
    counts = counts.fillna(0).astype(float)
    totals = counts.sum(axis=1)
    if (totals <= 0).any():
        raise ValueError(f"samples without cells: {list(totals.index[totals <= 0])}")
    return counts.div(totals, axis=0)


def time_correlations(
    shares: pd.DataFrame, days: pd.Series, *, max_days: float = 400, min_samples: int = 5
) -> pd.DataFrame:
    """Spearman correlation of each label's per-sample share with days postpartum.

    As Nyquist et al. 2022 (Fig. 2B): samples with a known time under
    ``max_days`` days.

    Parameters
    ----------
    shares
        Samples x labels shares (:func:`shares_from_counts` or the pivoted composition table).
    days
        Days postpartum per sample (NaN when unknown).
    max_days
        Samples at or after this time are left out.
    min_samples
        Labels with fewer usable samples get NaN.

    Returns
    -------
    One row per label: ``label``, ``n_samples``, ``spearman_r``, ``pvalue``.
    """
    from scipy.stats import spearmanr

    days = days.reindex(shares.index).astype(float)
    keep = days.notna() & (days < max_days)
    rows = []
    for label in shares.columns:
        x, y = days[keep], shares.loc[keep, label]
        if keep.sum() < min_samples or y.nunique() < 2:
            r, p = np.nan, np.nan
        else:
            r, p = spearmanr(x, y)
        rows.append({"label": label, "n_samples": int(keep.sum()), "spearman_r": float(r), "pvalue": float(p)})
    return pd.DataFrame(rows)


def _long_to_wide(table: pd.DataFrame, level: str, groupby: str) -> pd.DataFrame:
    df = table[table["level"] == level]
    return df.pivot_table(index=groupby, columns="label", values="n_cells", aggfunc="sum", observed=True).fillna(0)


def _sample_meta(table: pd.DataFrame, groupby: str) -> tuple[pd.Series, pd.Series]:
    """Donor (the sample itself when unknown) and days postpartum per sample."""
    first = table.groupby(groupby, observed=True).first()
    if "days_postpartum" in first:
        days = pd.to_numeric(first["days_postpartum"], errors="coerce")
    else:
        days = pd.Series(np.nan, index=first.index)
    if "donor" in first:
        donor = first["donor"].astype(object)
        donor = donor.where(donor.notna() & (donor.astype(str) != ""), first.index.to_series())
    else:
        donor = first.index.to_series()
    return donor.astype(str), days.astype(float)


def composition_over_time(
    table: pd.DataFrame,
    *,
    time_scale: str = "log2",
    max_days: float = 400,
    groupby: str = "sample",
    n_perm: int = 9999,
    seed: int = 0,
) -> pd.DataFrame:
    """The donor-aware model of every share over days postpartum (see :mod:`milkcells.composition_model`).

    Three families of shares, each with its own Benjamini-Hochberg q-values:
    ``compartment`` (each compartment's share of all cells, except the
    epithelial one, which is the rest: the immune share is one test, not two),
    ``cell_type`` (each cell type's share of all cells) and
    ``within_compartment`` (each cell type's share of its compartment's cells,
    for example immune subtypes among immune cells; of a compartment with two
    types only the smaller, the other being the rest). ``unassigned`` labels
    stay in the denominators, untested.

    Parameters
    ----------
    table
        :func:`composition_table` output. Without ``donor`` each sample counts
        as its own donor; without ``days_postpartum`` nothing is estimable.
    time_scale
        ``log2`` (effect per doubling of days) or ``per30`` (per 30 days).
    max_days
        Samples at or after this time are left out.
    groupby
        The sample column.
    n_perm, seed
        Permutations of the within-donor test and their seed.

    Returns
    -------
    One row per ``level`` and ``label``, with ``denominator`` (``all cells`` or
    the compartment) and the columns of
    :func:`~milkcells.composition_model.time_effects`; rows that cannot be
    estimated carry NaN and the reason in ``note``.
    """
    for col in (groupby, "level", "label", "compartment", "n_cells"):
        if col not in table:
            raise InputError(
                "the composition table lacks this column", field=col, expected="a table from composition_table()"
            )
    donor, days = _sample_meta(table, groupby)
    comp = _long_to_wide(table, "compartment", groupby)
    types = _long_to_wide(table, "cell_type", groupby)
    totals = comp.sum(axis=1)
    parent = table[table["level"] == "cell_type"].groupby("label")["compartment"].first()
    keep_comp = [c for c in comp.columns if c not in ("epithelial", _UNASSIGNED)]
    keep_types = [t for t in types.columns if _UNASSIGNED not in t and parent.get(t) != _UNASSIGNED]
    sizes = types[keep_types].sum()
    within = []
    for c in dict.fromkeys(parent[keep_types]):
        members = [t for t in keep_types if parent[t] == c]
        # with two types, one is the rest of the other: test the smaller only
        within += members if len(members) > 2 else [sizes[members].idxmin()] if len(members) == 2 else []
    families = [
        ("compartment", comp[keep_comp], totals, dict.fromkeys(keep_comp, "all cells")),
        ("cell_type", types[keep_types], totals, dict.fromkeys(keep_types, "all cells")),
        (
            "within_compartment",
            types[within],
            pd.DataFrame({t: comp[parent[t]] for t in within}, index=types.index),
            parent[within].to_dict(),
        ),
    ]
    out = []
    for level, counts, denom, names in families:
        if counts.shape[1] == 0:
            continue
        res = time_effects(
            counts, denom, donor, days, time_scale=time_scale, max_days=max_days, n_perm=n_perm, seed=seed
        )
        res.insert(0, "level", level)
        res.insert(2, "denominator", res["label"].map(names))
        out.append(res)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["level", "label", "note"])


def composition_by_stage(table: pd.DataFrame, *, groupby: str = "sample", coarse: bool = False) -> pd.DataFrame:
    """Every compartment's and cell type's share per lactation stage, with intervals over donors.

    Parameters
    ----------
    table
        :func:`composition_table` output (needs ``days_postpartum``).
    groupby
        The sample column.
    coarse
        Merge the late stages into one ``late``.

    Returns
    -------
    One row per ``level`` (``compartment``, ``cell_type``), ``label`` and
    stage, with the columns of :func:`~milkcells.lactation.stage_shares`;
    empty when no sample has days postpartum.
    """
    donor, days = _sample_meta(table, groupby)
    comp = _long_to_wide(table, "compartment", groupby)
    totals = comp.sum(axis=1)
    out = []
    if days.notna().any():
        for level in ("compartment", "cell_type"):
            wide = comp if level == "compartment" else _long_to_wide(table, "cell_type", groupby)
            for label in wide.columns:
                res = stage_shares(wide[label], totals, donor, days, coarse=coarse)
                res.insert(0, "label", label)
                res.insert(0, "level", level)
                out.append(res)
    cols = ["level", "label", *STAGE_SHARE_COLUMNS]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


def author_label_map(study: str | None = None) -> pd.DataFrame:
    """The shipped table mapping the milk studies' author labels to milkcells labels."""
    from importlib.resources import files

    with (files("milkcells") / "data" / "author_labels.tsv").open() as fh:
        table = pd.read_csv(fh, sep="\t", comment="#", dtype=str, keep_default_na=False)
    return table if study is None else table[table["study"] == study].reset_index(drop=True)
