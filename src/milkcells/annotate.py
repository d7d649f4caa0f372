"""Marker-based annotation: compartments first, then cell types within them.

Evidence for a marker set in a cluster is the mean, over the set's genes, of
the cluster's mean log-normalised expression divided by the largest cluster
mean of that gene (floored at ``expr_floor``, so a gene expressed nowhere
cannot make a set look strong). Scores are thus in [0, 1]: 1 when every marker
peaks in that cluster. Negative markers subtract half their score.

Milk-protein transcripts (caseins, lactalbumin, ...) float in every droplet
of a milk sample. They are never taken as evidence: the curated list in
``data/ambient_genes.txt`` and, when empty droplets were seen, every gene that
makes up at least ``ambient_threshold`` of a sample's ambient profile are
removed from all marker sets. So ambient casein cannot make an immune cell
epithelial.

A cluster gets the best-scoring label when its score is at least
``min_score`` and beats the runner-up by ``min_margin``; otherwise it is
``unassigned`` (never forced).
"""

from __future__ import annotations

import logging
import os
from importlib.resources import files
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._utils import InputError, record_params

__all__ = [
    "COMPARTMENTS",
    "MARKER_COLUMNS",
    "load_marker_table",
    "curated_ambient_genes",
    "ambient_prone_genes",
    "marker_sets",
    "score_marker_sets",
    "assign_labels",
    "annotate_compartments",
    "annotate_cell_types",
]

log = logging.getLogger(__name__)

COMPARTMENTS = ("epithelial", "immune", "stromal")
MARKER_COLUMNS = (
    "level", "compartment", "cell_type", "ontology_id", "ontology_label", "positive", "negative", "source", "parent",
)
UNASSIGNED = "unassigned"


