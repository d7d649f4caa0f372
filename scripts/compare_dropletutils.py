"""Check milkcells' EmptyDrops and barcode-rank points against R's DropletUtils (the reference).

Runs :func:`milkcells.emptydrops.emptydrops` and :func:`milkcells.barcoderanks.barcode_ranks`
and, through ``Rscript``, ``DropletUtils::emptyDrops`` and ``DropletUtils::barcodeRanks`` on the
same raw droplet matrices, with the same ``lower``, ``niters``, ``retain`` (the knee) and
``test.ambient=FALSE``, and prints per matrix:

- calls in common: barcodes called by both / called by either (FDR <= 0.01);
- the Spearman rank correlation of the Monte Carlo p-values of the barcodes both simulated
  (tested, below the knee);
- knee and inflection, ours against DropletUtils' (relative difference).

The matrices are SIMULATED (:mod:`milkcells.simulation`, :mod:`milkcells.demo`): a raw
sample, the same kind of sample with ambient RNA at ~80 UMIs pre-trimmed to >= 20, 60 and
100 UMIs (``lower`` raised as :func:`milkcells.cellcalling.call_cells` raises it), and a milk
sample with heavy casein ambient RNA (~250 UMIs per empty droplet, above ``lower``).

    apt-get install r-bioc-dropletutils      # Debian/Ubuntu; or BiocManager::install("DropletUtils")
    .venv/bin/python scripts/compare_dropletutils.py                # niters 10000, ~5 min on 2 cores
    .venv/bin/python scripts/compare_dropletutils.py --niters 2000 --only raw

Exits 1 when a matrix misses the targets (>= 99 % calls in common, knee and inflection within
2 %), 2 when Rscript or DropletUtils is missing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

R_CODE = r"""
args <- commandArgs(trailingOnly = TRUE)
suppressPackageStartupMessages({library(DropletUtils); library(Matrix)})
m <- as(readMM(args[1]), "CsparseMatrix")
lower <- as.numeric(args[2]); niters <- as.integer(args[3]); set.seed(as.integer(args[4]))
br <- barcodeRanks(m, lower = lower)
e <- emptyDrops(m, lower = lower, niters = niters, test.ambient = FALSE)
out <- data.frame(total = e$Total, pvalue = e$PValue, fdr = e$FDR, limited = e$Limited)
write.table(out, args[5], sep = "\t", quote = FALSE, row.names = FALSE, na = "NA")
cat(sprintf("knee\t%.10g\ninflection\t%.10g\nretain\t%.10g\nalpha\t%.10g\n",
            metadata(br)$knee, metadata(br)$inflection, metadata(e)$retain, metadata(e)$alpha),
    file = args[6])
