"""Marker-based annotation: compartment -> cell type -> subtype, each with a confidence.

**Evidence per cell, against all cells.** For every marker gene, milkcells
takes its normalised expression in each cell (counts per 10,000, on the
linear scale, where a marker at 30 % of its owner's level stays at 30 %; the
log would put it at ~70 %) relative to the gene's highest *local* mean over
all cells of the dataset (expression averaged over each cell and its kNN
neighbours, at least ``expm1(expr_floor)``), capped at 2 for one cell. A
marker set's score in a cell is the mean of its genes' relative expression:
about 1 where the whole programme is at the level of the population that
expresses it most, the same for every set however rare its population, and
independent of how the cells happen to be clustered (a one-cluster partition
scores exactly as a fine one). Negative markers are not used (they cannot be
made comparable across sets once milk transcripts are excluded).

**Cell types: shared markers are not evidence.** Related types share canonical
markers at a fraction of their owner's level (a CD8 T cell's NK genes, one
macrophage subtype's genes in the other). For cell types and subtypes each
gene's relative expression is averaged over the cluster (the label and the
margin) and over each cell's kNN neighbourhood (purity, per-cell calls), and
its first ``shared_level`` (20 %) of the top local mean is discounted before
the labels compete; the no-call baseline ``min_score`` is checked on the
undiscounted level (shallow cells show less of every programme). Only
programmes a cluster shows at ``min_relative`` (half) of the level of the
cluster showing them most compete (none: status ``shared``, as for a type the
table does not know); a type with subtypes is scored on its genes with those
of its best-fitting subtype.

**Calls per cluster, from the distribution of its cells.** Each cell's scores
are averaged over its neighbours in the kNN graph (denoising sparse cells).
A cluster takes a label when (1) the cluster's mean score of the label is at
least ``min_score`` (the "no call" baseline every label must beat), (2) the
label leads the runner-up by ``min_margin`` of its score, and (3) at least
``min_purity`` of the cluster's informative cells have that label as their own
best set. A cluster that fails (3) mixes populations: its cells are called one by one
from their smoothed scores under the same thresholds (so a cluster of mixed
immune types never gets one label). A cluster failing (1) is ``unassigned``;
one failing (2) is too at the cell-type level (it may be a type the table does
not know), while at the compartment level, where every cell has one, its cells
are called one by one. Labels are never forced.

**The hierarchy.** A compartment's evidence in a cell is the geometric mean of
its core set (EPCAM/keratins, PTPRC, ...) and its best cell-type set, so a
population needs both: smooth-muscle genes of basal cells in a fibroblast make
no epithelium without keratins, and a population weak in the core but clear in
its type (pericytes, neutrophils) still lands in its compartment. The price: a
type the table does not know (mast cells) may get no compartment. Cell types are called within a compartment on the
ambient-corrected counts, and types with subtypes in the table (``parent``)
are refined within their own cells. ``obs`` gets ``compartment``,
``cell_type_broad`` and ``cell_type`` (the finest label called), each with a
``*_confidence`` (the smoothed lead of the label over the best other set,
relative to its score; 0 when unassigned).

**Milk transcripts** (caseins, lactalbumin, the curated list in
``data/ambient_genes.txt``, and every gene making up at least
``ambient_threshold`` of a sample's ambient RNA) are evidence at no level,
except in a cell whose counts of that gene significantly exceed its expected
ambient counts (one-sided Poisson test at ``milk_alpha`` against
``rho * n * a``, :mod:`milkcells.ambient`). Before the ambient estimate (the
compartment call) they are not evidence at all.
"""

from __future__ import annotations

import logging
import os

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._utils import record_params
from .markertable import (
    COMPARTMENTS,
    UNASSIGNED,
    ambient_prone_genes,
    load_marker_table,
    marker_sets,
)

__all__ = [
    "gene_scale",
    "marker_gene_scale",
    "milk_excess",
    "relative_expression",
    "score_cells",
    "smooth_scores",
    "call_groups",
    "assign_labels",
    "annotate_compartments",
    "annotate_cell_types",
]

log = logging.getLogger(__name__)

#: A single cell's relative expression of a gene is capped here, so one outlier cannot carry a set.
_CAP = 2.0


def _columns(adata: ad.AnnData, genes: list[str], layer: str | None = None) -> np.ndarray:
    """Normalised expression of ``genes`` on the linear scale (counts per 10,000; dense).

    From log-normalised ``X`` (``expm1``), or from a counts ``layer`` normalised on the fly. Evidence is
    measured on the linear scale because the log compresses the very differences that tell sibling types
    apart (a marker at 30 % of its owner's level sits at ~70 % of it after log1p).
    """
    idx = adata.var_names.get_indexer(genes)
    if layer is None:
        X = adata.X[:, idx]
        X = X.toarray() if sp.issparse(X) else np.asarray(X)
        return np.expm1(X.astype(np.float32))
    counts = adata.layers[layer]
    size = np.asarray(counts.sum(axis=1)).ravel()
    cols = counts[:, idx]
    cols = cols.toarray() if sp.issparse(cols) else np.asarray(cols)
    return (cols / np.maximum(size, 1)[:, None] * 1e4).astype(np.float32)


