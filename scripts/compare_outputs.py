"""Compare two output folders of the workflow: every table, and the atlas's and compartments' annotations.

For checking that a change of code that should not change results does not (a refactoring, a
faster step): tables (``tables/*.tsv``) must be equal cell for cell, numbers within ``--rtol``;
``annotated.h5ad`` and ``compartments/*.h5ad`` must hold the same cells, the same ``obs`` (labels
equal, numbers within tolerance), the same matrices and the same embeddings (within tolerance).
Figures are not compared (their bytes carry timestamps). Prints one line per file and exits 1 if
anything differs::

    python scripts/compare_outputs.py results_before results_after

A change that renames a column (of the tables and of ``obs``) or adds an output says so, and the
comparison holds it to exactly that: ``--rename source=sample_type`` compares the before's
``source`` with the after's ``sample_type`` (and fails where the before has no ``source``),
``--new tables/cell_type_calls.tsv`` lists an output the before lacks without failing.
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
            # the column's scale from its finite values (an inf, e.g. an open-ended stage, would allow anything)
            scale = np.max(np.abs(xv[np.isfinite(xv)]), initial=0)
            if not np.allclose(xv, yv, rtol=rtol, atol=rtol * scale, equal_nan=True):
                worst = np.nanmax(np.abs(xv - yv))
                problems.append(f"{col}: numbers differ (largest difference {worst:.3g})")
        elif not x.astype(str).equals(y.astype(str)):
            problems.append(f"{col}: {int((x.astype(str) != y.astype(str)).sum())} values differ")
    return problems


def matrix_difference(a, b) -> float:
    """The largest absolute difference of two matrices (inf when their shapes differ)."""
    import scipy.sparse as sp

    if a is None or b is None:
        return 0.0 if a is None and b is None else float("inf")
    if a.shape != b.shape:
        return float("inf")
    if 0 in a.shape:
        return 0.0
    if sp.issparse(a) or sp.issparse(b):
        d = sp.csr_matrix(a, dtype=np.float64) - sp.csr_matrix(b, dtype=np.float64)
        return float(abs(d).max()) if d.nnz else 0.0
    return float(np.max(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))))


def matrix_scale(a) -> float:
    import scipy.sparse as sp

    if a is None or 0 in a.shape:
        return 0.0
    return float(abs(sp.csr_matrix(a)).max()) if sp.issparse(a) else float(np.max(np.abs(np.asarray(a, dtype=float))))


def compare_matrices(a, b, *, rtol: float) -> tuple[bool, float]:
    diff = matrix_difference(a, b)
    return diff <= rtol * max(matrix_scale(a), 1e-300) or diff == 0, diff


def renamed(df: pd.DataFrame, renames: dict[str, str]) -> tuple[pd.DataFrame, list[str]]:
    """The before's frame with the renamed columns under their new names (and the renames it lacked)."""
    present = {old: new for old, new in renames.items() if old in df.columns}
    return df.rename(columns=present), [f"no column {old!r} to rename" for old in renames if old not in present]


def compare_h5ad(p: Path, q: Path, *, rtol: float, renames: dict[str, str]) -> list[str]:
    import anndata as ad

    a, b = ad.read_h5ad(p), ad.read_h5ad(q)
    problems = []
    if not a.obs_names.equals(b.obs_names) or not a.var_names.equals(b.var_names):
        return ["cells or genes differ"]
    obs, missing = renamed(a.obs, renames)
    problems += [f"obs {x}" for x in missing + compare_frames(obs, b.obs, rtol=rtol)]
    problems += [f"var {x}" for x in compare_frames(a.var, b.var, rtol=rtol)]
    for name in ("X", *sorted(set(a.layers) | set(b.layers))):
        x = a.X if name == "X" else a.layers.get(name)
        y = b.X if name == "X" else b.layers.get(name)
        ok, diff = compare_matrices(x, y, rtol=rtol)
        if not ok:
            problems.append(f"matrix {name} differs (largest difference {diff:.3g})")
    for kind, ma, mb in (("obsm", a.obsm, b.obsm), ("obsp", a.obsp, b.obsp)):
        for key in sorted(set(ma) | set(mb)):
            if key not in ma or key not in mb:
                problems.append(f"{kind} {key} in {'after' if key in mb else 'before'} only")
                continue
            x, y = ma[key], mb[key]
            ok, diff = compare_matrices(
                x if hasattr(x, "shape") else np.asarray(x), y if hasattr(y, "shape") else np.asarray(y), rtol=rtol
            )
            if not ok:
                problems.append(f"{kind} {key} differs (largest difference {diff:.3g} of {matrix_scale(x):.3g})")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance of numbers (default 1e-5)")
    ap.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="a column the change renamed, in the tables that hold it and in obs (repeatable)",
    )
    ap.add_argument(
        "--new", action="append", default=[], type=Path, metavar="PATH", help="an output the change adds (repeatable)"
    )
    args = ap.parse_args(argv)
    renames = dict(r.split("=", 1) for r in args.rename)
    failed = False
    files = sorted(
        {p.relative_to(args.before) for p in args.before.glob("tables/*.tsv")}
        | {p.relative_to(args.after) for p in args.after.glob("tables/*.tsv")}
    )
    files += [Path("annotated.h5ad")] + sorted(
        p.relative_to(args.before) for p in args.before.glob("compartments/*.h5ad")
    )
    for rel in files:
        p, q = args.before / rel, args.after / rel
        if rel in args.new and q.exists() and not p.exists():
            print(f"new     {rel}")
            continue
        if not p.exists() or not q.exists():
            print(f"DIFFERS {rel}: in {'after' if q.exists() else 'before'} only")
            failed = True
            continue
        if rel.suffix == ".tsv":
            before = pd.read_csv(p, sep="\t")
            # a rename applies to the tables holding the column: the after must hold the new name instead
            before, _ = renamed(before, renames)
            problems = compare_frames(before, pd.read_csv(q, sep="\t"), rtol=args.rtol)
        else:
            problems = compare_h5ad(p, q, rtol=args.rtol, renames=renames)
        print(
            ("DIFFERS " if problems else "same    ") + str(rel) + ("" if not problems else ": " + "; ".join(problems))
        )
        failed |= bool(problems)
    print("all outputs equal" if not failed else "outputs differ")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
