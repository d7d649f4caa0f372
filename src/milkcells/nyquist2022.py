"""Reproduction of Nyquist et al. 2022's composition-over-lactation results on SCP1671.

Nyquist et al. 2022 (PNAS 119 e2121720119, Fig. 2B) report Spearman
correlations of cell-type shares with days postpartum, treating every sample
as independent. Here the same question is asked of every dated sample of the
Single Cell Portal study SCP1671 (``scp1671_per_sample.tsv``: 50 of 59 samples
have a donor and inferred days postpartum) with milkcells' donor-aware model
(:mod:`milkcells.composition_model`), through the very functions the workflow
uses on a user's cohort (:func:`milkcells.composition.composition_over_time`).

A published result is **reproduced** when our estimate has its direction and
q < 0.05 (Benjamini-Hochberg across the cell types, or within its own family
for the immune share); **direction only** when the direction holds but q >=
0.05 (the interval includes no change); **not reproduced** when the direction
is opposite or the effect cannot be estimated.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ._utils import InputError
from .composition import author_label_map, composition_by_stage, composition_over_time
from .composition_model import fit_share_trend, pool_units
from .lactation import lactation_stage, stage_shares

__all__ = ["PUBLISHED", "FIRST_WEEKS", "read_scp1671", "immune_by_donor", "verdict", "reproduce"]

# (label, level, published Spearman R, published p, claim)
PUBLISHED = (
    ("LC1", "cell_type", 0.583, 2.4e-6, "LC1 share rises with days postpartum"),
    ("LC2", "cell_type", -0.272, 0.042, "LC2 share falls with days postpartum"),
    ("dendritic cell", "cell_type", 0.331, 0.013, "dendritic-cell share rises"),
    ("B cell", "cell_type", 0.282, 0.035, "B-cell share rises"),
)
# "the immune share falls after the first weeks": the first weeks are the early and
# transitional stages (colostrum and transitional milk, up to 14 days)
FIRST_WEEKS = 14.0
_META = ("biosample_id", "donor_id", "time_post_partum_days_inferred")


def read_scp1671(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``scp1671_per_sample.tsv`` as a :func:`~milkcells.composition.composition_table`.

    Author labels become milkcells labels (``data/author_labels.tsv``);
    ``n_cells`` must equal the sum of the label counts. Samples without a donor
    or time keep NaN there.

    Returns
    -------
    The long composition table (``sample``, ``donor``, ``days_postpartum``,
    ``level``, ``compartment``, ``label``, ``n_cells``, ``fraction``,
    ``fraction_of_compartment``).
    """
    raw = pd.read_csv(path, sep="\t")
    for col in (*_META, "n_cells"):
        if col not in raw:
            raise InputError("column missing", file=path, field=col)
    mapping = author_label_map("nyquist2022").set_index("author_label")
    skip = {*_META, "n_cells", "milk_stage_inferred"}
    labels = [c for c in raw.columns if c not in skip and not c.startswith("frac_")]
    unknown = [c for c in labels if c not in mapping.index]
    if unknown:
        raise InputError(
            f"unknown cell-type columns {unknown}",
            file=path,
            field=unknown[0],
            expected="labels listed in milkcells/data/author_labels.tsv (nyquist2022)",
        )
    counts = raw.set_index("biosample_id")[labels].fillna(0)
    if (counts < 0).to_numpy().any() or (counts % 1 != 0).to_numpy().any():
        bad = counts.index[((counts < 0) | (counts % 1 != 0)).any(axis=1)][0]
        raise InputError("cell counts must be non-negative integers", file=path, sample=str(bad))
    total = counts.sum(axis=1)
    declared = raw.set_index("biosample_id")["n_cells"]
    off = total.index[total.to_numpy() != declared.to_numpy()]
    if len(off):
        raise InputError(
            f"n_cells {declared[off[0]]} differs from the sum of the label counts {total[off[0]]}",
            file=path,
            sample=str(off[0]),
            field="n_cells",
        )
    meta = raw.set_index("biosample_id")
    rows = []
    for s in counts.index:
        comp_n: dict[str, float] = {}
        for lab in labels:
            comp = mapping.loc[lab, "compartment"]
            comp_n[comp] = comp_n.get(comp, 0) + counts.loc[s, lab]
        base = {
            "sample": s,
            "donor": meta.loc[s, "donor_id"],
            "days_postpartum": float(meta.loc[s, "time_post_partum_days_inferred"]),
        }
        for comp, n in comp_n.items():
            rows.append(
                {
                    **base,
                    "level": "compartment",
                    "compartment": comp,
                    "label": comp,
                    "n_cells": int(n),
                    "fraction": n / total[s],
                    "fraction_of_compartment": np.nan,
                }
            )
        for lab in labels:
            comp, n = mapping.loc[lab, "compartment"], counts.loc[s, lab]
            rows.append(
                {
                    **base,
                    "level": "cell_type",
                    "compartment": comp,
                    "label": mapping.loc[lab, "cell_type"],
                    "n_cells": int(n),
                    "fraction": n / total[s],
                    "fraction_of_compartment": n / comp_n[comp] if comp_n[comp] else np.nan,
                }
            )
    return pd.DataFrame(rows)


