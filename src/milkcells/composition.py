"""Composition per sample: counts and shares of compartments and cell types."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

__all__ = ["composition_table"]

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