def gene_scale(
    adata: ad.AnnData,
    genes: list[str],
    *,
    layer: str | None = None,
    expr_floor: float = 1.0,
    known: pd.Series | None = None,
) -> pd.Series:
    """Each gene's highest *local* mean expression over all cells of ``adata``.

    With a kNN graph (``obsp["connectivities"]``), each cell's expression is
    averaged with its neighbours' and the gene's scale is the highest such
    local mean: the level of the gene in the population that expresses it
    most, whatever the clustering. Without a graph, the 90th percentile of
    the gene's non-zero single-cell values. Either way at least ``expm1(expr_floor)`` (``expr_floor`` in log-normalised units), so a
    gene seen only as stray single UMIs cannot look fully expressed.

    ``known``: scales measured beforehand on all cells of the dataset (for example
    ``tables/gene_scale.tsv`` from :func:`marker_gene_scale`); its genes are taken from it, the
    others measured on ``adata``.

    Returns
    -------
    The scale per gene (counts per 10,000), indexed by gene.
    """
    if known is not None:
        todo = [g for g in genes if g not in known.index]
        measured = gene_scale(adata, todo, layer=layer, expr_floor=expr_floor) if todo else pd.Series(dtype=float)
        return pd.concat([known.reindex([g for g in genes if g in known.index]).astype(float), measured]).reindex(genes)
    X = _columns(adata, genes, layer)
    floor = float(np.expm1(expr_floor))
    if "connectivities" in adata.obsp and adata.n_obs >= 3:
        out = np.maximum(_smooth(adata, X).max(axis=0), floor)
    else:
        out = np.full(len(genes), floor, dtype=float)
        for j in range(len(genes)):
            nz = X[:, j][X[:, j] > 0]
            if len(nz):
                out[j] = max(float(np.quantile(nz, 0.9)), floor)
    return pd.Series(np.asarray(out, dtype=float), index=pd.Index(genes))


def marker_gene_scale(
    adata: ad.AnnData,
    *,
    markers: pd.DataFrame | str | os.PathLike | None = None,
    layer: str | None = "ambient_corrected",
    expr_floor: float = 1.0,
) -> pd.Series:
    """:func:`gene_scale` of every gene of the marker table present in ``adata``, on all its cells.

    ``layer`` is used when ``adata`` has it (else log-normalised ``X``), as the cell typing does.
    The workflow measures this once on the whole atlas and hands it to each compartment's
    re-clustering (``scale=``), which then needs only that compartment's cells in memory.
    """
    table = markers if isinstance(markers, pd.DataFrame) else load_marker_table(markers)
    present = set(adata.var_names)
    genes = sorted({alt for entries in table["positive"] for entry in entries for alt in entry.split("|")} & present)
    return gene_scale(adata, genes, layer=layer if layer in adata.layers else None, expr_floor=expr_floor)


def _smooth(adata: ad.AnnData, values: np.ndarray) -> np.ndarray:
    """Average each cell's values with its kNN neighbours' (the cell itself included)."""
    W = sp.csr_matrix(adata.obsp["connectivities"], dtype=np.float64)
    W = W + sp.identity(adata.n_obs, format="csr")
    w = np.asarray(W.sum(axis=1)).ravel()
    return np.asarray(sp.diags(1.0 / w) @ W @ values)


def milk_excess(
    adata: ad.AnnData,
    genes: list[str],
    *,
    alpha: float = 1e-3,
    sample_key: str = "sample",
    layer: str = "counts",
) -> np.ndarray:
    """Cells whose counts of each gene significantly exceed their expected ambient counts.

    The expected ambient counts of gene g in cell c are ``rho_c * n_c * a_g``
    (``obs["ambient_contamination"]`` and ``var["ambient_fraction_<sample>"]``
    from :func:`milkcells.ambient.estimate_contamination`); a count is in
    excess when the one-sided Poisson p-value is below ``alpha``. Without an
    ambient estimate nothing is in excess.

    Returns
    -------
    Boolean array, cells x genes.
    """
    from scipy.stats import poisson

    out = np.zeros((adata.n_obs, len(genes)), dtype=bool)
    if not genes or "ambient_contamination" not in adata.obs or layer not in adata.layers:
        return out
    counts = adata.layers[layer]
    n = np.asarray(counts.sum(axis=1)).ravel()
    idx = adata.var_names.get_indexer(genes)
    y = counts[:, idx]
    y = y.toarray() if sp.issparse(y) else np.asarray(y)
    rho = adata.obs["ambient_contamination"].to_numpy(dtype=float)
    samples = adata.obs[sample_key].astype(str).to_numpy() if sample_key in adata.obs else np.array([""] * adata.n_obs)
    for s in pd.unique(samples):
        col = f"ambient_fraction_{s}"
        if col not in adata.var:
            continue
        a = pd.to_numeric(adata.var[col], errors="coerce").fillna(0.0).to_numpy(dtype=float)[idx]
        rows = (samples == s) & np.isfinite(rho)
        mu = (rho[rows] * n[rows])[:, None] * a[None, :]
        # P(Y >= y) = sf(y - 1); a gene absent from the ambient profile is in excess when seen at all
        p = poisson.sf(y[rows] - 1, np.maximum(mu, 1e-12))
        out[rows] = (p < alpha) & (y[rows] > 0)
    return out


