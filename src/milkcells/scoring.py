"""Marker evidence: each gene's scale, the cells' relative expression and set scores, and the calls of groups.

The method is described in :mod:`milkcells.annotate`, which calls compartments
and cell types with these: every marker gene's expression in a cell is taken
relative to the gene's highest kNN-local mean over all cells (:func:`gene_scale`),
a marker set's score is the mean of its genes' relative expression
(:func:`score_cells`), and a group of cells takes a label when its cells'
smoothed scores pass the no-call baseline, the margin and the purity
(:func:`call_groups`).
"""

from __future__ import annotations

import logging
import os

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .markertable import UNASSIGNED, load_marker_table

__all__ = [
    "assign_labels",
    "call_groups",
    "gene_scale",
    "knn_smooth",
    "marker_gene_scale",
    "milk_excess",
    "relative_expression",
    "score_cells",
    "set_means",
    "smooth_scores",
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
    the gene's non-zero single-cell values. Either way at least ``expm1(expr_floor)``
    (``expr_floor`` in log-normalised units), so a gene seen only as stray single UMIs cannot look fully expressed.

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
        out = np.maximum(knn_smooth(adata, X).max(axis=0), floor)
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
    marker_table: pd.DataFrame | str | os.PathLike | None = None,
    layer: str | None = "ambient_corrected",
    expr_floor: float = 1.0,
) -> pd.Series:
    """:func:`gene_scale` of every gene of the marker table present in ``adata``, on all its cells.

    ``layer`` is used when ``adata`` has it (else log-normalised ``X``), as the cell typing does.
    The workflow measures this once on the whole atlas and hands it to each compartment's
    re-clustering (``scale=``), which then needs only that compartment's cells in memory.
    """
    table = load_marker_table(marker_table)
    present = set(adata.var_names)
    genes = sorted({alt for entries in table["positive"] for entry in entries for alt in entry.split("|")} & present)
    return gene_scale(adata, genes, layer=layer if layer in adata.layers else None, expr_floor=expr_floor)


def knn_smooth(adata: ad.AnnData, values: np.ndarray) -> np.ndarray:
    """Average each cell's values (rows of ``values``) with its kNN neighbours'.

    The weights are ``obsp["connectivities"]``, the cell itself included.
    """
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
        ``{label: [genes]}`` from :func:`~milkcells.markertable.marker_sets`.
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
    rel = relative_expression(
        adata, genes, layer=layer, scale=scale, expr_floor=expr_floor, evidence_mask=evidence_mask
    )
    return pd.DataFrame(set_means(rel, genes, sets, 0.0), index=adata.obs_names)


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


def set_means(rel: np.ndarray, genes: list[str], sets: dict[str, list[str]], shared_level: float) -> dict:
    """Per row of ``rel`` (cells, neighbourhoods or groups x ``genes``): each set's mean evidence.

    Each gene's relative expression up to ``shared_level`` is not evidence:
    ``(r - shared_level) / (1 - shared_level)``, clipped at 0.

    Returns
    -------
    ``{label: array of one mean per row}`` for each set of ``sets``.
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
    sm = knn_smooth(adata, scores.to_numpy(dtype=np.float64))
    return pd.DataFrame(sm, index=scores.index, columns=scores.columns)


def assign_labels(scores: pd.DataFrame, *, min_score: float = 0.15, min_margin: float = 0.25) -> pd.DataFrame:
    """Best label per row of a score table, ``unassigned`` when weak or ambiguous.

    Returns a table with ``label``, ``score``, ``runner_up``, ``runner_up_score``
    and ``confidence``: the lead of the best over the runner-up relative to
    the best score, in [0, 1]. A row is ``unassigned`` when its best score is
    under ``min_score`` or its confidence under ``min_margin``.
    """
    if scores.shape[1] == 0:
        return pd.DataFrame(
            {"label": UNASSIGNED, "score": np.nan, "runner_up": "", "runner_up_score": np.nan, "confidence": 0.0},
            index=scores.index,
        )
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
    return pd.DataFrame(
        {
            "label": label,
            "score": top,
            "runner_up": runner,
            "runner_up_score": second,
            "confidence": np.where(weak, 0.0, conf),
        },
        index=scores.index,
    )


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
        group's label, and whose smoothed scores lean the same way, takes its own label: a
        population too small to form a cluster of its own (fewer cells than the kNN graph's neighbours, such
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
    shared = (
        (raw_level >= min_score) & (calls["level"].to_numpy() < min_score)
        if use_relative
        else np.zeros(len(cats), dtype=bool)
    )
    # each cell's own best set, from its smoothed scores
    cell = assign_labels(smoothed, min_score=0.0, min_margin=0.0)
    best_raw = (
        np.asarray(smoothed.columns)[np.argmax(smoothed.to_numpy(), axis=1)]
        if smoothed.shape[1]
        else np.array([UNASSIGNED] * len(grp), dtype=object)
    )
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
        override = (
            ~in_mixed
            & (label != UNASSIGNED)
            & (own_best != label)
            & (own_top >= 2 * min_score)
            & (own_top >= override_ratio * of_label)
            & (best_raw == own_best)
        )
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
