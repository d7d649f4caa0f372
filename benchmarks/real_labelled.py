r"""milkcells' compartment and cell-type calls on real, author-labelled single-cell data.

The sets are real human scRNA-seq (and one snRNA-seq) with the authors' own cell-type labels,
taken from public GitHub repositories that bundle them as example data; milkcells neither ships
them nor was built from them. ``benchmarks/fetch_real_labelled.sh`` fetches and converts them to
h5ad (integer counts in ``X``, gene symbols as ``var_names``, ``obs["author_label"]``,
``obs["sample"]``) under ``/work/realdata/<name>/<name>.h5ad`` (outside the repository):

=========================  ==========================================================  =========  ======
name                       source (repository @ commit: path; licence)                 cells      labels
=========================  ==========================================================  =========  ======
breast_scdeconr            Liuy12/SCdeconR @ 0a2665e: inst/extdata/refdata/sample{1,2}  260        8
                           (10x MTX + phenodata); GPL >= 3. Healthy breast, Komen
                           tissue bank scRNA-seq + GTEx snRNA-seq, 20 cells per label
breast_wu2021_cid4465      omnideconv/spacedeconv @ 3c3317a:                            1,564      25
                           data/single_cell_data_2.RData; GPL-3. Wu et al. 2021 Nat
                           Genet (GSE176078), TNBC tumour CID4465, 10x; celltype_minor
pbmc_sorted_zheng2017      JEFworks/MUDAN @ 3636ed2: data/referenceCounts.rda,          2,140      9
                           referenceAnnot.rda; GPL-3. FACS-sorted PBMC populations
                           (Zheng et al. 2017), 10x; the label is the sort
pbmc4k_soupx               constantAmateur/SoupX @ 8d89492: data/PBMC_sc.RData,         2,170      6
                           PBMC_metaData.RData; GPL-2. 10x pbmc4k (half the cells),
                           Annotation from Seurat clusters; ambient profile kept
headneck_chetah            jdekanter/CHETAH @ c19cba2: data/headneck_ref.rda; AGPL-3.   180        9
                           Puram et al. 2017 (GSE103322), Smart-seq2; NOT UMI counts
                           (log2(TPM/10+1) in the source; X = TPM rounded): secondary
=========================  ==========================================================  =========  ======

Each file runs through the library's stages in the workflow's order, as
``benchmarks/annotation_robustness.py``'s ``run_pipeline`` does, but from already-called cells
(no cell calling; QC with :func:`milkcells.qc.filter_cells` only with ``--qc``, since its MAD
bounds can take too much of a tiny, pre-filtered set): split by ``obs["sample"]`` -> [QC] ->
merge -> normalise, HVGs, PCA -> Harmony over ``batch`` (= sample) -> kNN, Leiden ->
compartments -> ambient estimate and correction (a no-op without an ambient profile) ->
per-compartment re-clustering and cell typing. Nothing is tuned: every parameter is the library's
default.

The authors' labels are mapped to milkcells' compartments and labels by
``benchmarks/real_labelled_labels.tsv`` (or ``--map``; same columns: ``dataset`` (file stem or
``*``), ``author_label``, ``compartment``, ``cell_type``, ``also_accept``). Printed per dataset:
cells, compartment accuracy (cells whose author label names a compartment; ``unassigned`` is
wrong), recall per compartment, the share of the authors' immune cells called immune, and per
author label: cells, the milkcells target, recall (a call is right when the target is in its
lineage, :func:`milkcells.agreement.label_lineage`), a lenient recall that also accepts
``also_accept``, the share called in the right compartment, the share ``unassigned``, and what the
label was typed as (top ``cell_type`` calls with shares). Headline: macro-F1 of
:func:`milkcells.agreement.compare_labels` over the mapped labels the marker table knows (the
adjusted Rand index is printed last, for reference only). Acceptance bar of the project:
compartment accuracy >= 0.90 and >= 0.90 of the authors' immune cells called immune.

Run (from the repository root)::

    bash benchmarks/fetch_real_labelled.sh                       # builds /work/realdata (R + git needed)
    .venv/bin/python benchmarks/real_labelled.py                 # every /work/realdata/*/*.h5ad
    .venv/bin/python benchmarks/real_labelled.py /work/realdata/breast_scdeconr/breast_scdeconr.h5ad --qc
    .venv/bin/python benchmarks/real_labelled.py my.h5ad --label-column cell_type --map my_map.tsv \
        --out results/real_labelled.tsv
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from milkcells import agreement, markertable, qc
from milkcells.genes import is_mitochondrial

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annotation_robustness import atlas_from_cells  # noqa: E402  (the same stages as the cell-typing benchmark)

HERE = Path(__file__).resolve().parent
DEFAULT_MAP = HERE / "real_labelled_labels.tsv"
DEFAULT_GLOB = os.environ.get("REALDATA", "/work/realdata") + "/*/*.h5ad"
UNASSIGNED = markertable.UNASSIGNED


def load_map(path: Path) -> pd.DataFrame:
    """The label map (comment lines start with ``#``)."""
    table = pd.read_csv(path, sep="\t", comment="#", dtype=str, keep_default_na=False)
    for col in ("dataset", "author_label", "compartment", "cell_type"):
        if col not in table:
            raise SystemExit(f"{path}: column {col!r} missing (columns: {list(table.columns)})")
    if "also_accept" not in table:
        table["also_accept"] = ""
    return table


def map_for(table: pd.DataFrame, dataset: str) -> dict[str, dict]:
    """``{author_label: row}`` for one dataset (its own rows override ``*`` rows)."""
    rows = {}
    for which in ("*", dataset):
        for _, r in table[table["dataset"] == which].iterrows():
            rows[r["author_label"]] = r.to_dict()
    return rows


def read(path: Path, label_column: str) -> ad.AnnData:
    a = ad.read_h5ad(path)
    if label_column not in a.obs:
        raise SystemExit(f"{path}: no obs column {label_column!r} (columns: {list(a.obs.columns)})")
    a.obs["author_label"] = a.obs[label_column].astype(str)
    if "sample" not in a.obs:
        a.obs["sample"] = path.stem
    a.obs["sample"] = a.obs["sample"].astype(str)
    for col in ("donor", "batch"):
        if col not in a.obs:
            a.obs[col] = a.obs["sample"]
    X = a.layers["counts"] if "counts" in a.layers else a.X
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.nnz and not np.allclose(X.data, np.round(X.data)):
        logging.warning("%s: X is not integer counts", path)
    a.X = X
    a.layers.clear()
    a.var["mt"] = is_mitochondrial(a.var_names)
    a.obs_names_make_unique()
    a.var_names_make_unique()
    return a


def run_pipeline(a: ad.AnnData, *, do_qc: bool):
    """The library's stages in the workflow's order, from already-called cells."""
    samples = [a[a.obs["sample"] == s].copy() for s in pd.unique(a.obs["sample"])]
    for s in samples:
        name = str(s.obs["sample"].iloc[0])
        s.uns["milkcells"] = {"ingest": {"params": {"sample": name}}}
    if do_qc:
        samples = [qc.filter_cells(s) for s in samples]
    return atlas_from_cells(samples)


def typed_as(calls: pd.Series, k: int = 2) -> str:
    vc = calls.value_counts(normalize=True)
    return ", ".join(f"{lab} {share:.2f}" for lab, share in vc.iloc[:k].items())


def evaluate(m: ad.AnnData, mapping: dict[str, dict], n_in: int) -> tuple[dict, pd.DataFrame]:
    obs = m.obs
    author = obs["author_label"].astype(str)
    unknown = sorted(set(author) - set(mapping))
    truth_comp = author.map(lambda x: mapping.get(x, {}).get("compartment", "")).astype(str)
    truth_ct = author.map(lambda x: mapping.get(x, {}).get("cell_type", "")).astype(str)
    comp = obs["compartment"].astype(str)
    ct = obs["cell_type"].astype(str)
    has_comp = truth_comp != ""
    res = {
        "n_cells_in": n_in,
        "n_cells": int(m.n_obs),
        "unmapped_labels": unknown,
        "compartment_accuracy": float((comp[has_comp] == truth_comp[has_comp]).mean()) if has_comp.any() else np.nan,
        "compartment_unassigned": float((comp[has_comp] == UNASSIGNED).mean()) if has_comp.any() else np.nan,
    }
    for c in markertable.COMPARTMENTS:
        sel = truth_comp == c
        res[f"recall_{c}"] = float((comp[sel] == c).mean()) if sel.any() else np.nan
        res[f"n_{c}"] = int(sel.sum())
    res["immune_called_immune"] = res["recall_immune"]
    has_ct = truth_ct != ""
    summary, per_target = agreement.compare_labels(
        truth_ct[has_ct].reset_index(drop=True), ct[has_ct].reset_index(drop=True)
    )
    res.update(
        {
            k: summary[k]
            for k in (
                "macro_f1",
                "macro_recall",
                "accuracy",
                "unassigned_share",
                "absent_labels",
                "adjusted_rand_index",
            )
        }
    )
    res["per_target"] = per_target
    # the same, with cells left without a type read at their compartment (the finest label milkcells
    # called): only compartment-level author labels can change
    finest = ct.where(ct != UNASSIGNED, comp)
    s2, per2 = agreement.compare_labels(truth_ct[has_ct].reset_index(drop=True), finest[has_ct].reset_index(drop=True))
    res["macro_f1_finest"] = s2["macro_f1"]
    res["macro_recall_finest"] = s2["macro_recall"]
    if "sample" in obs and obs["sample"].nunique() > 1:
        res["unassigned_by_sample"] = {
            str(k): float(v) for k, v in (ct == UNASSIGNED).groupby(obs["sample"].astype(str)).mean().items()
        }
    lineage = {c: set(agreement.label_lineage(c)) if c != UNASSIGNED else set() for c in set(ct)}
    rows = []
    for label, idx in obs.groupby(author, observed=True).groups.items():
        r = mapping.get(label, {})
        target = r.get("cell_type", "")
        accept = {target} | {x.strip() for x in str(r.get("also_accept", "")).split(",") if x.strip()}
        calls = ct.loc[idx]
        right = calls.map(lambda c, t=target: t in lineage[c]) if target else pd.Series(np.nan, index=idx)
        lenient = calls.map(lambda c, a=accept: bool(lineage[c] & a)) if target else pd.Series(np.nan, index=idx)
        rows.append(
            {
                "author_label": label,
                "n": len(idx),
                "compartment": r.get("compartment", ""),
                "target": target,
                "recall": float(right.mean()) if target else np.nan,
                "lenient_recall": float(lenient.mean()) if target else np.nan,
                "compartment_right": float((comp.loc[idx] == r.get("compartment", "?")).mean())
                if r.get("compartment")
                else np.nan,
                "unassigned": float((calls == UNASSIGNED).mean()),
                "typed_as": typed_as(calls),
                "compartment_called": typed_as(comp.loc[idx], 2),
            }
        )
    per_label = pd.DataFrame(rows).sort_values(["compartment", "n"], ascending=[True, False])
    return res, per_label


def report(name: str, res: dict, per_label: pd.DataFrame, seconds: float) -> None:
    print(f"\n=== {name}: {res['n_cells']} cells ({res['n_cells_in']} in; {seconds:.0f} s)")
    if res["unmapped_labels"]:
        print(f"  author labels not in the map (left out): {res['unmapped_labels']}")
    comp_line = ", ".join(
        f"{c} {res[f'recall_{c}']:.3f} (n={res[f'n_{c}']})" for c in markertable.COMPARTMENTS if res[f"n_{c}"]
    )
    print(
        f"  compartment accuracy {res['compartment_accuracy']:.3f} (unassigned {res['compartment_unassigned']:.3f}); "
        f"recall per compartment: {comp_line}"
    )
    imm = res["immune_called_immune"]
    print(f"  authors' immune cells called immune: {imm:.3f}" if np.isfinite(imm) else "  no immune cells")
    bar = (res["compartment_accuracy"] >= 0.9) and (not np.isfinite(imm) or imm >= 0.9)
    print(
        f"  acceptance bar (compartment accuracy >= 0.90, immune called immune >= 0.90): {'met' if bar else 'NOT met'}"
    )
    print(
        f"  cell types: macro-F1 {res['macro_f1']:.3f}, macro-recall {res['macro_recall']:.3f}, accuracy "
        f"{res['accuracy']:.3f}, unassigned {res['unassigned_share']:.3f}; absent from the table: "
        f"{res['absent_labels'] or 'none'} (ARI {res['adjusted_rand_index']:.3f}, for reference)"
    )
    print(
        f"  macro-F1 with untyped cells read at their compartment (counts for compartment-level labels): "
        f"{res['macro_f1_finest']:.3f} (macro-recall {res['macro_recall_finest']:.3f})"
    )
    if res.get("unassigned_by_sample"):
        print(
            "  cell type unassigned by sample: "
            + ", ".join(f"{k} {v:.2f}" for k, v in res["unassigned_by_sample"].items())
        )
    with pd.option_context("display.width", 250, "display.max_colwidth", 60, "display.max_rows", 200):
        print("  per author label:")
        print(per_label.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        pt = res["per_target"][["label", "level", "n_cells", "recall", "precision", "f1", "most_called"]]
        print("  per milkcells target (compare_labels; macro-F1 is the mean F1 of the known ones):")
        print(pt.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("h5ad", nargs="*", type=Path, help=f"h5ad files (default: {DEFAULT_GLOB})")
    ap.add_argument("--label-column", default="author_label", help="obs column of the authors' labels")
    ap.add_argument("--map", type=Path, default=DEFAULT_MAP, help="label map TSV (default: %(default)s)")
    ap.add_argument("--qc", action="store_true", help="run milkcells.qc.filter_cells per sample first")
    ap.add_argument("--out", type=Path, default=None, help="write the per-label table here (TSV)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log the library's INFO messages")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    paths = args.h5ad or [Path(p) for p in sorted(glob.glob(DEFAULT_GLOB))]
    if not paths:
        raise SystemExit(f"no h5ad given and none at {DEFAULT_GLOB}: run benchmarks/fetch_real_labelled.sh")
    table = load_map(args.map)
    summary_rows, tables = [], []
    for path in paths:
        name = path.stem
        t0 = time.time()
        a = read(path, args.label_column)
        n_in = a.n_obs
        m, _ = run_pipeline(a, do_qc=args.qc)
        res, per_label = evaluate(m, map_for(table, name), n_in)
        report(name, res, per_label, time.time() - t0)
        summary_rows.append(
            {"dataset": name, **{k: v for k, v in res.items() if k not in ("per_target", "unassigned_by_sample")}}
        )
        tables.append(per_label.assign(dataset=name))
    print("\n=== summary")
    cols = [
        "dataset",
        "n_cells",
        "compartment_accuracy",
        "immune_called_immune",
        "recall_epithelial",
        "recall_stromal",
        "macro_f1",
        "macro_f1_finest",
        "unassigned_share",
    ]
    summ = pd.DataFrame(summary_rows)
    print(summ[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pd.concat(tables).to_csv(args.out, sep="\t", index=False, float_format="%.4g")
    return 0


if __name__ == "__main__":
    sys.exit(main())