def immune_by_donor(table: pd.DataFrame) -> pd.DataFrame:
    """Immune subtypes per donor and time: replicates pooled, shares of immune cells and of all cells.

    Returns
    -------
    One row per donor, time and immune cell type: ``donor``,
    ``days_postpartum``, ``stage``, ``n_samples``, ``label``, ``n_cells``,
    ``n_immune``, ``n_total``, ``share_of_immune`` and ``share_of_cells``.
    """
    ct = table[(table["level"] == "cell_type") & (table["compartment"] == "immune")]
    wide = ct.pivot_table(index="sample", columns="label", values="n_cells", aggfunc="sum").fillna(0)
    totals = table[table["level"] == "compartment"].groupby("sample")["n_cells"].sum()
    meta = table.groupby("sample")[["donor", "days_postpartum"]].first()
    both = wide.assign(_immune=wide.sum(axis=1), _total=totals.reindex(wide.index))
    pooled, units = pool_units(both, meta["donor"], meta["days_postpartum"])
    rows = []
    for lab in wide.columns:
        rows.append(
            pd.DataFrame(
                {
                    "donor": units["donor"],
                    "days_postpartum": units["days_postpartum"],
                    "stage": lactation_stage(units["days_postpartum"]),
                    "n_samples": units["n_samples"],
                    "label": lab,
                    "n_cells": pooled[lab].astype(int),
                    "n_immune": pooled["_immune"].astype(int),
                    "n_total": pooled["_total"].astype(int),
                    "share_of_immune": (pooled[lab] / pooled["_immune"]).where(pooled["_immune"] > 0),
                    "share_of_cells": pooled[lab] / pooled["_total"],
                }
            )
        )
    return pd.concat(rows, ignore_index=True).sort_values(["label", "donor", "days_postpartum"], ignore_index=True)


def verdict(sign: float, estimate: float, qvalue: float, *, alpha: float = 0.05) -> tuple[str, str]:
    """The plain verdict on a published direction and why (see the module docstring).

    Parameters
    ----------
    sign
        The published direction: +1 (rises) or -1 (falls).
    estimate, qvalue
        Our log odds ratio and its q-value.
    alpha
        The q-value below which a result is reproduced.

    Returns
    -------
    ``(verdict, reason)``: ``reproduced``, ``direction only`` or ``not reproduced``.
    """
    if not np.isfinite(estimate) or not np.isfinite(qvalue):
        return "not reproduced", "not estimable on these samples"
    if np.sign(estimate) != np.sign(sign):
        return "not reproduced", "our estimate has the opposite direction"
    if qvalue < alpha:
        return "reproduced", f"same direction and q < {alpha:g}"
    return "direction only", f"same direction, but q >= {alpha:g}: the 95 % interval includes no change"


def _ratio(row) -> str:
    return f"{row['odds_ratio']:.2f} ({row['or_ci_low']:.2f}-{row['or_ci_high']:.2f})"


