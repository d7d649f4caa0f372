"""Composition over lactation on the published Nyquist et al. 2022 per-sample counts.

Prints milkcells' Spearman correlations of each cell type's share with days
postpartum (samples under 400 days, time parsed from the sample names) beside
the published figures (Nyquist et al. 2022, PNAS, Fig. 2B), and compares the
immune share of the first three weeks with that after twenty weeks.

    python scripts/nyquist_composition.py [path/to/nyquist2022_sample_celltype_counts.csv]
"""

import sys
from pathlib import Path

import pandas as pd

from milkcells import composition

PUBLISHED = {"LC1": (0.583, 2.4e-6), "LC2": (-0.272, 0.042), "dendritic cell": (0.331, 0.013), "B cell": (0.282, 0.035)}

path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[2] / "shared/data/nyquist2022/nyquist2022_sample_celltype_counts.csv")
result = composition.nyquist2022_analysis(path)
print(f"{result['n_samples']} samples, {result['n_timed']} with a time in their name (under 400 days)")
print(f"{'cell type':20s} {'R (ours)':>9s} {'p (ours)':>10s} {'R (publ.)':>10s} {'p (publ.)':>10s}")
for _, r in result["correlations"].iterrows():
    pub = PUBLISHED.get(r["label"], (float("nan"), float("nan")))
    print(f"{r['label']:20s} {r['spearman_r']:+9.3f} {r['pvalue']:10.2g} {pub[0]:+10.3f} {pub[1]:10.2g}")
print("immune share, first 3 weeks vs after 20 weeks:")
print(pd.Series(result["immune_periods"]).to_string())
