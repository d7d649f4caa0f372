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

from ._utils import record_params
from .markertable import (
    COMPARTMENTS,
    UNASSIGNED,
    ambient_prone_genes,
    load_marker_table,
    marker_sets,
)
from .scoring import (
    call_groups,
    gene_scale,
    knn_smooth,
    milk_excess,
    relative_expression,
    score_cells,
    set_means,
    smooth_scores,
)

__all__ = [
    "annotate_compartments",
    "annotate_cell_types",
]

log = logging.getLogger(__name__)


def _store_scores(adata: ad.AnnData, key: str, scores: pd.DataFrame) -> None:
    for c in scores.columns:
        adata.obs[f"{key}_score_{c.replace(' ', '_')}"] = scores[c].to_numpy().astype(np.float32)


def annotate_compartments(
    adata: ad.AnnData,
    *,
    groupby: str = "leiden",
    marker_table: pd.DataFrame | str | os.PathLike | None = None,
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
    marker_table
        Marker table or its path (default: the shipped milk table).
    min_score, min_margin, min_purity
        As in :func:`~milkcells.scoring.call_groups`. The no-call baseline is lower than for cell
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
    table = load_marker_table(marker_table)
    excluded = ambient_prone_genes(adata, ambient_threshold=ambient_threshold)
    cores = marker_sets(adata, table=table, level="compartment", exclude=excluded)
    types = marker_sets(adata, table=table, level="cell_type", exclude=excluded)
    genes = sorted({g for s in (*cores.values(), *types.values()) for g in s})
    scale = gene_scale(adata, genes, expr_floor=expr_floor) if genes else None
    core_scores = score_cells(adata, cores, scale=scale, expr_floor=expr_floor)
    type_scores = score_cells(adata, types, scale=scale, expr_floor=expr_floor)
    comp_of = dict(
        zip(
            table.loc[table["level"] == "cell_type", "cell_type"],
            table.loc[table["level"] == "cell_type", "compartment"],
            strict=True,
        )
    )
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
        sm_core = knn_smooth(adata, np.column_stack([core[c] for c in comps]))
        sm_best = knn_smooth(adata, np.column_stack([best[c] for c in comps]))
        strength = np.maximum(sm_core, sm_best)
        for k, c in enumerate(comps):
            others = np.delete(strength, k, axis=1).max(axis=1)
            own = strength[:, k]
            lift = np.where(own >= exclusive_ratio * others, own, 0.0)
            n_exclusive[c] = int((lift > scores[c].to_numpy()).sum())
            scores[c] = np.maximum(scores[c].to_numpy(), lift)
    cells, res = call_groups(
        scores,
        adata.obs[groupby],
        smoothed=smooth_scores(adata, scores),
        min_score=min_score,
        min_margin=min_margin,
        min_purity=min_purity,
        split_ambiguous=True,
    )
    res.index.name = groupby
    adata.obs["compartment"] = pd.Categorical(cells["label"].to_numpy())
    adata.obs["compartment_confidence"] = cells["confidence"].to_numpy()
    _store_scores(adata, "compartment", scores)
    record_params(
        adata,
        "compartment",
        dict(
            groupby=groupby,
            min_score=min_score,
            min_margin=min_margin,
            min_purity=min_purity,
            expr_floor=expr_floor,
            ambient_threshold=ambient_threshold,
            exclusive_ratio=exclusive_ratio,
        ),
    )
    adata.uns["milkcells"]["compartment"]["ambient_excluded"] = excluded
    adata.uns["milkcells"]["compartment"]["cells_by_exclusive_evidence"] = n_exclusive
    missing = [c for c in core if c not in core_scores]
    if missing:
        log.warning(
            "compartments: the core genes of %s are (nearly) absent from the data; these compartments "
            "are called only where their own evidence far exceeds every other's",
            missing,
        )
    adata.uns["milkcells"]["compartment"]["cores_missing"] = missing
    adata.uns["milkcells"]["compartment"]["clusters"] = res.reset_index()
    log.info("compartments: %s", adata.obs["compartment"].value_counts().to_dict())
    return res


def _evidence(
    adata: ad.AnnData,
    sets: dict[str, list[str]],
    excluded: list[str],
    milk_alpha: float,
    layer: str | None,
) -> dict[str, np.ndarray]:
    """Milk transcripts in the sets count only where they exceed the cell's ambient counts."""
    milk = sorted({g for s in sets.values() for g in s} & set(excluded))
    if not milk:
        return {}
    excess = (
        milk_excess(adata, milk, alpha=milk_alpha) if layer is not None else np.zeros((adata.n_obs, len(milk)), bool)
    )
    return {g: excess[:, j] for j, g in enumerate(milk)}


def annotate_cell_types(
    adata: ad.AnnData,
    *,
    compartment: str,
    groupby: str = "leiden_compartment",
    marker_table: pd.DataFrame | str | os.PathLike | None = None,
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
    marker_table
        Marker table or its path (default: the shipped milk table).
    min_score, min_margin, min_purity, expr_floor, ambient_threshold
        As in :func:`annotate_compartments`.
    milk_alpha
        Milk transcripts count as evidence in a cell only when its counts
        exceed the expected ambient counts at this level (:func:`~milkcells.scoring.milk_excess`;
        needs ``layer`` and the ambient estimate).
    layer
        A counts layer to take the evidence from (for example
        ``"ambient_corrected"`` from :func:`milkcells.ambient.correct_ambient`);
        ``None``: log-normalised ``X``.
    reference
        All cells of the dataset, on which each gene's scale is measured
        (:func:`~milkcells.scoring.gene_scale`); default: ``adata``.
    scale
        Each gene's scale measured beforehand on all cells (:func:`~milkcells.scoring.gene_scale` with this
        ``layer`` and ``expr_floor``), so that ``reference`` need not be in memory; genes
        missing from it are measured on ``reference``.
    shared_level
        Each gene's kNN-local expression up to this share of its highest local
        mean is not evidence (:func:`~milkcells.scoring.score_cells`): the level at which related
        types share canonical markers.
    min_relative
        As in :func:`~milkcells.scoring.call_groups`: a label needs its programme at least at this
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
    table = load_marker_table(marker_table)
    excluded = ambient_prone_genes(adata, ambient_threshold=ambient_threshold)
    # milk transcripts stay in the sets only when the cell's excess over ambient can be tested
    can_test = layer is not None and "ambient_contamination" in adata.obs
    drop = [] if can_test else excluded
    sets = marker_sets(adata, table=table, level="cell_type", compartment=compartment, exclude=drop)
    children_of = {
        p: marker_sets(adata, table=table, level="cell_type", compartment=compartment, parent=p, exclude=drop)
        for p in sorted(set(table.loc[table["parent"] != "", "parent"]))
    }
    genes = sorted({g for s in (*sets.values(), *(v for c in children_of.values() for v in c.values())) for g in s})
    ref = adata if reference is None else reference
    scale = (
        gene_scale(
            ref,
            [g for g in genes if g in ref.var_names],
            layer=layer if layer in ref.layers else None,
            expr_floor=expr_floor,
            known=scale,
        )
        if genes
        else None
    )
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
        sc = pd.DataFrame(set_means(values, set_genes, lineage_sets, shared), index=index)
        out = sc[list(sets)].copy()
        for parent in sets:
            alts = [c for c in sc.columns if c.startswith(f"{parent}\t")]
            if alts:
                out[parent] = sc[[parent, *alts]].max(axis=1)
        return out

    scores, group_scores = _local_and_group(adata, rel, adata.obs[groupby], typed)
    # the no-call baseline on the programme shown, undiscounted: shallow data show less of it
    base_c, base_g = _local_and_group(adata, rel, adata.obs[groupby], lambda v, i: typed(v, i, 0.0))
    cells, res = call_groups(
        scores,
        adata.obs[groupby],
        smoothed=scores,
        group_scores=group_scores,
        levels=_levels(scores, adata.obs[groupby]),
        baseline=(base_g, base_c),
        min_score=min_score,
        min_margin=min_margin,
        min_purity=min_purity,
        override_ratio=None,
        min_relative=min_relative,
    )
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
            return pd.DataFrame(set_means(v, cg, ch, shared), index=idx)

        cs, cgroup = _local_and_group(sub, crel, groups, child_typed)
        cbase_c, cbase_g = _local_and_group(sub, crel, groups, lambda v, i: child_typed(v, i, shared=0.0))
        # among sibling subtypes the margin decides (a type the table does not know is caught a level up)
        c_cells, c_tab = call_groups(
            cs,
            groups,
            smoothed=cs,
            group_scores=cgroup,
            baseline=(cbase_g, cbase_c),
            min_score=min_score,
            min_margin=min_margin,
            min_purity=min_purity,
            override_ratio=None,
            min_relative=None,
        )
        lab = c_cells["label"].to_numpy().astype(object)
        keep_parent = lab == UNASSIGNED
        lab[keep_parent] = parent
        fine[sel] = lab
        fine_conf[sel] = np.where(keep_parent, fine_conf[sel], c_cells["confidence"].to_numpy())
        sub_tables[parent] = c_tab.reset_index()
        log.info("%s subtypes: %s", parent, pd.Series(lab).value_counts().to_dict())
    adata.obs["cell_type"] = pd.Categorical(fine)
    adata.obs["cell_type_confidence"] = fine_conf.astype(np.float32)
    record_params(
        adata,
        "cell_type",
        dict(
            compartment=compartment,
            groupby=groupby,
            min_score=min_score,
            min_margin=min_margin,
            min_purity=min_purity,
            expr_floor=expr_floor,
            ambient_threshold=ambient_threshold,
            milk_alpha=milk_alpha,
            layer=layer,
            milk_evidence=can_test,
        ),
    )
    adata.uns["milkcells"]["cell_type"]["clusters"] = res.reset_index()
    for parent, t in sub_tables.items():
        adata.uns["milkcells"]["cell_type"][f"subtypes_{parent.replace(' ', '_')}"] = t
    return res


def _local_and_group(adata: ad.AnnData, rel: np.ndarray, groups: pd.Series, typed) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Set evidence per cell's kNN neighbourhood and per group, each from the genes' mean relative expression.

    The shared level is discounted from each gene's *mean* over the neighbourhood or the group (a
    sibling's share of a marker is a level, seen in the mean, not in one cell's sparse counts).
    """
    local = knn_smooth(adata, rel) if "connectivities" in adata.obsp and adata.n_obs >= 3 else rel
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
    tmp = ad.AnnData(
        obs=pd.DataFrame({groupby: pd.Categorical(np.where(sel, groups, "_other"))}, index=adata.obs_names)
    )
    tmp.obsp["connectivities"] = adata.obsp["connectivities"]
    tmp.uns["neighbors"] = {"connectivities_key": "connectivities", "params": {"method": "umap"}}
    clusters = sorted(set(groups[sel]))
    sc.tl.leiden(
        tmp,
        resolution=1.0,
        restrict_to=(groupby, clusters),
        key_added=key,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=0,
    )
    return tmp.obs[key].astype(str)[sel].rename(groupby)
