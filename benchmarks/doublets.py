"""Doublet removal on simulated milk with heterotypic doublets, and its runtime against cells.

**The data are simulated** (:func:`milkcells.simulation.simulate_raw_sample`: programmes written
from the literature, not read from the marker table; casein-rich ambient RNA in every droplet,
calibrated on real milk). Per setting of the simulator's imperfections (``marker_fraction``,
``sharing``) and seed, three samples of three donors early, mid and late in lactation (5, 30 and
90 days: an immune share of about 23, 14 and 5 %), each with 4 % doublets of one epithelial and
one immune cell (``doublet_kind="heterotypic"``: the doublets are drawn by the simulator, not built
to match the detector), go through the library's own path: cell calling
(:func:`milkcells.cellcalling.call_cells`), QC (:func:`milkcells.qc.filter_cells`) and
:func:`milkcells.doublets.remove_doublets` with its defaults.

It prints, per setting, seed and sample and pooled per setting and seed, the share of
epithelial-immune doublets removed and the share of singlets lost, for the detector as the workflow
runs it and for each of its two parts alone (Scrublet, the old detector; the heterotypic
classifier), then the time of ``remove_doublets`` (and of each part) at the ``--timing`` sizes.

From a clean clone::

    make install
    .venv/bin/python benchmarks/doublets.py                      # ~8 minutes on 2 cores
    .venv/bin/python benchmarks/doublets.py --timing             # accuracy only
    .venv/bin/python benchmarks/doublets.py --out doublets.tsv   # also write the per-sample table
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import pandas as pd

from milkcells import cellcalling, doublets, qc, simulation

SETTINGS = ((1.0, 0.0), (0.7, 0.1))
SAMPLES = (("S1", "D1", 5), ("S2", "D2", 30), ("S3", "D3", 90))


def _sample(name, donor, days, *, n_cells, marker_fraction, sharing, seed):
    raw = simulation.simulate_raw_sample(
        name,
        donor=donor,
        days_postpartum=days,
        n_cells=n_cells,
        n_empty=3 * n_cells,
        marker_fraction=marker_fraction,
        sharing=sharing,
        doublet_rate=0.04,
        doublet_kind="heterotypic",
        seed=seed,
    )
    return qc.filter_cells(cellcalling.call_cells(raw))


def _parts(before, after):
    """Rows for the whole detector and each part alone, from the scores recorded for every input cell."""
    rec = after.uns["milkcells"]["doublets"]
    calls = {
        "scrublet": np.nan_to_num(rec["scores"]) > rec["threshold_used"],
        "heterotypic": np.nan_to_num(rec["probabilities"]) > 0.5,
    }
    rows = {"both detectors": simulation.doublet_removal(before, after)}
    for part, called in calls.items():
        rows[f"{part} alone"] = simulation.doublet_removal(before, before[~called])
    return rows


def accuracy(n_cells: int, seeds: list[int]) -> pd.DataFrame:
    """One row per setting, seed, sample and detector: the shares of :func:`simulation.doublet_removal`."""
    rows = []
    for mf, sh in SETTINGS:
        for seed in seeds:
            for name, donor, days in SAMPLES:
                before = _sample(name, donor, days, n_cells=n_cells, marker_fraction=mf, sharing=sh, seed=seed)
                t0 = time.perf_counter()
                after = doublets.remove_doublets(before)
                secs = time.perf_counter() - t0
                for detector, m in _parts(before, after).items():
                    rows.append(
                        {
                            "marker_fraction": mf,
                            "sharing": sh,
                            "seed": seed,
                            "sample": name,
                            "days_postpartum": days,
                            "detector": detector,
                            "cells": before.n_obs,
                            **m,
                            "seconds": secs,
                        }
                    )
                print(f"  {mf}/{sh} seed {seed} {name}: {before.n_obs} cells, {secs:.1f} s", flush=True)
    return pd.DataFrame(rows)


def pooled(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Epithelial-immune doublets removed and singlets lost (%), pooled over the cells of each group."""
    t = table.assign(
        ei_removed=table["removed_epithelial_immune"] * table["epithelial_immune_doublets"],
        singlets_lost_n=table["singlets_lost"] * table["singlets"],
    )
    g = t.groupby(by, sort=False)[["ei_removed", "epithelial_immune_doublets", "singlets_lost_n", "singlets"]].sum()
    return pd.DataFrame(
        {
            "epithelial_immune_removed_%": 100 * g["ei_removed"] / g["epithelial_immune_doublets"],
            "singlets_lost_%": 100 * g["singlets_lost_n"] / g["singlets"],
        }
    ).round(1)


def timing(sizes: list[int]) -> pd.DataFrame:
    """Wall time of ``remove_doublets`` (both detectors, and each alone) on one sample per size."""
    rows = []
    for n in sizes:
        a = _sample(f"T{n}", "D1", 30, n_cells=n, marker_fraction=0.7, sharing=0.1, seed=0)
        row = {"cells": a.n_obs}
        for label, kw in (
            ("both_s", {}),
            ("scrublet_s", {"heterotypic": False}),
            ("heterotypic_s", {"scrublet": False}),
        ):
            t0 = time.perf_counter()
            doublets.remove_doublets(a, **kw)
            row[label] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"  {n} cells: {row}", flush=True)
    return pd.DataFrame(rows)


def main(argv=None):
    """Print the tables (module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=2000, help="singlet cells per sample (default 2000)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument(
        "--timing",
        type=int,
        nargs="*",
        default=[5000, 20000],
        help="sample sizes to time remove_doublets at (none: skip)",
    )
    ap.add_argument("--out", help="write the per-sample table (TSV) here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")  # scanpy's and anndata's notices, not results
    table = accuracy(args.cells, args.seeds)
    if args.out:
        table.to_csv(args.out, sep="\t", index=False)
    pd.set_option("display.width", 200)
    per_sample = table.pivot_table(
        index=["marker_fraction", "sharing", "seed", "sample"],
        columns="detector",
        values=["removed_epithelial_immune", "singlets_lost"],
        sort=False,
    )
    print("\nPer sample (shares; epithelial-immune doublets removed, singlets lost):")
    print((100 * per_sample).round(1).to_string())
    print("\nPer setting and seed, pooled over the samples (%):")
    print(pooled(table, ["marker_fraction", "sharing", "seed", "detector"]).unstack("detector").to_string())
    print("\nPer setting, pooled over seeds and samples (%):")
    print(pooled(table, ["marker_fraction", "sharing", "detector"]).unstack("detector").to_string())
    if args.timing:
        print("\nremove_doublets wall time (s; 2 detectors, and each alone):")
        print(timing(args.timing).to_string(index=False))


if __name__ == "__main__":
    main()
