"""Agreement of milkcells' cell types with the authors' labels.

**Mapping the authors' labels.** Author labels (Single Cell Portal metadata, a
CELLxGENE ``cell_type``, or any ``obs`` column) are first mapped to milkcells'
labels with the shipped table ``data/author_labels.tsv``; labels it does not
list are matched case-insensitively to the compartments and cell types of the
marker table and, failing that, kept as they are.

**Comparing at the author's level.** milkcells' labels form a hierarchy, read
at run time from the marker table (:func:`milkcells.markertable.load_marker_table`):
compartment -> cell type -> subtype (a ``cell_type`` row with a ``parent``).
The *lineage* of a label lists it and its ancestors, finest first
(:func:`label_lineage`; ``"CD4 T cell"`` -> ``["CD4 T cell", "T cell",
"immune"]`` when the table makes CD4 T cells a subtype of T cells). Authors
label at different levels (Twigger et al. 2022 ``IM`` is a compartment,
Nyquist et al. 2022 ``T cells`` a cell type), so each call is mapped *up* to
the level of the author's label before comparing: a cell the authors label
``L`` is called correctly when ``L`` is in the lineage of its call. A call
coarser than ``L`` (``T cell`` where the authors say ``CD4 T cell``) is not
correct, nor is ``unassigned``; both are reported per author label
(``coarser_share``, ``unassigned_share``).

**Figures.** Per author label: recall, precision, F1 (:func:`compare_labels`);
over the dataset: the macro-averaged F1 and recall (the headline), accuracy,
and the adjusted Rand index of the two labelings as a secondary figure (it
says whether the partitions look alike, not whether a label is right, and it
penalises labels at different levels).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from .composition import author_label_map
from .markertable import UNASSIGNED, load_marker_table

__all__ = [
    "label_hierarchy",
    "label_lineage",
    "map_author_labels",
    "compare_labels",
    "label_agreement",
]

Markers = pd.DataFrame | str | os.PathLike | None


def _marker_table(marker_table: Markers) -> pd.DataFrame:
    table = load_marker_table(marker_table)
    if "parent" not in table.columns:
        table = table.assign(parent="")
    return table


def label_hierarchy(marker_table: Markers = None) -> dict[str, str]:
    """Each label of the marker table mapped to its parent label.

    Parameters
    ----------
    marker_table
        Marker table or its path (default: the table shipped with milkcells).

    Returns
    -------
    ``{label: parent}``: a subtype's parent is its ``parent`` cell type, a cell
    type's parent is its compartment, a compartment's parent is ``""``.
    """
    table = _marker_table(marker_table)
    parents: dict[str, str] = {}
    parent_col = table["parent"].fillna("").astype(str)
    columns = (table["level"], table["compartment"], table["cell_type"], parent_col)
    for level, comp, cell_type, parent in zip(*columns, strict=True):
        if level == "compartment":
            parents.setdefault(comp, "")
        elif cell_type:
            parents[cell_type] = parent.strip() or comp
    for parent in list(parents.values()):  # compartments named by cell types only
        if parent and parent not in parents:
            parents[parent] = ""
    return parents


def _lineage(label: str, parents: dict[str, str]) -> list[str]:
    out = [label]
    while parents.get(out[-1]) and parents[out[-1]] not in out:  # no cycles, even in a user's table
        out.append(parents[out[-1]])
    return out


def _level(label: str, parents: dict[str, str]) -> str:
    if label not in parents:
        return "absent"
    return {0: "compartment", 1: "cell_type"}.get(len(_lineage(label, parents)) - 1, "subtype")


def label_lineage(label: str, table: Markers = None) -> list[str]:
    """A label and its ancestors in the marker table's hierarchy, finest first.

    Parameters
    ----------
    label
        A compartment, cell type or subtype (or any other label).
    table
        Marker table or its path (default: the table shipped with milkcells).

    Returns
    -------
    ``[label, parent, ..., compartment]``, e.g. ``["CD4 T cell", "T cell",
    "immune"]``; a label the table does not know (``"unassigned"``, a user's own
    label) is its own lineage: ``[label]``.
    """
    return _lineage(str(label), label_hierarchy(table))


def map_author_labels(labels: pd.Series, *, study: str | None = None, marker_table: Markers = None) -> pd.Series:
    """Map author labels to milkcells labels.

    Parameters
    ----------
    labels
        The authors' labels.
    study
        Use only this study's rows of ``data/author_labels.tsv``
        (``nyquist2022``, ``twigger2022``, ``cellxgene``).
    marker_table
        Marker table or its path (default: the shipped one) whose compartments
        and cell types unlisted labels are matched to, case-insensitively.

    Returns
    -------
    The mapped labels (same index); labels matched nowhere are kept as they are.
    """
    table = author_label_map(study)
    mapping = dict(zip(table["author_label"], table["cell_type"], strict=True))
    known = {t.lower(): t for t in label_hierarchy(marker_table)}
    known[UNASSIGNED] = UNASSIGNED

    def one(label: str) -> str:
        if label in mapping:
            return mapping[label]
        return known.get(label.lower(), label)

    return labels.astype(str).map(one)


def _as_labels(values: Iterable) -> pd.Series:
    s = values if isinstance(values, pd.Series) else pd.Series(list(values))
    return s.astype(object).where(s.notna(), UNASSIGNED).astype(str)


def compare_labels(
    truth: pd.Series | Iterable[str],
    calls: pd.Series | Iterable[str],
    *,
    marker_table: Markers = None,
) -> tuple[dict, pd.DataFrame]:
    """Score calls against reference labels, each call mapped up to the reference's level.

    Parameters
    ----------
    truth
        Reference labels (authors' labels already mapped, or a simulation's
        truth), one per cell.
    calls
        milkcells' calls, one per cell (missing calls count as ``unassigned``).
    marker_table
        Marker table or its path giving the label hierarchy (default: the
        shipped one).

    Returns
    -------
    ``(summary, per_label)``.

    ``per_label`` has one row per reference label ``L``: ``label``, ``level``
    (``compartment``, ``cell_type``, ``subtype``, or ``absent`` when the marker
    table does not know ``L``, so milkcells cannot call it), ``n_cells``,
    ``recall`` (share of ``L``'s cells whose call has ``L`` in its lineage;
    ``unassigned`` is never correct), ``precision`` (among the cells whose
    call maps up to ``L``, the share the reference labels ``L`` or a label
    below ``L``; NaN when no call maps to ``L``), ``f1`` (0 when nothing is
    correct), ``n_correct``, ``unassigned_share``, ``coarser_share`` (called
    an ancestor of ``L``) and ``most_called`` (the most frequent raw call).

    ``summary``: ``macro_f1`` and ``macro_recall`` (means over the reference
    labels the table knows), ``accuracy`` (share of those labels' cells called
    correctly), ``n_cells``, ``n_labels``, ``absent_labels`` (the reference
    labels the table does not know), ``absent_share`` (share of cells with
    such a label), ``unassigned_share`` (share of all cells) and
    ``adjusted_rand_index`` (of the reference labels and the raw calls; a
    secondary figure).
    """
    truth = _as_labels(truth)
    calls = _as_labels(calls)
    if len(truth) != len(calls):
        raise ValueError(f"truth and calls differ in length ({len(truth)} vs {len(calls)})")
    parents = label_hierarchy(marker_table)
    conf = pd.crosstab(truth.to_numpy(), calls.to_numpy())
    counts = conf.to_numpy()
    rows, cols = list(conf.index), list(conf.columns)
    lin_call = {c: set(_lineage(c, parents)) if c != UNASSIGNED else set() for c in cols}
    lin_truth = {t: _lineage(t, parents) for t in rows}
    per = []
    for i, label in enumerate(rows):
        n = int(counts[i].sum())
        hit = np.array([label in lin_call[c] for c in cols])
        coarser = np.array([c in lin_truth[label][1:] for c in cols])
        unassigned = np.array([c == UNASSIGNED for c in cols])
        below = np.array([label in lin_truth[t] for t in rows])  # references at or below `label`
        tp = int(counts[i, hit].sum())
        called = int(counts[:, hit].sum())
        tp_prec = int(counts[np.ix_(below, hit)].sum())
        recall = tp / n if n else np.nan
        precision = tp_prec / called if called else np.nan
        f1 = 2 * precision * recall / (precision + recall) if tp and precision + recall > 0 else 0.0
        per.append(
            {
                "label": label,
                "level": _level(label, parents),
                "n_cells": n,
                "recall": recall,
                "precision": precision,
                "f1": f1,
                "n_correct": tp,
                "unassigned_share": counts[i, unassigned].sum() / n if n else np.nan,
                "coarser_share": counts[i, coarser].sum() / n if n else np.nan,
                "most_called": cols[int(counts[i].argmax())],
            }
        )
    columns = [
        "label",
        "level",
        "n_cells",
        "recall",
        "precision",
        "f1",
        "n_correct",
        "unassigned_share",
        "coarser_share",
        "most_called",
    ]
    per_label = pd.DataFrame(per, columns=columns)
    known = per_label[per_label["level"] != "absent"]
    n_known = int(known["n_cells"].sum())
    summary = {
        "macro_f1": float(known["f1"].mean()) if len(known) else np.nan,
        "macro_recall": float(known["recall"].mean()) if len(known) else np.nan,
        "accuracy": float(known["n_correct"].sum() / n_known) if n_known else np.nan,
        "n_cells": int(len(truth)),
        "n_labels": int(len(per_label)),
        "absent_labels": list(per_label.loc[per_label["level"] == "absent", "label"]),
        "absent_share": float(1 - n_known / len(truth)) if len(truth) else np.nan,
        "unassigned_share": float((calls == UNASSIGNED).mean()) if len(calls) else np.nan,
        "adjusted_rand_index": float(adjusted_rand_score(truth, calls)) if len(truth) else np.nan,
    }
    return summary, per_label


def label_agreement(
    adata: ad.AnnData,
    *,
    author_key: str = "author_label",
    key: str = "cell_type",
    study: str | None = None,
    marker_table: Markers = None,
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Compare ``obs[key]`` with the authors' labels in ``obs[author_key]``.

    Cells without an author label are left out; the authors' labels are mapped
    with :func:`map_author_labels` and each call is mapped up to the level of
    the cell's author label (see the module docstring and :func:`compare_labels`).

    Parameters
    ----------
    adata
        Annotated cells.
    author_key
        ``obs`` column of the authors' labels.
    key
        ``obs`` column of milkcells' labels.
    study
        Restrict the label map to one study (``nyquist2022``, ``twigger2022``).
    marker_table
        Marker table or its path giving the label hierarchy (default: the
        shipped one; pass the table the cells were annotated with).

    Returns
    -------
    ``(summary, per_label, confusion)``.
    ``summary``: ``macro_f1`` and ``macro_recall`` (the headline; over the
    author labels the marker table knows), ``accuracy``, ``n_cells``,
    ``n_labels``, ``absent_labels``, ``absent_share``, ``unassigned_share``
    and, last, ``adjusted_rand_index`` (mapped author labels vs raw calls).
    ``per_label``: one row per mapped author label, ``author_label``,
    ``level``, ``n_cells``, ``recall``, ``precision``, ``f1``, ``n_correct``,
    ``unassigned_share``, ``coarser_share`` and ``most_called``.
    ``confusion``: cells per mapped author label (rows) and raw call (columns).
    """
    if author_key not in adata.obs:
        raise ValueError(f"author_key {author_key!r} is not an obs column")
    if key not in adata.obs:
        raise ValueError(f"key {key!r} is not an obs column")
    table = _marker_table(marker_table)
    keep = adata.obs[author_key].notna() & (adata.obs[author_key].astype(str) != "")
    obs = adata.obs.loc[keep]
    truth = map_author_labels(obs[author_key], study=study, marker_table=table)
    calls = _as_labels(obs[key])
    summary, per_label = compare_labels(truth, calls, marker_table=table)
    per_label = per_label.rename(columns={"label": "author_label"})
    confusion = pd.crosstab(truth.rename("author_label"), calls.rename(key))
    return summary, per_label, confusion