def reproduce(path: str | os.PathLike, *, n_perm: int = 9999, seed: int = 0) -> dict:
    """Every published composition result beside milkcells' donor-aware estimate on SCP1671.

    Parameters
    ----------
    path
        ``scp1671_per_sample.tsv``.
    n_perm, seed
        Permutations of the within-donor tests and their seed.

    Returns
    -------
    ``table`` (the composition table), ``effects``
    (:func:`~milkcells.composition.composition_over_time`), ``immune_contrast``
    (immune share after vs within the first two weeks, within donors),
    ``stages`` and ``stages_coarse`` (immune share per lactation stage),
    ``by_stage`` (:func:`~milkcells.composition.composition_by_stage`),
    ``immune_by_donor`` (:func:`immune_by_donor`), ``n_samples``, ``n_dated``,
    ``n_donors``, ``n_units`` and ``results``: one row per published result
    with ``claim``, ``published``, ``direction``, ``odds_ratio`` (per doubling
    of days, 95 % CI), ``pvalue``, ``qvalue``, ``spearman_r``, ``spearman_p``
    (ours, naive, on the dated samples), ``verdict`` and ``why``.
    """
    table = read_scp1671(path)
    effects = composition_over_time(table, n_perm=n_perm, seed=seed)
    comp = table[table["level"] == "compartment"].pivot_table(
        index="sample", columns="label", values="n_cells", aggfunc="sum"
    )
    meta = table.groupby("sample")[["donor", "days_postpartum"]].first()
    dated = meta.dropna()
    totals, immune = comp.sum(axis=1), comp["immune"]
    pooled, units = pool_units(pd.DataFrame({"y": immune, "n": totals}), meta["donor"], meta["days_postpartum"])
    later = (units["days_postpartum"] > FIRST_WEEKS).astype(float)
    contrast = fit_share_trend(pooled["y"], pooled["n"], later, units["donor"], n_perm=n_perm, seed=seed)
    contrast["odds_ratio"] = float(np.exp(contrast["estimate"]))
    contrast["or_ci_low"], contrast["or_ci_high"] = np.exp(contrast["ci_low"]), np.exp(contrast["ci_high"])
    contrast["qvalue"] = contrast["pvalue"]
    eff = effects.set_index(["level", "label"])
    rows = []
    for label, level, r, p, claim in PUBLISHED:
        e = eff.loc[(level, label)]
        v, why = verdict(np.sign(r), e["estimate"], e["qvalue"])
        rows.append(
            {
                "claim": claim,
                "published": f"R = {r:+.3f}, p = {p:.2g} (Spearman)",
                "direction": "up" if e["estimate"] > 0 else "down",
                "odds_ratio": _ratio(e),
                "pvalue": e["pvalue"],
                "qvalue": e["qvalue"],
                "spearman_r": e["spearman_r"],
                "spearman_p": e["spearman_p"],
                "verdict": v,
                "why": f"{why}; odds ratio per doubling of days over {e['n_donors_informative']} donors "
                f"followed over time",
            }
        )
    slope = eff.loc[("compartment", "immune")]
    v, why = verdict(-1.0, contrast["estimate"], contrast["qvalue"])
    rows.append(
        {
            "claim": "immune share falls after the first weeks",
            "published": "immune share lower after the first weeks (Fig. 2B)",
            "direction": "down" if contrast["estimate"] < 0 else "up",
            "odds_ratio": _ratio(contrast),
            "pvalue": contrast["pvalue"],
            "qvalue": contrast["qvalue"],
            "spearman_r": slope["spearman_r"],
            "spearman_p": slope["spearman_p"],
            "verdict": v,
            "why": f"{why}; odds ratio after vs within the first {FIRST_WEEKS:.0f} days, within "
            f"{contrast['n_donors_informative']} donors seen in both (one test, q = p); the trend "
            f"per doubling of days is {_ratio(slope)}, q = {slope['qvalue']:.2g}",
        }
    )
    return {
        "table": table,
        "effects": effects,
        "immune_contrast": contrast,
        "stages": stage_shares(immune, totals, meta["donor"], meta["days_postpartum"]),
        "stages_coarse": stage_shares(immune, totals, meta["donor"], meta["days_postpartum"], coarse=True),
        "by_stage": composition_by_stage(table),
        "immune_by_donor": immune_by_donor(table.dropna(subset=["donor"])),
        "n_samples": int(meta.shape[0]),
        "n_dated": int(len(dated)),
        "n_donors": int(dated["donor"].nunique()),
        "n_units": int(len(units)),
        "results": pd.DataFrame(rows),
    }