"""


def have_dropletutils() -> bool:
    """Whether ``Rscript`` and the DropletUtils package are available."""
    if shutil.which("Rscript") is None:
        return False
    proc = subprocess.run(["Rscript", "-e", "suppressPackageStartupMessages(library(DropletUtils))"],
                          capture_output=True, text=True)  # fmt: skip
    return proc.returncode == 0


def _totals(adata) -> np.ndarray:
    return np.asarray(adata.X.sum(axis=1)).ravel()


def matrices(names: list[str] | None = None, small: bool = False) -> dict:
    """``{name: (raw AnnData, lower)}``, the simulated test matrices (``small``: a quick version)."""
    from milkcells import barcoderanks, demo, simulation

    n_cells, n_empty = (150, 1500) if small else (300, 3000)
    out = {}

    def add(name, make):
        if names is None or name in names:
            a = make()
            # the lower call_cells uses (raised on a pre-trimmed matrix)
            low = barcoderanks.ambient_lower(_totals(a), 100)
            out[name] = (a, low)

    add(
        "raw",
        lambda: simulation.simulate_raw_sample("R1", donor="D1", n_cells=n_cells, n_empty=n_empty),
    )

    def trimmed(level):
        a = simulation.simulate_raw_sample("P1", donor="D1", n_cells=n_cells, n_empty=n_empty, ambient_umis=80)
        return a[_totals(a) >= level].copy()

    for level in (20, 60, 100):
        add(f"pretrimmed_{level}", lambda level=level: trimmed(level))
    add("heavy_casein", lambda: demo.simulate_milk_sample(
        "H1", donor="D1", days_postpartum=10, n_cells=n_cells + 100, n_empty=n_empty, n_genes=800,
        ambient_umis=250))  # fmt: skip
    return out


def run_r(adata, lower: float, niters: int, seed: int, workdir: Path) -> tuple[pd.DataFrame, dict]:
    """DropletUtils' emptyDrops and barcodeRanks on ``adata`` (barcodes x genes)."""
    import scipy.io
    import scipy.sparse as sp

    mtx, table, meta, script = (workdir / n for n in ("m.mtx", "ed.tsv", "meta.tsv", "run.R"))
    scipy.io.mmwrite(str(mtx), sp.csc_matrix(adata.X.T).astype(np.int64), field="integer")
    script.write_text(R_CODE)
    proc = subprocess.run(["Rscript", str(script), str(mtx), str(lower), str(niters), str(seed), str(table), str(meta)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"Rscript failed:\n{proc.stderr[-3000:]}")
    df = pd.read_csv(table, sep="\t", na_values="NA")
    info = dict(line.split("\t") for line in meta.read_text().splitlines())
    return df, {k: float(v) for k, v in info.items()}


def compare(adata, lower: float, niters: int = 10000, seed: int = 0, fdr: float = 0.01) -> dict:
    """Agreement of milkcells and DropletUtils on one raw matrix."""
    from scipy.stats import spearmanr

    from milkcells import barcoderanks, emptydrops

    ours = emptydrops.emptydrops(adata, lower=lower, niters=niters, seed=seed, fdr=fdr)
    pts = barcoderanks.barcode_ranks(ours["total"].to_numpy(), lower=lower)
    with tempfile.TemporaryDirectory() as tmp:
        theirs, meta = run_r(adata, lower, niters, seed, Path(tmp))
    if not np.array_equal(theirs["total"].to_numpy(), ours["total"].to_numpy()):
        raise RuntimeError("DropletUtils and milkcells disagree on the barcode totals")
    a = ours["is_cell"].to_numpy(dtype=bool)
    b = (theirs["fdr"] <= fdr).fillna(False).to_numpy(dtype=bool)
    both = ((ours["total"] > lower) & (ours["total"] < min(pts["knee"], meta["retain"]))).to_numpy()
    both &= ours["pvalue"].notna().to_numpy() & theirs["pvalue"].notna().to_numpy() & (ours["pvalue"] > 0).to_numpy()
    rho = spearmanr(ours["pvalue"][both], theirs["pvalue"][both]).statistic if both.sum() > 2 else np.nan
    return {
        "barcodes": int(adata.n_obs),
        "lower": lower,
        "called_milkcells": int(a.sum()),
        "called_dropletutils": int(b.sum()),
        "calls_in_common": float((a & b).sum() / max((a | b).sum(), 1)),
        "pvalue_spearman": float(rho),
        "n_pvalues": int(both.sum()),
        "knee": pts["knee"],
        "knee_dropletutils": meta["knee"],
        "knee_diff": abs(pts["knee"] / meta["knee"] - 1),
        "inflection": pts["inflection"],
        "inflection_dropletutils": meta["inflection"],
        "inflection_diff": abs(pts["inflection"] / meta["inflection"] - 1),
        "alpha": float(ours.attrs["alpha"]),
        "alpha_dropletutils": meta["alpha"],
    }


def meets_targets(row: dict) -> bool:
    """Whether one matrix meets issue 8's targets (>= 99 % calls in common, points within 2 %)."""
    return row["calls_in_common"] >= 0.99 and row["knee_diff"] <= 0.02 and row["inflection_diff"] <= 0.02


def main(argv: list[str] | None = None) -> int:
    """Compare on every matrix, print the figures; 0 when all meet the targets."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--niters", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only",
        nargs="*",
        help="matrix names (raw, pretrimmed_20, pretrimmed_60, pretrimmed_100, heavy_casein)",
    )
    parser.add_argument("--small", action="store_true", help="smaller matrices (quick check)")
    args = parser.parse_args(argv)
    if not have_dropletutils():
        print(
            "Rscript with DropletUtils is not available (apt-get install r-bioc-dropletutils)",
            file=sys.stderr,
        )
        return 2
    rows = []
    for name, (adata, lower) in matrices(args.only, small=args.small).items():
        row = {"matrix": name, **compare(adata, lower, niters=args.niters, seed=args.seed)}
        rows.append(row)
        print(
            f"{name}: {row['barcodes']} barcodes, lower {row['lower']:g}; called {row['called_milkcells']} "
            f"(milkcells) vs {row['called_dropletutils']} (DropletUtils), calls in common "
            f"{row['calls_in_common']:.2%}; p-value rank correlation {row['pvalue_spearman']:.4f} "
            f"over {row['n_pvalues']} barcodes; knee {row['knee']:.0f} vs {row['knee_dropletutils']:.0f} "
            f"({row['knee_diff']:.2%}); inflection {row['inflection']:.0f} vs "
            f"{row['inflection_dropletutils']:.0f} ({row['inflection_diff']:.2%}); alpha "
            f"{row['alpha']:.4g} vs {row['alpha_dropletutils']:.4g}",
            flush=True,
        )
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    ok = all(meets_targets(r) for r in rows)
    print("all matrices meet the targets" if ok else "SOME MATRICES MISS THE TARGETS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
