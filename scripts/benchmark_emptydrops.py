"""Benchmark EmptyDrops on a sample-sized raw droplet matrix (simulated).

Builds ~500,000 barcodes x 20,000 genes: the droplets of one simulated milk
sample (:func:`milkcells.demo.simulate_milk_sample`: cells, doublets,
dying cells, empty droplets), a share of its cells thinned to 150-500 UMIs
(small cells that overlap the empty droplets), and extra empty and
barely-used barcodes drawn sparsely from the sample's ambient profile. The
matrix is written to a temporary h5ad and :func:`milkcells.emptydrops.emptydrops`
is timed in a fresh Python process, so that the peak memory it reports
(``resource.getrusage``) is that of loading the matrix and calling cells, not
of simulating them. It prints the wall time, the peak memory, and how well
EmptyDrops and the barcode-rank inflection and knee recover the simulated cells.

    python scripts/benchmark_emptydrops.py                 # 500k barcodes x 20k genes, niters=10000
    python scripts/benchmark_emptydrops.py --n-barcodes 100000 --niters 2000
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _peak_mb() -> float:
    """Peak resident memory of this process in MB (Linux reports KB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _sparse_ambient(rng: np.random.Generator, totals: np.ndarray, ambient: np.ndarray):
    """Barcodes whose molecules are multinomial draws from ``ambient`` (built sparse)."""
    import scipy.sparse as sp

    totals = totals.astype(np.int64)
    rows = np.repeat(np.arange(totals.size), totals)
    genes = rng.choice(ambient.size, size=int(totals.sum()), p=ambient)
    m = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, genes)), shape=(totals.size, ambient.size))
    m.sum_duplicates()
    return m


