"""The curated milk marker table: the compartments, the table's rows, and the marker sets of a dataset.

The table (``data/markers.tsv``, or a user's of the same columns) lists marker
genes per compartment (its core programme) and per cell type and subtype; the
milk transcripts that are ambient in milk (``data/ambient_genes.txt``) are
kept apart, as they are evidence of no population.
"""

from __future__ import annotations

import logging
import os
from importlib.resources import files
from pathlib import Path

import anndata as ad
import pandas as pd

from ._utils import InputError

__all__ = [
    "COMPARTMENTS",
    "MARKER_COLUMNS",
    "UNASSIGNED",
    "ambient_prone_genes",
    "curated_ambient_genes",
    "load_marker_table",
    "marker_sets",
]

log = logging.getLogger(__name__)

#: The compartments of milk cells, in the order of the workflow's outputs.
COMPARTMENTS = ("epithelial", "immune", "stromal")
#: The marker table's columns (``citation``: the literature behind a row; ``source`` before).
MARKER_COLUMNS = (
    "level",
    "compartment",
    "cell_type",
    "ontology_id",
    "ontology_label",
    "positive",
    "citation",
    "parent",
)
UNASSIGNED = "unassigned"


def load_marker_table(path: pd.DataFrame | str | os.PathLike | None = None) -> pd.DataFrame:
    """Read the curated milk marker table (or a user's table of the same columns).

    Parameters
    ----------
    path
        A TSV with the columns of :data:`MARKER_COLUMNS` (``#`` lines are
        comments); ``None`` reads the table shipped with milkcells; a table
        already loaded is returned as it is (so every function taking a
        ``marker_table`` takes a path or a table). A
        ``negative`` column is accepted and ignored (with a warning); a
        ``source`` column (the former name of ``citation``) is read as ``citation``.

    Returns
    -------
    The table, with ``positive`` as lists of gene entries (an entry ``"A|B"``
    means A, or its alias B where A is absent).
    """
    if isinstance(path, pd.DataFrame):
        return path
    src = files("milkcells") / "data" / "markers.tsv" if path is None else Path(path)
    try:
        with src.open("r") as fh:
            df = pd.read_csv(fh, sep="\t", comment="#", dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError("marker table not found", file=path, expected="a TSV marker table") from None
    missing = [c for c in ("level", "compartment", "cell_type", "positive") if c not in df.columns]
    if missing:
        raise InputError(
            f"missing columns {missing}", file=src, field=missing[0], expected=f"columns {list(MARKER_COLUMNS)}"
        )
    if "source" in df.columns and "citation" not in df.columns:  # the column's former name
        df = df.rename(columns={"source": "citation"})
    for col in MARKER_COLUMNS:
        if col not in df.columns:
            df[col] = ""
    if "negative" in df.columns and (df["negative"].str.strip() != "").any():
        log.warning(
            "marker table %s: the 'negative' column is not used (negative markers cannot be made "
            "comparable across sets)",
            src,
        )
    bad_level = set(df["level"]) - {"compartment", "cell_type"}
    if bad_level:
        raise InputError(
            f"unknown level {sorted(bad_level)}", file=src, field="level", expected="'compartment' or 'cell_type'"
        )
    bad_comp = set(df["compartment"]) - set(COMPARTMENTS)
    if bad_comp:
        raise InputError(
            f"unknown compartment {sorted(bad_comp)}",
            file=src,
            field="compartment",
            expected=f"one of {list(COMPARTMENTS)}",
        )
    df["positive"] = [[g.strip() for g in s.split(",") if g.strip()] for s in df["positive"]]
    empty = df.loc[df["positive"].map(len) == 0]
    if len(empty):
        r = empty.iloc[0]
        raise InputError(
            f"no positive markers for {r['cell_type'] or r['compartment']!r}",
            file=src,
            field="positive",
            expected="comma-separated gene symbols",
        )
    ct = df.loc[df["level"] == "cell_type", "cell_type"]
    if (ct == "").any() or ct.duplicated().any():
        raise InputError("cell types must be named and unique", file=src, field="cell_type")
    orphans = set(df["parent"]) - {""} - set(ct)
    if orphans:
        raise InputError(
            f"parent {sorted(orphans)} is not a cell type of the table",
            file=src,
            field="parent",
            expected="the name of another cell_type row",
        )
    return df


def curated_ambient_genes() -> list[str]:
    """The curated list of ambient-prone milk transcripts shipped with milkcells."""
    text = (files("milkcells") / "data" / "ambient_genes.txt").read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def ambient_prone_genes(adata: ad.AnnData, *, ambient_threshold: float = 0.01) -> list[str]:
    """Curated milk transcripts plus genes making up >= ``ambient_threshold`` of a sample's ambient profile."""
    genes = set(curated_ambient_genes())
    cols = [c for c in adata.var.columns if c.startswith("ambient_fraction")]
    for c in cols:
        frac = pd.to_numeric(adata.var[c], errors="coerce").fillna(0.0)
        genes |= set(adata.var_names[frac.to_numpy() >= ambient_threshold])
    return sorted(g for g in genes if g in adata.var_names)


def _resolve(entries: list[str], present: set[str], exclude: set[str]) -> list[str]:
    out = []
    for entry in entries:
        for alt in entry.split("|"):
            if alt in present:
                if alt not in exclude:
                    out.append(alt)
                break
    return out


def marker_sets(
    adata: ad.AnnData,
    *,
    table: pd.DataFrame,
    level: str,
    compartment: str | None = None,
    parent: str | None = None,
    exclude: list[str] | None = None,
    min_genes: int = 2,
) -> dict[str, list[str]]:
    """Marker sets of one level, restricted to genes present in ``adata`` and not excluded.

    Parameters
    ----------
    adata
        Supplies the genes present.
    table
        Marker table from :func:`load_marker_table`.
    level
        ``"compartment"`` or ``"cell_type"``.
    compartment
        Only this compartment's sets.
    parent
        With ``level="cell_type"``: the subtypes of this cell type; ``None``:
        the top-level cell types (no parent).
    exclude
        Genes never used.
    min_genes
        Sets with fewer genes present are left out (and logged).

    Returns
    -------
    ``{label: [genes]}``.
    """
    rows = table[table["level"] == level]
    if compartment is not None:
        rows = rows[rows["compartment"] == compartment]
    if level == "cell_type":
        rows = rows[rows["parent"] == (parent or "")]
    present = set(adata.var_names)
    excl = set(exclude or ())
    out = {}
    for _, r in rows.iterrows():
        label = r["compartment"] if level == "compartment" else r["cell_type"]
        pos = _resolve(r["positive"], present, excl)
        if len(pos) < min_genes:
            log.info("marker set %r skipped: %d of its genes in the data", label, len(pos))
            continue
        out[label] = pos
    return out
