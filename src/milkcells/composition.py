"""Composition per sample: counts and shares of compartments and cell types."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd

__all__ = [
    "composition_table",
    "parse_days_postpartum",
    "shares_from_counts",
    "time_correlations",
    "compare_periods",
    "composition_over_time",
    "author_label_map",
    "nyquist2022_analysis",
]

_SAMPLE_FIELDS = ("donor", "batch", "source", "days_postpartum")


def composition_table(adata: ad.AnnData, *, groupby: str = "sample") -> pd.DataFrame:
    """Counts and fractions of every compartment and cell type per sample.

    Returns
    -------
    A long table, one row per sample and label: ``sample``, the sample fields
    (``donor``, ``batch``, ``source``, ``days_postpartum`` where present),
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
            rows.append({groupby: s, "level": "compartment", "compartment": c, "label": c,
                         "n_cells": n, "fraction": n / totals[s], "fraction_of_compartment": np.nan})
    pairs = obs[["compartment", "cell_type"]].astype(str).drop_duplicates()
    ct_counts = obs.groupby([obs[groupby].astype(str), obs["compartment"].astype(str),
                             obs["cell_type"].astype(str)]).size()
    for s in comp_counts.index:
        for _, (c, t) in pairs.iterrows():
            n = int(ct_counts.get((s, c, t), 0))
            nc = int(comp_counts.loc[s, c])
            rows.append({groupby: s, "level": "cell_type", "compartment": c, "label": t, "n_cells": n,
                         "fraction": n / totals[s], "fraction_of_compartment": n / nc if nc else np.nan})
    df = pd.DataFrame(rows)
    if meta is not None:
        df = df.merge(meta.reset_index().astype({groupby: str}), on=groupby, how="left")
        df = df[[groupby, *fields, "level", "compartment", "label", "n_cells", "fraction",
                 "fraction_of_compartment"]]
    return df.sort_values([groupby, "level", "compartment", "label"]).reset_index(drop=True)


_TIME = re.compile(r"(?:^|_)(\d+(?:\.\d+)?)(dpp|d|wkpp|wk|w|mopp|mo|m)(?=_|$)", re.IGNORECASE)
_UNIT_DAYS = {"d": 1.0, "w": 7.0, "m": 30.4375}


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


def compare_periods(
    shares: pd.Series,
    days: pd.Series,
    *,
    counts: pd.Series | None = None,
    early_max: float = 21,
    late_min: float = 140,
) -> dict[str, float]:
    """Compare a share between early (<= ``early_max`` days) and late (> ``late_min`` days) samples.

    Returns the number of samples, mean and median share of each period, the
    pooled share (all cells of the period together, when ``counts`` gives the
    cells per sample) and the one-sided Mann-Whitney p-value that the share is
    lower late than early.
    """
    from scipy.stats import mannwhitneyu

    days = days.reindex(shares.index).astype(float)
    early = shares[days <= early_max]
    late = shares[days > late_min]
    if len(early) < 2 or len(late) < 2:
        raise ValueError(f"need at least two samples per period, got {len(early)} early and {len(late)} late")
    out = {
        "n_early": int(len(early)),
        "n_late": int(len(late)),
        "mean_early": float(early.mean()),
        "mean_late": float(late.mean()),
        "median_early": float(early.median()),
        "median_late": float(late.median()),
        "pvalue_lower_late": float(mannwhitneyu(late, early, alternative="less").pvalue),
    }
    if counts is not None:
        c = counts.reindex(shares.index).astype(float)
        out["pooled_early"] = float((shares[early.index] * c[early.index]).sum() / c[early.index].sum())
        out["pooled_late"] = float((shares[late.index] * c[late.index]).sum() / c[late.index].sum())
    return out


def composition_over_time(table: pd.DataFrame, *, max_days: float = 400, groupby: str = "sample") -> pd.DataFrame:
    """Spearman correlation of each compartment's and cell type's share with days postpartum.

    Parameters
    ----------
    table
        :func:`composition_table` output (needs ``days_postpartum``).
    max_days
        Samples at or after this time are left out.
    groupby
        The sample column.

    Returns
    -------
    One row per ``level`` and ``label``: ``n_samples``, ``spearman_r``,
    ``pvalue`` (NaN with fewer than five timed samples).
    """
    if "days_postpartum" not in table:
        return pd.DataFrame(columns=["level", "label", "n_samples", "spearman_r", "pvalue"])
    out = []
    for level in ("compartment", "cell_type"):
        df = table[table["level"] == level]
        shares = df.pivot_table(index=groupby, columns="label", values="fraction", aggfunc="sum").fillna(0)
        days = df.groupby(groupby)["days_postpartum"].first().astype(float)
        res = time_correlations(shares, days, max_days=max_days)
        res.insert(0, "level", level)
        out.append(res)
    return pd.concat(out, ignore_index=True)


def author_label_map(study: str | None = None) -> pd.DataFrame:
    """The shipped table mapping the milk studies' author labels to milkcells labels."""
    from importlib.resources import files

    with (files("milkcells") / "data" / "author_labels.tsv").open() as fh:
        table = pd.read_csv(fh, sep="\t", comment="#", dtype=str, keep_default_na=False)
    return table if study is None else table[table["study"] == study].reset_index(drop=True)


def nyquist2022_analysis(path, *, max_days: float = 400) -> dict:
    """Composition over lactation on the published Nyquist et al. 2022 per-sample counts.

    Parameters
    ----------
    path
        ``nyquist2022_sample_celltype_counts.csv``: one row per sample, one
        column per author cell type, cell counts (empty = 0).
    max_days
        Samples at or after this time are left out of the correlations.

    Returns
    -------
    ``n_samples``, ``n_timed``, ``shares`` (samples x milkcells labels, plus
    ``immune`` and ``epithelial``), ``days``, ``correlations``
    (:func:`time_correlations`) and ``immune_periods`` (:func:`compare_periods`
    of the immune share, first 3 weeks vs after 20 weeks).
    """
    counts = pd.read_csv(path, index_col=0)
    mapping = author_label_map("nyquist2022").set_index("author_label")
    unknown = [c for c in counts.columns if c not in mapping.index]
    if unknown:
        raise ValueError(f"{path}: unknown cell-type columns {unknown}")
    counts = counts.fillna(0).rename(columns=mapping["cell_type"].to_dict())
    shares = shares_from_counts(counts)
    comp = mapping.drop_duplicates("cell_type").set_index("cell_type")["compartment"]
    for c in ("epithelial", "immune"):
        shares[c] = shares[[t for t in counts.columns if comp[t] == c]].sum(axis=1)
    days = pd.Series({s: parse_days_postpartum(s) for s in shares.index})
    return {
        "n_samples": int(len(shares)),
        "n_timed": int((days.notna() & (days < max_days)).sum()),
        "shares": shares,
        "days": days,
        "correlations": time_correlations(shares, days, max_days=max_days),
        "immune_periods": compare_periods(shares["immune"], days, counts=counts.sum(axis=1)),
    }