def build(n_barcodes: int, n_cells: int, n_genes: int, n_extra_empty: int, low_share: float, seed: int):
    """The benchmark matrix, with truth in ``obs["sim_status"]`` and ``obs["low_count"]``."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from milkcells import demo

    rng = np.random.default_rng(seed)
    base = demo.simulate_milk_sample(
        "BENCH_d010", donor="SIM1", days_postpartum=10, n_cells=n_cells, n_empty=2000,
        n_genes=n_genes, seed=seed,
    )  # fmt: skip
    x = base.X.tocsr()
    status = base.obs["sim_status"].astype(str).to_numpy()
    # thin a share of the singlets to 150-500 UMIs: small cells among the empties
    cells = np.flatnonzero(status == "cell")
    low = rng.choice(cells, size=int(round(low_share * cells.size)), replace=False)
    totals = np.asarray(x.sum(axis=1)).ravel()
    target = np.exp(rng.uniform(np.log(150), np.log(500), low.size))
    x = x.copy()
    for i, t in zip(low, target, strict=True):  # binomial thinning of each row's counts
        seg = slice(x.indptr[i], x.indptr[i + 1])
        x.data[seg] = rng.binomial(x.data[seg].astype(np.int64), min(1.0, t / totals[i]))
    x.eliminate_zeros()
    low_count = np.zeros(base.n_obs, dtype=bool)
    low_count[low] = True

    ambient = base.var["sim_ambient"].to_numpy(dtype=float)
    ambient /= ambient.sum()
    n_fill = max(n_barcodes - base.n_obs - n_extra_empty, 0)
    empty_tot = np.maximum(np.rint(np.exp(rng.normal(np.log(120), 0.6, n_extra_empty))), 1)
    fill_tot = np.maximum(np.rint(np.exp(rng.normal(np.log(3), 0.9, n_fill))), 1)
    extra = _sparse_ambient(rng, np.concatenate([empty_tot, fill_tot]), ambient)
    n_extra = extra.shape[0]
    obs = pd.DataFrame(
        {
            "sim_status": np.concatenate([status, np.repeat("empty", n_extra)]),
            "sim_cell_type": np.concatenate(
                [base.obs["sim_cell_type"].astype(str).to_numpy(), np.repeat("empty", n_extra)]
            ),
            "low_count": np.concatenate([low_count, np.zeros(n_extra, dtype=bool)]),
        },
        index=list(base.obs_names) + [f"EXTRA{i:07d}-1" for i in range(n_extra)],
    )
    order = rng.permutation(obs.shape[0])
    adata = ad.AnnData(X=sp.vstack([x, extra]).tocsr()[order].astype(np.float32), obs=obs.iloc[order], var=base.var)
    for col in ("sim_status", "sim_cell_type"):
        adata.obs[col] = adata.obs[col].astype("category")
    return adata


def _table(adata, totals: np.ndarray, calls: dict[str, np.ndarray]) -> None:
    """Print recall and empty-droplet calls of each cell-calling method."""
    status = adata.obs["sim_status"].astype(str).to_numpy()
    ctype = adata.obs["sim_cell_type"].astype(str).to_numpy()
    real = np.isin(status, ["cell", "doublet"])
    low = adata.obs["low_count"].to_numpy(dtype=bool)
    empty = status == "empty"
    tested_empty = empty & (totals > 100)
    rows = [
        ("recall, cells + doublets", real),
        ("recall, not thinned", real & ~low),
        (f"recall, thinned to 150-500 UMIs (n={low.sum()})", low),
        ("  of which lactocytes (LC1/LC2)", low & np.isin(ctype, ["LC1", "LC2"])),
        ("  of which other types", low & ~np.isin(ctype, ["LC1", "LC2"])),
        ("recall, dying cells", status == "dying"),
    ]
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'':<{width}}" + "".join(f"{k:>16}" for k in calls))
    for label, mask in rows:
        print(f"{label:<{width}}" + "".join(f"{c[mask].mean():>16.3f}" for c in calls.values()))
    for label, mask in (
        ("empties called (all)", empty),
        ("empties called (total > 100)", tested_empty),
    ):
        cells = "".join(f"{f'{c[mask].sum()} ({c[mask].mean():.2%})':>16}" for c in calls.values())
        print(f"{label:<{width}}{cells}")
    print(f"({empty.sum():,} empty barcodes, {tested_empty.sum():,} of them above lower=100)")


def measure(path: str, niters: int, n_jobs: int, seed: int, multinomial: bool, retain) -> None:
    """Time EmptyDrops on the matrix at ``path`` and print the figures."""
    import anndata as ad

    from milkcells import cellcalling
    from milkcells.emptydrops import emptydrops

    adata = ad.read_h5ad(path)
    loaded_mb = _peak_mb()
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    print(
        f"matrix: {adata.n_obs:,} barcodes x {adata.n_vars:,} genes, {adata.X.nnz:,} non-zeros; "
        f"{int((totals > 100).sum()):,} barcodes above lower=100"
    )
    t0 = time.perf_counter()
    res = emptydrops(adata, niters=niters, seed=seed, n_jobs=n_jobs, retain=retain)
    wall = time.perf_counter() - t0
    peak_mb = _peak_mb()
    print(f"emptydrops wall time: {wall:.1f} s (niters={niters}, n_jobs={n_jobs})")
    print(
        f"peak memory (ru_maxrss): {peak_mb:,.0f} MB; {loaded_mb:,.0f} MB before emptydrops "
        f"(Python, imports and the loaded matrix), so +{peak_mb - loaded_mb:,.0f} MB for emptydrops"
    )
    a = res.attrs
    sim = res["pvalue"].notna() & (res["pvalue"] > 0)
    print(
        f"alpha={a['alpha']:.4g}, retain={a['retain']:.0f}, tested={a['n_tested']:,} "
        f"({int(sim.sum()):,} simulated, totals up to {int(res['total'][sim].max())}), "
        f"cells={a['n_cells']:,}, limited={int(res['limited'].sum()):,}"
    )
    calls = {"EmptyDrops": res["is_cell"].to_numpy()}
    if multinomial:
        t0 = time.perf_counter()
        res_inf = emptydrops(adata, niters=niters, seed=seed, n_jobs=n_jobs, retain=retain, alpha=np.inf)
        calls["ED alpha=inf"] = res_inf["is_cell"].to_numpy()
        print(f"emptydrops with alpha=np.inf: {time.perf_counter() - t0:.1f} s")
    for method in ("inflection", "knee"):
        called = cellcalling.call_cells(adata, method=method)
        calls[method] = adata.obs_names.isin(called.obs_names)
        threshold = called.uns["milkcells"]["cell_calling"]["threshold"]
        print(f"barcode-rank {method}: threshold {threshold:.0f} UMIs")
    _table(adata, totals, calls)


def main(argv: list[str] | None = None) -> None:
    """Build the matrix, then time EmptyDrops on it, each in a fresh process."""
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-barcodes", type=int, default=500_000)
    p.add_argument("--n-cells", type=int, default=6000, help="simulated singlet cells")
    p.add_argument("--n-genes", type=int, default=20_000)
    p.add_argument(
        "--n-extra-empty", type=int, default=30_000,
        help="extra empty droplets (~120 UMIs) besides the barely-used barcodes",
    )  # fmt: skip
    p.add_argument("--low-share", type=float, default=0.1, help="share of cells thinned to 150-500 UMIs")
    p.add_argument("--niters", type=int, default=10_000)
    p.add_argument("--n-jobs", type=int, default=1, help="emptydrops threads (n_jobs)")
    p.add_argument(
        "--retain", type=float, default=None,
        help="EmptyDrops' retain (default: the knee; inf: simulate every tested total)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, help="keep the matrix at this h5ad (reused if it exists)")
    p.add_argument(
        "--multinomial", action="store_true",
        help="also run EmptyDrops with alpha=np.inf (a multinomial null) for comparison",
    )  # fmt: skip
    p.add_argument("--build", help=argparse.SUPPRESS)  # internal: write the matrix to this h5ad
    p.add_argument("--measure", help=argparse.SUPPRESS)  # internal: time EmptyDrops on this h5ad
    args = p.parse_args(argv)
    if args.build:
        t0 = time.perf_counter()
        adata = build(
            args.n_barcodes, args.n_cells, args.n_genes, args.n_extra_empty, args.low_share,
            args.seed,
        )  # fmt: skip
        adata.write_h5ad(args.build)
        print(f"built the matrix in {time.perf_counter() - t0:.0f} s")
    elif args.measure:
        measure(args.measure, args.niters, args.n_jobs, args.seed, args.multinomial, args.retain)
    else:
        # Building and measuring run in two fresh processes: a process's peak
        # memory survives fork and exec, so building here would inflate the peak.
        me = [sys.executable, os.path.abspath(__file__), *argv]
        with tempfile.TemporaryDirectory() as tmp:
            path = str(args.keep or Path(tmp) / "bench.h5ad")
            if not (args.keep and args.keep.exists()):
                subprocess.run([*me, "--build", path], check=True)
            subprocess.run([*me, "--measure", path], check=True)


if __name__ == "__main__":
    main()
