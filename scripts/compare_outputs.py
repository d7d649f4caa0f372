"""Compare two output folders of the workflow: every table, and the atlas's and compartments' annotations.

For checking that a change of code that should not change results does not (a refactoring, a
faster step): tables (``tables/*.tsv``) must be equal cell for cell, numbers within ``--rtol``;
``annotated.h5ad`` and ``compartments/*.h5ad`` must hold the same cells, the same ``obs`` (labels
equal, numbers within tolerance), the same matrices and the same embeddings (within tolerance).
Figures are not compared (their bytes carry timestamps). Prints one line per file and exits 1 if
anything differs::

    python scripts/compare_outputs.py results_before results_after
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def compare_frames(a: pd.DataFrame, b: pd.DataFrame, *, rtol: float) -> list[str]:
    problems = []
    if list(a.columns) != list(b.columns):
        problems.append(f"columns differ: {sorted(set(a.columns) ^ set(b.columns))}")
        return problems
    if len(a) != len(b) or not a.index.equals(b.index):
        return [f"rows differ ({len(a)} against {len(b)})"]
    for col in a.columns:
        x, y = a[col], b[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            xv, yv = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
            if not np.allclose(xv, yv, rtol=rtol, atol=rtol * np.nanmax(np.abs(xv), initial=0), equal_nan=True):
                worst = np.nanmax(np.abs(xv - yv))
                problems.append(f"{col}: numbers differ (largest difference {worst:.3g})")
        elif not x.astype(str).equals(y.astype(str)):
            problems.append(f"{col}: {int((x.astype(str) != y.astype(str)).sum())} values differ")
    return problems


def compare_matrices(a, b, *, rtol: float) -> bool:
    import scipy.sparse as sp

    if a is None or b is None:
        return a is None and b is None
    if a.shape != b.shape:
        return False
    if sp.issparse(a) or sp.issparse(b):
        d = sp.csr_matrix(a, dtype=np.float64) - sp.csr_matrix(b, dtype=np.float64)
        scale = max(abs(sp.csr_matrix(a)).max(), 1e-300)
        return d.nnz == 0 or abs(d).max() <= rtol * scale
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.allclose(a, b, rtol=rtol, atol=rtol * np.abs(a).max(initial=0))


def compare_h5ad(p: Path, q: Path, *, rtol: float) -> list[str]:
    import anndata as ad

    a, b = ad.read_h5ad(p), ad.read_h5ad(q)
    problems = []
    if not a.obs_names.equals(b.obs_names) or not a.var_names.equals(b.var_names):
        return ["cells or genes differ"]
    problems += [f"obs {x}" for x in compare_frames(a.obs, b.obs, rtol=rtol)]
    problems += [f"var {x}" for x in compare_frames(a.var, b.var, rtol=rtol)]
    for name in ("X", *sorted(set(a.layers) | set(b.layers))):
        x = a.X if name == "X" else a.layers.get(name)
        y = b.X if name == "X" else b.layers.get(name)
        if not compare_matrices(x, y, rtol=rtol):
            problems.append(f"matrix {name} differs")
    for key in sorted(set(a.obsm) | set(b.obsm)):
        if key not in a.obsm or key not in b.obsm:
            problems.append(f"obsm {key} in one only")
        elif not compare_matrices(np.asarray(a.obsm[key]), np.asarray(b.obsm[key]), rtol=rtol):
            problems.append(f"obsm {key} differs")
    for key in sorted(set(a.obsp) | set(b.obsp)):
        if key not in a.obsp or key not in b.obsp or not compare_matrices(a.obsp[key], b.obsp[key], rtol=rtol):
            problems.append(f"obsp {key} differs")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance of numbers (default 1e-5)")
    args = ap.parse_args(argv)
    failed = False
    files = sorted({p.relative_to(args.before) for p in args.before.glob("tables/*.tsv")}
                   | {p.relative_to(args.after) for p in args.after.glob("tables/*.tsv")})
    files += [Path("annotated.h5ad")] + sorted(p.relative_to(args.before) for p in args.before.glob("compartments/*.h5ad"))
    for rel in files:
        p, q = args.before / rel, args.after / rel
        if not p.exists() or not q.exists():
            print(f"DIFFERS {rel}: in {'after' if q.exists() else 'before'} only")
            failed = True
            continue
        if rel.suffix == ".tsv":
            problems = compare_frames(pd.read_csv(p, sep="\t"), pd.read_csv(q, sep="\t"), rtol=args.rtol)
        else:
            problems = compare_h5ad(p, q, rtol=args.rtol)
        print(("DIFFERS " if problems else "same    ") + str(rel) + ("" if not problems else ": " + "; ".join(problems)))
        failed |= bool(problems)
    print("all outputs equal" if not failed else "outputs differ")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