def load_marker_table(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read the curated milk marker table (or a user's table of the same columns).

    Parameters
    ----------
    path
        A TSV with the columns of :data:`MARKER_COLUMNS` (``#`` lines are
        comments); ``None`` reads the table shipped with milkcells.

    Returns
    -------
    The table, with ``positive`` and ``negative`` as lists of gene entries
    (an entry ``"A|B"`` means A, or its alias B where A is absent).
    """
    src = files("milkcells") / "data" / "markers.tsv" if path is None else Path(path)
    try:
        with src.open("r") as fh:
            df = pd.read_csv(fh, sep="\t", comment="#", dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError("marker table not found", file=path, expected="a TSV marker table") from None
    missing = [c for c in ("level", "compartment", "cell_type", "positive") if c not in df.columns]
    if missing:
        raise InputError(f"missing columns {missing}", file=src, field=missing[0],
                         expected=f"columns {list(MARKER_COLUMNS)}")
    for col in MARKER_COLUMNS:
        if col not in df.columns:
            df[col] = ""
    bad_level = set(df["level"]) - {"compartment", "cell_type"}
    if bad_level:
        raise InputError(f"unknown level {sorted(bad_level)}", file=src, field="level",
                         expected="'compartment' or 'cell_type'")
    bad_comp = set(df["compartment"]) - set(COMPARTMENTS)
    if bad_comp:
        raise InputError(f"unknown compartment {sorted(bad_comp)}", file=src, field="compartment",
                         expected=f"one of {list(COMPARTMENTS)}")
    for col in ("positive", "negative"):
        df[col] = [[g.strip() for g in s.split(",") if g.strip()] for s in df[col]]
    empty = df.loc[df["positive"].map(len) == 0]
    if len(empty):
        r = empty.iloc[0]
        raise InputError(f"no positive markers for {r['cell_type'] or r['compartment']!r}", file=src,
                         field="positive", expected="comma-separated gene symbols")
    ct = df.loc[df["level"] == "cell_type", "cell_type"]
    if (ct == "").any() or ct.duplicated().any():
        raise InputError("cell types must be named and unique", file=src, field="cell_type")
    orphans = set(df["parent"]) - {""} - set(ct)
    if orphans:
        raise InputError(f"parent {sorted(orphans)} is not a cell type of the table", file=src, field="parent",
                         expected="the name of another cell_type row")
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
) -> dict[str, dict[str, list[str]]]:
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
        With ``level="cell_type"``: only this compartment's cell types.
    parent
        With ``level="cell_type"``: the subtypes of this cell type; ``None``:
        the top-level cell types (no parent).
    exclude
        Genes never used (for example :func:`ambient_prone_genes`).
    min_genes
        Sets with fewer positive genes present are left out (and logged).

    Returns
    -------
    ``{label: {"positive": [...], "negative": [...]}}``.
    """
    rows = table[table["level"] == level]
    if compartment is not None:
        rows = rows[rows["compartment"] == compartment]
    if level == "cell_type" and "parent" in rows:
        rows = rows[rows["parent"] == (parent or "")]
    present = set(adata.var_names)
    excl = set(exclude or ())
    out = {}
    for _, r in rows.iterrows():
        label = r["compartment"] if level == "compartment" else r["cell_type"]
        pos = _resolve(r["positive"], present, excl)
        neg = _resolve(r["negative"], present, excl)
        if len(pos) < min_genes:
            log.info("marker set %r skipped: %d of its genes in the data", label, len(pos))
            continue
        out[label] = {"positive": pos, "negative": neg}
    return out


def _columns(adata: ad.AnnData, genes: list[str], layer: str | None = None) -> np.ndarray:
    """Log-normalised expression of ``genes``: ``X``, or a counts ``layer`` normalised on the fly."""
    if layer is None:
        X = adata[:, genes].X
        return X.toarray() if sp.issparse(X) else np.asarray(X)
    counts = adata.layers[layer]
    size = np.asarray(counts.sum(axis=1)).ravel()
    cols = counts[:, adata.var_names.get_indexer(genes)]
    cols = cols.toarray() if sp.issparse(cols) else np.asarray(cols)
    return np.log1p(cols / np.maximum(size, 1)[:, None] * 1e4)


def score_marker_sets(
    adata: ad.AnnData,
    sets: dict[str, dict[str, list[str]]],
    *,
    groupby: str,
    expr_floor: float = 0.5,
    layer: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score each marker set per cell and per group (log-normalised ``X``, or a counts ``layer``).

    Returns
    -------
    ``(cell_scores, group_scores)``: cells x sets and groups x sets.
    """
    genes = sorted({g for s in sets.values() for g in s["positive"] + s["negative"]})
    groups = adata.obs[groupby].astype("category")
    cats = list(groups.cat.categories)
    if not genes or not sets:
        return (pd.DataFrame(index=adata.obs_names), pd.DataFrame(index=pd.Index(cats, name=groupby)))
    X = _columns(adata, genes, layer)
    onehot = np.zeros((adata.n_obs, len(cats)))
    codes = groups.cat.codes.to_numpy()
    onehot[np.arange(adata.n_obs)[codes >= 0], codes[codes >= 0]] = 1
    sizes = np.maximum(onehot.sum(0), 1)
    means = (onehot.T @ X) / sizes[:, None]  # groups x genes
    scale = np.maximum(means.max(0), expr_floor)
    cell_rel = np.clip(X / scale, 0, 2)
    grp_rel = means / scale
    gi = {g: i for i, g in enumerate(genes)}
    cell_scores, grp_scores = {}, {}
    for label, s in sets.items():
        p = [gi[g] for g in s["positive"]]
        n = [gi[g] for g in s["negative"]]
        cs = cell_rel[:, p].mean(1)
        gs = grp_rel[:, p].mean(1)
        if n:
            cs = cs - 0.5 * cell_rel[:, n].mean(1)
            gs = gs - 0.5 * grp_rel[:, n].mean(1)
        cell_scores[label] = cs
        grp_scores[label] = gs
    return (
        pd.DataFrame(cell_scores, index=adata.obs_names),
        pd.DataFrame(grp_scores, index=pd.Index(cats, name=groupby)),
    )


def assign_labels(scores: pd.DataFrame, *, min_score: float = 0.3, min_margin: float = 0.1) -> pd.DataFrame:
    """Best label per row of a score table, ``unassigned`` when weak or ambiguous.

    Returns a table with ``label``, ``score``, ``runner_up``, ``margin`` and
    ``confidence`` (the margin relative to the score, in [0, 1]).
    """
    if scores.shape[1] == 0:
        return pd.DataFrame({"label": UNASSIGNED, "score": np.nan, "runner_up": "", "margin": np.nan,
                             "confidence": 0.0}, index=scores.index)
    vals = scores.to_numpy()
    order = np.argsort(-vals, axis=1)
    top = vals[np.arange(len(vals)), order[:, 0]]
    if vals.shape[1] > 1:
        second = vals[np.arange(len(vals)), order[:, 1]]
        runner = np.asarray(scores.columns)[order[:, 1]]
    else:
        second = np.zeros(len(vals))
        runner = np.array([""] * len(vals))
    margin = top - second
    label = np.asarray(scores.columns)[order[:, 0]].astype(object)
    weak = (top < min_score) | (margin < min_margin)
    label[weak] = UNASSIGNED
    conf = np.clip(margin / np.maximum(top, 1e-9), 0, 1)
    return pd.DataFrame({"label": label, "score": top, "runner_up": runner, "margin": margin,
                         "confidence": conf}, index=scores.index)


def _annotate(
    adata: ad.AnnData,
    sets: dict,
    *,
    groupby: str,
    key: str,
    min_score: float,
    min_margin: float,
    expr_floor: float,
    cell_override_margin: float | None = None,
    layer: str | None = None,
) -> pd.DataFrame:
    cell_scores, grp_scores = score_marker_sets(adata, sets, groupby=groupby, expr_floor=expr_floor, layer=layer)
    calls = assign_labels(grp_scores, min_score=min_score, min_margin=min_margin)
    grp = adata.obs[groupby].astype(str).to_numpy()
    calls.index = calls.index.astype(str)
    label = calls.loc[grp, "label"].to_numpy()
    conf = calls.loc[grp, "confidence"].to_numpy().astype(float)
    n_override = 0
    if cell_scores.shape[1]:
        vals = cell_scores.to_numpy()
        cols = np.asarray(cell_scores.columns)
        cell_best = cols[np.argmax(vals, axis=1)]
        best = vals.max(1)
        if cell_override_margin is not None:
            # a cell whose own evidence clearly contradicts its cluster's call
            # (a few stromal cells inside a tumour cluster, say) takes its own label
            idx = {c: i for i, c in enumerate(cols)}
            own = np.array([vals[i, idx[lab]] if lab in idx else -np.inf for i, lab in enumerate(label)])
            override = (cell_best != label) & (best >= min_score + cell_override_margin) & (
                best - own >= cell_override_margin
            )
            n_override = int(override.sum())
            label = np.where(override, cell_best, label)
            second = np.sort(vals, axis=1)[:, -2] if vals.shape[1] > 1 else np.zeros(len(vals))
            conf = np.where(override, np.clip((best - second) / np.maximum(best, 1e-9), 0, 1) * 0.5, conf)
        conf = np.where(cell_best == label, conf, conf * 0.5)
        for c in cell_scores.columns:
            adata.obs[f"{key}_score_{c.replace(' ', '_')}"] = cell_scores[c].to_numpy().astype(np.float32)
    conf = np.where(label == UNASSIGNED, 0.0, conf)
    adata.obs[key] = pd.Categorical(label)
    adata.obs[f"{key}_confidence"] = conf.astype(np.float32)
    table = pd.concat([calls, grp_scores.set_axis(calls.index)], axis=1)
    table.attrs["n_cell_overrides"] = n_override
    table.index.name = groupby
    table.insert(0, "n_cells", adata.obs[groupby].astype(str).value_counts().reindex(table.index).fillna(0).astype(int))
    return table


def _subtype(
    adata: ad.AnnData, parent: str, children: dict, *, groupby: str, min_score: float, min_margin: float,
    expr_floor: float, layer: str | None,
) -> None:
    """Refine ``parent`` cells into its subtypes: Leiden within the parent's clusters, then marker scores.

    Cells whose subcluster has no clear subtype keep the parent label.
    """
    import scanpy as sc

    clusters = sorted(set(adata.obs.loc[adata.obs["cell_type"].astype(str) == parent, groupby].astype(str)))
    key = f"_{groupby}_sub"
    if "connectivities" in adata.obsp:
        adata.obs[groupby] = adata.obs[groupby].astype(str).astype("category")
        sc.tl.leiden(adata, resolution=1.0, restrict_to=(groupby, clusters), key_added=key, flavor="igraph",
                     n_iterations=2, directed=False, random_state=0)
    else:
        adata.obs[key] = adata.obs[groupby].astype(str)
    mask = adata.obs["cell_type"].astype(str).to_numpy() == parent
    sub = adata[mask]
    _, grp = score_marker_sets(sub, children, groupby=key, expr_floor=expr_floor, layer=layer)
    calls = assign_labels(grp, min_score=min_score, min_margin=min_margin)
    calls.index = calls.index.astype(str)
    label = calls.loc[sub.obs[key].astype(str).to_numpy(), "label"].to_numpy().astype(object)
    label[label == UNASSIGNED] = parent
    new = adata.obs["cell_type"].astype(str).to_numpy().astype(object)
    new[mask] = label
    adata.obs["cell_type"] = new
    del adata.obs[key]
    log.info("%s subtypes: %s", parent, pd.Series(label).value_counts().to_dict())


def annotate_compartments(
    adata: ad.AnnData,
    *,
    groupby: str = "leiden",
    markers: pd.DataFrame | str | os.PathLike | None = None,
    min_score: float = 0.3,
    min_margin: float = 0.1,
    expr_floor: float = 0.5,
    ambient_threshold: float = 0.01,
    cell_override_margin: float | None = 0.5,
) -> pd.DataFrame:
    """Call each cluster's compartment: epithelial, immune, stromal or unassigned.

    Parameters
    ----------
    adata
        Clustered cells, log-normalised ``X``.
    groupby
        ``obs`` column of the clusters.
    markers
        Marker table or its path (default: the shipped milk table).
    min_score, min_margin
        A cluster is ``unassigned`` unless its best compartment scores at
        least ``min_score`` and ``min_margin`` above the runner-up.
    expr_floor
        Floor of the per-gene scale (log-normalised units).
    ambient_threshold
        Genes at least this share of a sample's ambient profile are not used.
    cell_override_margin
        A cell whose own best compartment scores at least ``min_score +
        cell_override_margin`` and beats its cluster's compartment by this
        margin (cell-level scores) takes its own compartment; ``None``
        disables this.

    Returns
    -------
    The per-cluster table (also in ``uns["milkcells"]["compartment"]["clusters"]``).
    Sets ``obs["compartment"]``, ``obs["compartment_confidence"]`` and
    ``obs["compartment_score_<compartment>"]``.
    """
    table = markers if isinstance(markers, pd.DataFrame) else load_marker_table(markers)
    excluded = ambient_prone_genes(adata, ambient_threshold=ambient_threshold)
    sets = marker_sets(adata, table=table, level="compartment", exclude=excluded)
    res = _annotate(adata, sets, groupby=groupby, key="compartment", min_score=min_score,
                    min_margin=min_margin, expr_floor=expr_floor, cell_override_margin=cell_override_margin)
    record_params(adata, "compartment", dict(groupby=groupby, min_score=min_score, min_margin=min_margin,
                                             expr_floor=expr_floor, ambient_threshold=ambient_threshold,
                                             cell_override_margin=cell_override_margin))
    adata.uns["milkcells"]["compartment"]["n_cell_overrides"] = res.attrs["n_cell_overrides"]
    adata.uns["milkcells"]["compartment"]["ambient_excluded"] = excluded
    adata.uns["milkcells"]["compartment"]["clusters"] = res.reset_index()
    log.info("compartments: %s", adata.obs["compartment"].value_counts().to_dict())
    return res


def annotate_cell_types(
    adata: ad.AnnData,
    *,
    compartment: str,
    groupby: str = "leiden_compartment",
    markers: pd.DataFrame | str | os.PathLike | None = None,
    min_score: float = 0.3,
    min_margin: float = 0.05,
    expr_floor: float = 0.5,
    ambient_threshold: float = 0.01,
    layer: str | None = None,
) -> pd.DataFrame:
    """Call each (sub)cluster's cell type among the types of one compartment.

    Parameters
    ----------
    adata
        Cells of one compartment, clustered, log-normalised ``X``.
    compartment
        Whose cell-type marker sets to use.
    groupby
        ``obs`` column of the (sub)clusters.
    markers
        Marker table or its path (default: the shipped milk table).
    min_score, min_margin, expr_floor, ambient_threshold
        As in :func:`annotate_compartments`.
    layer
        A counts layer to take the evidence from (for example
        ``"ambient_corrected"`` from :func:`milkcells.ambient.correct_ambient`);
        ``None``: log-normalised ``X``.

    Returns
    -------
    The per-cluster table. Sets ``obs["cell_type"]``,
    ``obs["cell_type_broad"]`` (the type before subtyping),
    ``obs["cell_type_confidence"]`` and ``obs["cell_type_score_<type>"]``.
    Types with subtypes in the table (``parent`` column; for example CD4 and
    CD8 T cells) are refined within their cells: Leiden on the type's own
    clusters, then the subtypes' marker scores; where no subtype is clear,
    the cell keeps the type's label.
    """
    if compartment not in COMPARTMENTS:
        raise ValueError(f"compartment must be one of {list(COMPARTMENTS)}, but {compartment!r} was passed.")
    table = markers if isinstance(markers, pd.DataFrame) else load_marker_table(markers)
    excluded = ambient_prone_genes(adata, ambient_threshold=ambient_threshold)
    sets = marker_sets(adata, table=table, level="cell_type", compartment=compartment, exclude=excluded)
    res = _annotate(adata, sets, groupby=groupby, key="cell_type", min_score=min_score,
                    min_margin=min_margin, expr_floor=expr_floor, layer=layer)
    adata.obs["cell_type_broad"] = adata.obs["cell_type"].astype(str)
    # on ambient-corrected counts, milk transcripts are evidence again (e.g. CSN1S1 macrophages)
    sub_excluded = [] if layer == "ambient_corrected" else excluded
    for parent in sorted(set(table.loc[table["parent"] != "", "parent"]) & set(adata.obs["cell_type"].astype(str))):
        children = marker_sets(adata, table=table, level="cell_type", compartment=compartment, parent=parent,
                               exclude=sub_excluded)
        if len(children) < 2:
            continue
        _subtype(adata, parent, children, groupby=groupby, min_score=min_score, min_margin=min_margin,
                 expr_floor=expr_floor, layer=layer)
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str).astype("category")
    record_params(adata, "cell_type", dict(compartment=compartment, groupby=groupby, min_score=min_score,
                                           min_margin=min_margin, expr_floor=expr_floor,
                                           ambient_threshold=ambient_threshold, layer=layer))
    adata.uns["milkcells"]["cell_type"]["clusters"] = res.reset_index()
    return res