def score_cells(
    adata: ad.AnnData,
    sets: dict[str, list[str]],
    *,
    layer: str | None = None,
    scale: pd.Series | None = None,
    expr_floor: float = 1.0,
    evidence_mask: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Score each marker set in each cell: mean relative expression of its genes, in [0, 1].

    Parameters
    ----------
    adata
        Cells with log-normalised ``X`` (or a counts ``layer``).
    sets
        ``{label: [genes]}`` from :func:`marker_sets`.
    layer
        Counts layer to take the evidence from; ``None``: ``X``.
    scale
        Per-gene scale (:func:`gene_scale`), computed on the reference cells
        (all cells of the dataset); ``None``: computed on ``adata``.
    expr_floor
        Floor of the scale when it is computed here.
    evidence_mask
        ``{gene: boolean per cell}``: where given, the gene counts only in the
        cells marked True (milk transcripts in excess of their ambient counts).

    Returns
    -------
    Cells x sets.
    """
    genes = sorted({g for s in sets.values() for g in s})
    if not genes:
        return pd.DataFrame(index=adata.obs_names)
    rel = relative_expression(adata, genes, layer=layer, scale=scale, expr_floor=expr_floor,
                              evidence_mask=evidence_mask)
    return pd.DataFrame(_set_means(rel, genes, sets, 0.0), index=adata.obs_names)


def relative_expression(
    adata: ad.AnnData,
    genes: list[str],
    *,
    layer: str | None = None,
    scale: pd.Series | None = None,
    expr_floor: float = 1.0,
    evidence_mask: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Each cell's expression of each gene relative to the gene's scale (:func:`gene_scale`), capped at 2.

    ``evidence_mask`` as in :func:`score_cells`. Returns cells x genes (float).
    """
    X = _columns(adata, genes, layer)
    if scale is None:
        scale = gene_scale(adata, genes, layer=layer, expr_floor=expr_floor)
    s = scale.reindex(genes).fillna(float(np.expm1(expr_floor))).to_numpy(dtype=np.float32)
    rel = np.minimum(X / s[None, :], _CAP)
    for j, g in enumerate(genes):
        if evidence_mask is not None and g in evidence_mask:
            rel[~evidence_mask[g], j] = 0.0
    return rel


def _set_means(rel: np.ndarray, genes: list[str], sets: dict[str, list[str]], shared_level: float) -> dict:
    """Per row of ``rel`` (cells, neighbourhoods or groups x ``genes``): each set's mean evidence.

    Each gene's relative expression up to ``shared_level`` is not evidence:
    ``(r - shared_level) / (1 - shared_level)``, clipped at 0.
    """
    if not 0 <= shared_level < 1:
        raise ValueError(f"shared_level must be in [0, 1), but {shared_level!r} was passed.")
    if shared_level > 0:
        rel = np.maximum(rel - shared_level, 0.0) / (1.0 - shared_level)
    gi = {g: i for i, g in enumerate(genes)}
    return {label: rel[:, [gi[g] for g in gs]].mean(1) for label, gs in sets.items()}


def smooth_scores(adata: ad.AnnData, scores: pd.DataFrame) -> pd.DataFrame:
    """Average each cell's scores with its neighbours' (``obsp["connectivities"]``, the cell itself included)."""
    if "connectivities" not in adata.obsp or scores.shape[1] == 0 or adata.n_obs < 3:
        return scores
    sm = _smooth(adata, scores.to_numpy(dtype=np.float64))
    return pd.DataFrame(sm, index=scores.index, columns=scores.columns)


def assign_labels(scores: pd.DataFrame, *, min_score: float = 0.15, min_margin: float = 0.25) -> pd.DataFrame:
    """Best label per row of a score table, ``unassigned`` when weak or ambiguous.

    Returns a table with ``label``, ``score``, ``runner_up``, ``runner_up_score``
    and ``confidence``: the lead of the best over the runner-up relative to
    the best score, in [0, 1]. A row is ``unassigned`` when its best score is
    under ``min_score`` or its confidence under ``min_margin``.
    """
    if scores.shape[1] == 0:
        return pd.DataFrame({"label": UNASSIGNED, "score": np.nan, "runner_up": "", "runner_up_score": np.nan,
                             "confidence": 0.0}, index=scores.index)
    vals = scores.to_numpy(dtype=float)
    order = np.argsort(-vals, axis=1, kind="stable")
    rows = np.arange(len(vals))
    top = vals[rows, order[:, 0]]
    if vals.shape[1] > 1:
        second = vals[rows, order[:, 1]]
        runner = np.asarray(scores.columns)[order[:, 1]].astype(object)
    else:
        second = np.zeros(len(vals))
        runner = np.array([""] * len(vals), dtype=object)
    conf = np.clip((top - second) / np.maximum(top, 1e-9), 0, 1)
    label = np.asarray(scores.columns)[order[:, 0]].astype(object)
    weak = (top < min_score) | (conf < min_margin)
    label[weak] = UNASSIGNED
    return pd.DataFrame({"label": label, "score": top, "runner_up": runner, "runner_up_score": second,
                         "confidence": np.where(weak, 0.0, conf)}, index=scores.index)


def call_groups(
    scores: pd.DataFrame,
    groups: pd.Series,
    *,
    smoothed: pd.DataFrame | None = None,
    min_score: float = 0.15,
    min_margin: float = 0.25,
    min_purity: float = 0.6,
    override_ratio: float | None = 2.0,
    split_ambiguous: bool = False,
    min_relative: float | None = None,
    group_scores: pd.DataFrame | None = None,
    levels: tuple[pd.DataFrame, pd.DataFrame] | None = None,
    baseline: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Call each group (cluster) from its cells' scores; cells of mixed groups one by one.

    Parameters
    ----------
    scores
        Cells x sets (:func:`score_cells`).
    groups
        Each cell's group.
    smoothed
        The scores averaged over kNN neighbours (:func:`smooth_scores`);
        default: ``scores``. Per-cell labels and purity use them.
    min_score, min_margin
        As in :func:`assign_labels`, applied to the group's mean scores (and
        to each cell's smoothed scores in mixed groups).
    min_purity
        Share of the group's informative cells (smoothed best score at least
        half of ``min_score``) whose own best set must be the group's label.
    override_ratio
        A cell of a called group whose own (unsmoothed) best set scores at
        least ``2 * min_score`` and ``override_ratio`` times its score of the
        group's label, and whose smoothed scores lean the same way, takes its own label: a population too small to form a
        cluster of its own (fewer cells than the kNN graph's neighbours, such
        as a few fibroblasts among tumour cells). ``None`` disables this.
    split_ambiguous
        Call the cells of an ambiguous group (failing ``min_margin``) one by
        one, as mixed groups are. Right for compartments (every cell has one,
        so an ambiguous mean means a subpopulation); not for cell types, where
        an ambiguous group may be a type the table does not know, sitting
        between two known siblings: it stays ``unassigned``.
    min_relative
        Only labels whose group mean score (or, in a mixed group, the cell's
        smoothed score) is at least this share of the label's highest group
        mean compete, for the label and for the margin: programmes the group
        shows near the level of the population showing them most. A group
        showing a related type's programme at a fraction of that level shares
        its markers and is not that type; a group showing no programme so is
        ``unassigned`` (status ``shared``: for instance a type absent from the
        table). ``None``: every label competes.
    group_scores
        Groups x sets: each group's scores measured on the group as a whole
        (for example each gene's mean over the group's cells, then the set's
        evidence); default: the mean of its cells' ``scores``. Such a group's
        scores are diluted when it mixes populations, so a group whose cells
        disagree (``min_purity``) is called cell by cell whatever its strength.
    levels
        ``(per group, per cell)`` programme levels that ``min_relative``
        compares (for example scores without the shared level discounted);
        default: the group means and ``smoothed``.
    baseline
        ``(per group, per cell)`` scores that the no-call baseline
        ``min_score`` is checked on (for example without the shared level
        discounted: how much of the programme is shown, while the discounted
        scores decide between related types); default: the scores themselves.

    Returns
    -------
    ``(cells, table)``: per cell ``label`` and ``confidence``; per group
    ``n_cells``, ``label``, ``score``, ``runner_up``, ``runner_up_score``,
    ``confidence``, ``purity``, ``status`` (``called``, ``weak``,
    ``ambiguous``, ``ambiguous: called per cell``, ``mixed: called per
    cell`` or ``shared``) and the mean score of every set.
    """
    smoothed = scores if smoothed is None else smoothed
    grp = groups.astype(str).to_numpy()
    cats = list(pd.unique(grp))
    cols = list(scores.columns)

    def by_group(table: pd.DataFrame) -> pd.DataFrame:
        return table.set_axis(table.index.astype(str)).reindex(cats)[cols]

    mean = by_group(group_scores) if group_scores is not None else by_group(scores.groupby(grp, sort=False).mean())
    g_level, c_level = (by_group(levels[0]), levels[1][cols]) if levels is not None else (mean, smoothed)
    g_base, c_base = (by_group(baseline[0]), baseline[1][cols]) if baseline is not None else (mean, smoothed)
    top = g_level.max(axis=0)
    use_relative = min_relative is not None and mean.shape[1] > 0

    def decide(values: pd.DataFrame, level: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
        # only programmes shown near their owner's level compete (for the label and the margin); the
        # label is decided on ``values``, the no-call baseline on ``base``
        if use_relative:
            shown = (level >= min_relative * top).to_numpy()
            values, base = values.where(shown, 0.0), base.where(shown, 0.0)
        out = assign_labels(values, min_score=0.0, min_margin=min_margin)
        cols = {c: k for k, c in enumerate(values.columns)}
        b = base.to_numpy(dtype=float)
        lab = out["label"].to_numpy()
        lvl = np.array([b[r, cols[x]] if x in cols else 0.0 for r, x in enumerate(lab)])
        out["level"] = np.where(lab != UNASSIGNED, lvl, b.max(axis=1) if b.shape[1] else 0.0)
        weak = out["level"].to_numpy() < min_score
        out.loc[weak, ["label", "confidence"]] = [UNASSIGNED, 0.0]
        return out

    calls = decide(mean, g_level, g_base)
    raw_level = g_base.max(axis=1).to_numpy() if g_base.shape[1] else np.zeros(len(cats))
    shared = (raw_level >= min_score) & (calls["level"].to_numpy() < min_score) if use_relative else \
        np.zeros(len(cats), dtype=bool)
    # each cell's own best set, from its smoothed scores
    cell = assign_labels(smoothed, min_score=0.0, min_margin=0.0)
    best_raw = np.asarray(smoothed.columns)[np.argmax(smoothed.to_numpy(), axis=1)] if smoothed.shape[1] else \
        np.array([UNASSIGNED] * len(grp), dtype=object)
    informative = (c_base.max(axis=1).to_numpy() if c_base.shape[1] else cell["score"].to_numpy()) >= 0.5 * min_score
    top_label = mean.idxmax(axis=1).reindex(cats).to_numpy() if mean.shape[1] else np.array([UNASSIGNED] * len(cats))
    purity = []
    for c, lab in zip(cats, top_label, strict=True):
        m = (grp == c) & informative
        purity.append(float((best_raw[m] == lab).mean()) if m.any() else np.nan)
    calls["purity"] = purity
    strong = (calls["level"] >= min_score).to_numpy()
    status = np.where(calls["label"].to_numpy() != UNASSIGNED, "called", "")
    status = np.where(~strong, "weak", status)
    # a group's own scores are diluted when it mixes populations: its purity counts whatever its strength
    mixed = (strong | (group_scores is not None)) & (np.nan_to_num(calls["purity"].to_numpy(), nan=1.0) < min_purity)
    # an ambiguous mean can come from a subpopulation (tumour cells with a few fibroblasts): its cells
    # are called one by one, and cells that are ambiguous themselves stay unassigned
    mixed &= ~shared
    ambiguous = strong & ~mixed & ~shared & (status == "")
    status = np.where(shared, "shared", status)
    status = np.where(mixed, "mixed: called per cell", status)
    status = np.where(ambiguous, "ambiguous: called per cell" if split_ambiguous else "ambiguous", status)
    if split_ambiguous:
        mixed = mixed | ambiguous
    calls["status"] = status
    calls.loc[mixed, ["label", "confidence"]] = [UNASSIGNED, 0.0]
    calls = calls.drop(columns="level")
    # cells: their group's label, or their own in mixed groups
    per_cell = decide(smoothed, c_level, c_base)
    label = calls["label"].reindex(grp).to_numpy().astype(object)
    in_mixed = np.isin(grp, np.asarray(cats)[mixed])
    label[in_mixed] = per_cell["label"].to_numpy()[in_mixed]
    raw = scores.to_numpy(dtype=float)
    col = {c: i for i, c in enumerate(scores.columns)}
    n_override = 0
    if override_ratio is not None and raw.shape[1] > 1:
        own_best = np.asarray(scores.columns)[raw.argmax(axis=1)].astype(object)
        own_top = raw.max(axis=1)
        of_label = np.array([raw[i, col[lab]] if lab in col else 0.0 for i, lab in enumerate(label)])
        # the cell's neighbourhood must lean the same way: one noisy cell in a shallow dataset does not
        override = (~in_mixed & (label != UNASSIGNED) & (own_best != label) & (own_top >= 2 * min_score)
                    & (own_top >= override_ratio * of_label) & (best_raw == own_best))
        n_override = int(override.sum())
        label[override] = own_best[override]
    # confidence: the cell's smoothed lead of its label over the best other set
    vals = smoothed.to_numpy(dtype=float)
    conf = np.zeros(len(grp))
    for i, lab in enumerate(label):
        if lab == UNASSIGNED or lab not in col:
            continue
        own = vals[i, col[lab]]
        other = np.max(np.delete(vals[i], col[lab])) if vals.shape[1] > 1 else 0.0
        conf[i] = np.clip((own - other) / max(own, 1e-9), 0, 1)
    cells = pd.DataFrame({"label": label, "confidence": conf.astype(np.float32)}, index=scores.index)
    table = pd.concat([calls, mean.add_prefix("score_")], axis=1)
    table.index.name = groups.name or "group"
    table.insert(0, "n_cells", pd.Series(grp).value_counts().reindex(cats).to_numpy())
    table.attrs["n_cell_overrides"] = n_override
    return cells, table


def _store_scores(adata: ad.AnnData, key: str, scores: pd.DataFrame) -> None:
    for c in scores.columns:
        adata.obs[f"{key}_score_{c.replace(' ', '_')}"] = scores[c].to_numpy().astype(np.float32)


def annotate_compartments(
    adata: ad.AnnData,
    *,
    groupby: str = "leiden",
    markers: pd.DataFrame | str | os.PathLike | None = None,
    min_score: float = 0.1,
    min_margin: float = 0.25,
    min_purity: float = 0.6,
    expr_floor: float = 1.0,
    ambient_threshold: float = 0.01,
    exclusive_ratio: float | None = 3.0,
) -> pd.DataFrame:
    """Call each cluster's compartment: epithelial, immune, stromal or unassigned.

    Parameters
    ----------
    adata
        Clustered cells, log-normalised ``X``, kNN graph in ``obsp``.
    groupby
        ``obs`` column of the clusters.
    markers
        Marker table or its path (default: the shipped milk table).
    min_score, min_margin, min_purity
        As in :func:`call_groups`. The no-call baseline is lower than for cell
        types (0.1 against 0.15): a compartment's programme is broad and every
        cell has one, whereas a cell type absent from the table must not take a
        sibling's label on weak shared evidence.
    expr_floor
        Floor of the per-gene expression scale (log-normalised units).
    ambient_threshold
        Genes at least this share of a sample's ambient profile are not used.
    exclusive_ratio
        A compartment's core or best type whose kNN-smoothed score is at least
        this many times the best core or type score of every other compartment
        is evidence on its own: plasma cells barely express the pan-leukocyte
        core (CD45-low) but nothing else; mast cells show the core but no type
        of the table. ``None``: the geometric mean only.

    Returns
    -------
    The per-cluster table (also in ``uns["milkcells"]["compartment"]["clusters"]``).
    Sets ``obs["compartment"]``, ``obs["compartment_confidence"]`` and
    ``obs["compartment_score_<compartment>"]``: the geometric mean of the
    core set's score and the best cell-type score of the compartment, or the
    exclusive evidence (``exclusive_ratio``) where that is higher. A core with
    fewer than two of its genes in the data counts as 0: the compartment is
    then reached by exclusive evidence only (its types alone are not specific:
    metallothioneins of LC1 or smooth-muscle genes of basal cells are
    expressed outside the epithelium).
    """
    table = markers if isinstance(markers, pd.DataFrame) else load_marker_table(markers)
    excluded = ambient_prone_genes(adata, ambient_threshold=ambient_threshold)
    cores = marker_sets(adata, table=table, level="compartment", exclude=excluded)
    types = marker_sets(adata, table=table, level="cell_type", exclude=excluded)
    genes = sorted({g for s in (*cores.values(), *types.values()) for g in s})
    scale = gene_scale(adata, genes, expr_floor=expr_floor) if genes else None
    core_scores = score_cells(adata, cores, scale=scale, expr_floor=expr_floor)
    type_scores = score_cells(adata, types, scale=scale, expr_floor=expr_floor)
    comp_of = dict(zip(table.loc[table["level"] == "cell_type", "cell_type"],
                       table.loc[table["level"] == "cell_type", "compartment"], strict=True))
    zero = np.zeros(adata.n_obs)
    core, best = {}, {}
    for comp in COMPARTMENTS:
        members = [t for t in type_scores.columns if comp_of.get(t) == comp]
        if comp not in core_scores and not members:
            continue
        # a core (or every type) missing from the data is no evidence
        core[comp] = core_scores[comp].to_numpy() if comp in core_scores else zero
        best[comp] = type_scores[members].to_numpy().max(axis=1) if members else zero
    # geometric mean: a compartment needs its core *and* one of its types (smooth-muscle genes of
    # basal cells in a fibroblast make no epithelium without keratins; CD24, an epithelial core gene,
    # in B cells makes no epithelium without an epithelial type)
    scores = pd.DataFrame({c: np.sqrt(core[c] * best[c]) for c in core}, index=adata.obs_names)
    n_exclusive = {}
    if exclusive_ratio is not None and len(core) > 1 and "connectivities" in adata.obsp and adata.n_obs >= 3:
        # ... or evidence of its own that no other compartment comes near, on kNN-smoothed scores
        # (one cell's stray transcripts do not count)
        comps = list(core)
        sm_core = _smooth(adata, np.column_stack([core[c] for c in comps]))
        sm_best = _smooth(adata, np.column_stack([best[c] for c in comps]))
        strength = np.maximum(sm_core, sm_best)
        for k, c in enumerate(comps):
            others = np.delete(strength, k, axis=1).max(axis=1)
            own = strength[:, k]
            lift = np.where(own >= exclusive_ratio * others, own, 0.0)
            n_exclusive[c] = int((lift > scores[c].to_numpy()).sum())
            scores[c] = np.maximum(scores[c].to_numpy(), lift)
    cells, res = call_groups(scores, adata.obs[groupby], smoothed=smooth_scores(adata, scores),
                             min_score=min_score, min_margin=min_margin, min_purity=min_purity,
                             split_ambiguous=True)
    res.index.name = groupby
    adata.obs["compartment"] = pd.Categorical(cells["label"].to_numpy())
    adata.obs["compartment_confidence"] = cells["confidence"].to_numpy()
    _store_scores(adata, "compartment", scores)
    record_params(adata, "compartment", dict(groupby=groupby, min_score=min_score, min_margin=min_margin,
                                             min_purity=min_purity, expr_floor=expr_floor,
                                             ambient_threshold=ambient_threshold, exclusive_ratio=exclusive_ratio))
    adata.uns["milkcells"]["compartment"]["ambient_excluded"] = excluded
    adata.uns["milkcells"]["compartment"]["cells_by_exclusive_evidence"] = n_exclusive
    missing = [c for c in core if c not in core_scores]
    if missing:
        log.warning("compartments: the core genes of %s are (nearly) absent from the data; these compartments "
                    "are called only where their own evidence far exceeds every other's", missing)
    adata.uns["milkcells"]["compartment"]["cores_missing"] = missing
    adata.uns["milkcells"]["compartment"]["clusters"] = res.reset_index()
    log.info("compartments: %s", adata.obs["compartment"].value_counts().to_dict())
    return res


def _evidence(
    adata: ad.AnnData, sets: dict[str, list[str]], excluded: list[str], milk_alpha: float, layer: str | None,
) -> dict[str, np.ndarray]:
    """Milk transcripts in the sets count only where they exceed the cell's ambient counts."""
    milk = sorted({g for s in sets.values() for g in s} & set(excluded))
    if not milk:
        return {}
    excess = milk_excess(adata, milk, alpha=milk_alpha) if layer is not None else np.zeros((adata.n_obs, len(milk)), bool)
    return {g: excess[:, j] for j, g in enumerate(milk)}


def annotate_cell_types(
    adata: ad.AnnData,
    *,
    compartment: str,
    groupby: str = "leiden_compartment",
    markers: pd.DataFrame | str | os.PathLike | None = None,
    min_score: float = 0.15,
    min_margin: float = 0.25,
    min_purity: float = 0.6,
    expr_floor: float = 1.0,
    ambient_threshold: float = 0.01,
    milk_alpha: float = 1e-3,
    layer: str | None = None,
    reference: ad.AnnData | None = None,
    scale: pd.Series | None = None,
    shared_level: float = 0.2,
    min_relative: float = 0.5,
) -> pd.DataFrame:
    """Call each (sub)cluster's cell type among the types of one compartment, then subtypes.

    Parameters
    ----------
    adata
        Cells of one compartment, clustered (kNN graph in ``obsp``),
        log-normalised ``X``.
    compartment
        Whose cell-type marker sets to use.
    groupby
        ``obs`` column of the (sub)clusters.
    markers
        Marker table or its path (default: the shipped milk table).
    min_score, min_margin, min_purity, expr_floor, ambient_threshold
        As in :func:`annotate_compartments`.
    milk_alpha
        Milk transcripts count as evidence in a cell only when its counts
        exceed the expected ambient counts at this level (:func:`milk_excess`;
        needs ``layer`` and the ambient estimate).
    layer
        A counts layer to take the evidence from (for example
        ``"ambient_corrected"`` from :func:`milkcells.ambient.correct_ambient`);
        ``None``: log-normalised ``X``.
    reference
        All cells of the dataset, on which each gene's scale is measured
        (:func:`gene_scale`); default: ``adata``.
    scale
        Each gene's scale measured beforehand on all cells (:func:`gene_scale` with this
        ``layer`` and ``expr_floor``), so that ``reference`` need not be in memory; genes
        missing from it are measured on ``reference``.
    shared_level
        Each gene's kNN-local expression up to this share of its highest local
        mean is not evidence (:func:`score_cells`): the level at which related
        types share canonical markers.
    min_relative
        As in :func:`call_groups`: a label needs its programme at least at this
        share of the level of the cluster showing it most.

    A type with subtypes is scored on its own genes together with those of
    its best-fitting subtype (a CD8 T cell shows the T-cell genes and CD8
    genes; the NK genes it shares with NK cells then weigh less).

    Returns
    -------
    The per-cluster table of the cell types. Sets ``obs["cell_type_broad"]``
    (the type) and ``obs["cell_type"]`` (the subtype where one is called,
    else the type), with ``*_confidence`` and ``obs["cell_type_score_<type>"]``.
    """
    if compartment not in COMPARTMENTS:
        raise ValueError(f"compartment must be one of {list(COMPARTMENTS)}, but {compartment!r} was passed.")
    table = markers if isinstance(markers, pd.DataFrame) else load_marker_table(markers)
    excluded = ambient_prone_genes(adata, ambient_threshold=ambient_threshold)
    # milk transcripts stay in the sets only when the cell's excess over ambient can be tested
    can_test = layer is not None and "ambient_contamination" in adata.obs
    drop = [] if can_test else excluded
    sets = marker_sets(adata, table=table, level="cell_type", compartment=compartment, exclude=drop)
    children_of = {p: marker_sets(adata, table=table, level="cell_type", compartment=compartment, parent=p,
                                  exclude=drop)
                   for p in sorted(set(table.loc[table["parent"] != "", "parent"]))}
    genes = sorted({g for s in (*sets.values(), *(v for c in children_of.values() for v in c.values()))
                    for g in s})
    ref = adata if reference is None else reference
    scale = gene_scale(ref, [g for g in genes if g in ref.var_names], layer=layer if layer in ref.layers else None,
                       expr_floor=expr_floor, known=scale) if genes else None
    # a type with subtypes: its genes with each subtype's, the best of these (or its own alone)
    lineage_sets = dict(sets)
    for parent, children in children_of.items():
        if parent in sets:
            for child, genes_c in children.items():
                lineage_sets[f"{parent}\t{child}"] = list(dict.fromkeys(sets[parent] + genes_c))
    set_genes = sorted({g for v in lineage_sets.values() for g in v})
    mask = _evidence(adata, lineage_sets, excluded, milk_alpha, layer)
    rel = relative_expression(adata, set_genes, layer=layer, scale=scale, evidence_mask=mask)

    def typed(values: np.ndarray, index, shared: float = shared_level) -> pd.DataFrame:
        sc = pd.DataFrame(_set_means(values, set_genes, lineage_sets, shared), index=index)
        out = sc[list(sets)].copy()
        for parent in sets:
            alts = [c for c in sc.columns if c.startswith(f"{parent}\t")]
            if alts:
                out[parent] = sc[[parent, *alts]].max(axis=1)
        return out

    scores, group_scores = _local_and_group(adata, rel, adata.obs[groupby], typed)
    # the no-call baseline on the programme shown, undiscounted: shallow data show less of it
    base_c, base_g = _local_and_group(adata, rel, adata.obs[groupby], lambda v, i: typed(v, i, 0.0))
    cells, res = call_groups(scores, adata.obs[groupby], smoothed=scores, group_scores=group_scores,
                             levels=_levels(scores, adata.obs[groupby]), baseline=(base_g, base_c),
                             min_score=min_score, min_margin=min_margin,
                             min_purity=min_purity, override_ratio=None, min_relative=min_relative)
    res.index.name = groupby
    broad = cells["label"].to_numpy().astype(object)
    adata.obs["cell_type_broad"] = pd.Categorical(broad)
    adata.obs["cell_type_broad_confidence"] = cells["confidence"].to_numpy()
    _store_scores(adata, "cell_type", scores)
    fine = broad.copy()
    fine_conf = cells["confidence"].to_numpy().copy()
    sub_tables = {}
    for parent, children in children_of.items():
        sel = broad == parent
        if not children or sel.sum() == 0:
            continue
        sub = adata[sel]
        child_genes = sorted({g for v in children.values() for g in v})
        cmask = _evidence(sub, children, excluded, milk_alpha, layer)
        crel = relative_expression(sub, child_genes, layer=layer, scale=scale, evidence_mask=cmask)
        # subtypes are called within the parent's own clusters, refined by Leiden where a graph exists
        groups = _refine_groups(adata, sel, groupby)
        def child_typed(v, idx, cg=child_genes, ch=children, shared=shared_level):
            return pd.DataFrame(_set_means(v, cg, ch, shared), index=idx)

        cs, cgroup = _local_and_group(sub, crel, groups, child_typed)
        cbase_c, cbase_g = _local_and_group(sub, crel, groups, lambda v, i: child_typed(v, i, shared=0.0))
        # among sibling subtypes the margin decides (a type the table does not know is caught a level up)
        c_cells, c_tab = call_groups(cs, groups, smoothed=cs, group_scores=cgroup, baseline=(cbase_g, cbase_c),
                                     min_score=min_score,
                                     min_margin=min_margin, min_purity=min_purity, override_ratio=None,
                                     min_relative=None)
        lab = c_cells["label"].to_numpy().astype(object)
        keep_parent = lab == UNASSIGNED
        lab[keep_parent] = parent
        fine[sel] = lab
        fine_conf[sel] = np.where(keep_parent, fine_conf[sel], c_cells["confidence"].to_numpy())
        sub_tables[parent] = c_tab.reset_index()
        log.info("%s subtypes: %s", parent, pd.Series(lab).value_counts().to_dict())
    adata.obs["cell_type"] = pd.Categorical(fine)
    adata.obs["cell_type_confidence"] = fine_conf.astype(np.float32)
    record_params(adata, "cell_type", dict(compartment=compartment, groupby=groupby, min_score=min_score,
                                           min_margin=min_margin, min_purity=min_purity, expr_floor=expr_floor,
                                           ambient_threshold=ambient_threshold, milk_alpha=milk_alpha,
                                           layer=layer, milk_evidence=can_test))
    adata.uns["milkcells"]["cell_type"]["clusters"] = res.reset_index()
    for parent, t in sub_tables.items():
        adata.uns["milkcells"]["cell_type"][f"subtypes_{parent.replace(' ', '_')}"] = t
    return res


def _local_and_group(adata: ad.AnnData, rel: np.ndarray, groups: pd.Series, typed) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Set evidence per cell's kNN neighbourhood and per group, each from the genes' mean relative expression.

    The shared level is discounted from each gene's *mean* over the neighbourhood or the group (a
    sibling's share of a marker is a level, seen in the mean, not in one cell's sparse counts).
    """
    local = _smooth(adata, rel) if "connectivities" in adata.obsp and adata.n_obs >= 3 else rel
    grp = groups.astype(str).to_numpy()
    means = pd.DataFrame(rel).groupby(grp, sort=False).mean()
    return typed(local, adata.obs_names), typed(means.to_numpy(), means.index)


def _levels(local: pd.DataFrame, groups: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Programme levels for ``min_relative``: each group's mean of its cells' neighbourhood scores, and those.

    Neighbourhoods cross donors once integrated, so a donor's cluster of a type is not judged
    against another donor's by the group means alone (donor effects on single genes are large).
    """
    return local.groupby(groups.astype(str).to_numpy(), sort=False).mean(), local


def _refine_groups(adata: ad.AnnData, sel: np.ndarray, groupby: str) -> pd.Series:
    """Leiden within the selected cells' clusters (resolution 1), or the clusters themselves."""
    groups = adata.obs[groupby].astype(str)
    if "connectivities" not in adata.obsp or sel.sum() < 20:
        return groups[sel]
    import scanpy as sc

    key = "_milkcells_refine"
    tmp = ad.AnnData(obs=pd.DataFrame({groupby: pd.Categorical(np.where(sel, groups, "_other"))},
                                      index=adata.obs_names))
    tmp.obsp["connectivities"] = adata.obsp["connectivities"]
    tmp.uns["neighbors"] = {"connectivities_key": "connectivities", "params": {"method": "umap"}}
    clusters = sorted(set(groups[sel]))
    sc.tl.leiden(tmp, resolution=1.0, restrict_to=(groupby, clusters), key_added=key, flavor="igraph",
                 n_iterations=2, directed=False, random_state=0)
    return tmp.obs[key].astype(str)[sel].rename(groupby)
