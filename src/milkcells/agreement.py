"""Agreement of milkcells' cell types with the authors' labels.

Author labels (Single Cell Portal metadata, a CELLxGENE ``cell_type``, or any
``obs`` column) are first mapped to milkcells' labels with the shipped table
``data/author_labels.tsv`` (labels it does not list are matched
case-insensitively to milkcells' cell types and, failing that, kept as they
are). Then: the adjusted Rand index of the two labelings, per-label precision
and recall, and the confusion matrix.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from .annotate import load_marker_table
from .composition import author_label_map

__all__ = ["map_author_labels", "label_agreement"]


def map_author_labels(labels: pd.Series, *, study: str | None = None) -> pd.Series:
    """Map author labels to milkcells cell types (see the module docstring)."""
    table = author_label_map(study)
    mapping = dict(zip(table["author_label"], table["cell_type"], strict=True))
    types = load_marker_table()
    known = {t.lower(): t for t in types.loc[types["level"] == "cell_type", "cell_type"]}
    known.update({c: c for c in ("epithelial", "immune", "stromal", "unassigned")})

    def one(label: str) -> str:
        if label in mapping:
            return mapping[label]
        return known.get(label.lower(), label)

    return labels.astype(str).map(one)


def label_agreement(
    adata: ad.AnnData,
    *,
    author_key: str = "author_label",
    key: str = "cell_type",
    study: str | None = None,
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Compare ``obs[key]`` with the authors' labels in ``obs[author_key]``.

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

    Returns
    -------
    ``(summary, per_label, confusion)``: the summary holds ``n_cells``,
    ``adjusted_rand_index``, ``accuracy`` (mapped label equals the call) and
    ``macro_recall``; ``per_label`` has one row per mapped author label with
    ``n_cells``, ``precision``, ``recall`` and the most frequent call;
    ``confusion`` counts cells per mapped author label (rows) and call (columns).
    """
    if author_key not in adata.obs:
        raise ValueError(f"author_key {author_key!r} is not an obs column")
    keep = adata.obs[author_key].notna() & (adata.obs[author_key].astype(str) != "")
    obs = adata.obs.loc[keep]
    truth = map_author_labels(obs[author_key], study=study)
    calls = obs[key].astype(str)
    confusion = pd.crosstab(truth.rename("author_label"), calls.rename(key))
    rows = []
    for label in confusion.index:
        n = int(confusion.loc[label].sum())
        tp = int(confusion.loc[label, label]) if label in confusion.columns else 0
        called = int(confusion[label].sum()) if label in confusion.columns else 0
        rows.append({"author_label": label, "n_cells": n, "precision": tp / called if called else np.nan,
                     "recall": tp / n if n else np.nan, "most_called": confusion.loc[label].idxmax()})
    per_label = pd.DataFrame(rows)
    summary = {
        "n_cells": int(len(obs)),
        "adjusted_rand_index": float(adjusted_rand_score(truth, calls)),
        "accuracy": float((truth.to_numpy() == calls.to_numpy()).mean()),
        "macro_recall": float(per_label["recall"].mean()),
    }
    return summary, per_label, confusion
