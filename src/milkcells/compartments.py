"""The compartment split: each compartment re-clustered and typed on its own."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd

from ._utils import record_params
from .annotate import annotate_cell_types
from .cluster import cluster, resolution_sweep
from .integrate import integrate
from .logs import timed
from .markertable import UNASSIGNED, ambient_prone_genes, load_marker_table, marker_sets
from .preprocess import highly_variable_genes, pca, signal_components
from .scoring import gene_scale, score_cells

__all__ = [
    "cell_type_calls",
    "collect_cell_types",
    "concat_cell_type_calls",
    "concat_sweeps",
    "read_cell_type_calls",
    "subcluster_compartment",
    "sweep_table",
]

log = logging.getLogger(__name__)


def subcluster_compartment(
    adata: ad.AnnData,
    compartment: str,
    *,
    marker_table=None,
    n_top_genes: int = 2000,
    hvg_batch_key: str | None = "sample",
    n_pcs: int = 30,
    integration: str = "harmony",
    integration_key: str = "batch",
    n_neighbors: int = 15,
    resolution: float | str = "auto",
    min_score: float = 0.15,
    min_margin: float = 0.25,
    min_purity: float = 0.6,
    expr_floor: float = 1.0,
    ambient_threshold: float = 0.01,
    milk_alpha: float = 1e-3,
    shared_level: float = 0.2,
    min_relative: float = 0.5,
    scale: pd.Series | None = None,
    umap: bool = True,
    copy: bool = True,
    seed: int = 0,
) -> ad.AnnData:
    """Take one compartment's cells, re-cluster them and call their cell types.

    Parameters
    ----------
    adata
        Annotated object with ``obs["compartment"]``, log-normalised ``X`` and
        ``layers["counts"]``: all cells, or (with ``scale``) the compartment's alone.
    compartment
        ``"epithelial"``, ``"immune"`` or ``"stromal"``.
    marker_table
        Marker table or path (default: the shipped table).
    n_top_genes, hvg_batch_key, n_pcs, integration, integration_key, n_neighbors, seed
        As in :mod:`milkcells.preprocess`, :func:`milkcells.integrate.integrate`
        and :func:`milkcells.cluster.cluster`, applied within the compartment.
    resolution
        Leiden resolution, or ``"auto"``: chosen by
        :func:`milkcells.cluster.resolution_sweep` (stability across seeds
        times purity with respect to the cells' own best cell-type sets; a
        heterogeneous compartment is never left as one cluster); the sweep is
        kept in ``uns["milkcells"]["subcluster"]["sweep"]``.
    min_score, min_margin, min_purity, expr_floor, ambient_threshold, milk_alpha, shared_level, min_relative
        As in :func:`milkcells.annotate.annotate_cell_types`; the genes'
        scale is measured on all cells of ``adata``.

    umap
        Embed the compartment with UMAP (``obsm["X_umap"]``); else :func:`milkcells.cluster.embed`
        can do it later from the compartment's graph (the workflow runs it as its own job, beside
        the assembly of the atlas).

    Cell types are called on ambient-corrected evidence when
    ``layers["ambient_corrected"]`` is present (:mod:`milkcells.ambient`).

    Returns
    -------
    The compartment's cells (a copy, possibly empty) with new HVGs, PCA,
    integration, kNN graph, UMAP (with ``umap``), ``obs["leiden_compartment"]`` and ``obs["cell_type"]``.
    """
    mask = (adata.obs["compartment"].astype(str) == compartment).to_numpy()
    sub = adata if (not copy and mask.all()) else adata[mask].copy()
    for key in ("X_pca", "X_pca_harmony", "X_umap"):
        if key in sub.obsm:
            sub.obsm[f"{key}_all"] = sub.obsm.pop(key)
    for k in list(sub.obsp.keys()):
        del sub.obsp[k]
    layer = "ambient_corrected" if "ambient_corrected" in sub.layers else None
    params = dict(
        compartment=compartment,
        n_top_genes=n_top_genes,
        hvg_batch_key=hvg_batch_key,
        n_pcs=n_pcs,
        integration=integration,
        integration_key=integration_key,
        n_neighbors=n_neighbors,
        resolution=resolution,
        min_score=min_score,
        min_margin=min_margin,
        min_purity=min_purity,
        expr_floor=expr_floor,
        ambient_threshold=ambient_threshold,
        milk_alpha=milk_alpha,
        shared_level=shared_level,
        min_relative=min_relative,
        seed=seed,
        evidence_layer=layer or "X",
    )
    typing = dict(
        min_score=min_score,
        min_margin=min_margin,
        min_purity=min_purity,
        expr_floor=expr_floor,
        ambient_threshold=ambient_threshold,
        milk_alpha=milk_alpha,
        layer=layer,
        shared_level=shared_level,
        min_relative=min_relative,
    )
    if sub.n_obs < 20:
        log.warning("compartment %s has %d cells: not re-clustered", compartment, sub.n_obs)
        sub.obs["leiden_compartment"] = pd.Categorical(["0"] * sub.n_obs)
        if sub.n_obs:
            annotate_cell_types(
                sub, compartment=compartment, marker_table=marker_table, reference=adata, scale=scale, **typing
            )
        else:
            for key in ("cell_type", "cell_type_broad"):
                sub.obs[key] = pd.Categorical([], categories=[UNASSIGNED])
                sub.obs[f"{key}_confidence"] = np.zeros(0, np.float32)
        record_params(sub, "subcluster", params)
        return sub
    with timed(f"{compartment}: highly variable genes", log):
        highly_variable_genes(sub, n_top_genes=n_top_genes, batch_key=hvg_batch_key)
    with timed(f"{compartment}: PCA", log):
        pca(sub, n_comps=n_pcs, seed=seed)
    # only the components above noise: a small compartment's graph is otherwise made by noise
    n_signal = signal_components(sub)
    sub.obsm["X_pca"] = sub.obsm["X_pca"][:, :n_signal]
    sub.varm["PCs"] = sub.varm["PCs"][:, :n_signal]
    for key in ("variance", "variance_ratio"):
        sub.uns["pca"][key] = sub.uns["pca"][key][:n_signal]
    params["n_pcs_used"] = n_signal
    with timed(f"{compartment}: integration", log):
        rep = integrate(sub, method=integration, key=integration_key, seed=seed)
    sweep = None
    if resolution == "auto":
        cluster(
            sub,
            use_rep=rep,
            n_neighbors=n_neighbors,
            resolution=1.0,
            key_added="leiden_compartment",
            umap=False,
            seed=seed,
        )
        table = load_marker_table(marker_table)
        sets = marker_sets(
            sub,
            table=table,
            level="cell_type",
            compartment=compartment,
            exclude=ambient_prone_genes(sub, ambient_threshold=ambient_threshold),
        )
        genes = sorted({g for s in sets.values() for g in s})
        sweep_scale = gene_scale(adata, genes, layer=layer, expr_floor=expr_floor, known=scale) if genes else None
        scores = score_cells(sub, sets, layer=layer, scale=sweep_scale)
        with timed(f"{compartment}: resolution sweep", log):
            sweep = resolution_sweep(sub, scores=scores, min_score=min_score, seed=seed)
        resolution = sweep.attrs["best"]
        log.info("%s: resolution %.2f chosen by stability and marker purity", compartment, resolution)
    elif not isinstance(resolution, (int, float)) or resolution <= 0:
        raise ValueError(f"resolution must be a positive number or 'auto', but {resolution!r} was passed.")
    cluster(
        sub,
        use_rep=rep,
        n_neighbors=n_neighbors,
        resolution=resolution,
        key_added="leiden_compartment",
        seed=seed,
        reuse_graph=True,
        umap=umap,
    )
    with timed(f"{compartment}: cell types", log):
        annotate_cell_types(
            sub,
            compartment=compartment,
            marker_table=marker_table,
            groupby="leiden_compartment",
            reference=adata,
            scale=scale,
            **typing,
        )
    params["resolution_used"] = float(resolution)
    record_params(sub, "subcluster", params)
    if sweep is not None:
        sub.uns["milkcells"]["subcluster"]["sweep"] = sweep.assign(
            compartment=compartment, chosen=sweep["resolution"] == resolution
        )
    log.info("%s: %d cells, cell types %s", compartment, sub.n_obs, sub.obs["cell_type"].value_counts().to_dict())
    return sub


def collect_cell_types(
    adata: ad.AnnData, parts: list[ad.AnnData], *, calls: dict[str, pd.DataFrame] | None = None
) -> None:
    """Copy ``cell_type`` and its confidence from compartment objects back into ``adata``.

    Cells in no part (``unassigned`` compartment) get ``cell_type = "unassigned"``; the
    type level (``cell_type_broad``) and both confidences are copied too, and each non-empty
    part's table of cluster calls (:func:`cell_type_calls` without its ``compartment`` column) to
    ``uns["milkcells"]["cell_types"][compartment]``: from ``calls`` (compartment -> table, as
    :func:`read_cell_type_calls` reads them) where given, else from the parts.
    """
    label = pd.Series(UNASSIGNED, index=adata.obs_names, dtype=object)
    broad = pd.Series(UNASSIGNED, index=adata.obs_names, dtype=object)
    conf = pd.Series(0.0, index=adata.obs_names)
    broad_conf = pd.Series(0.0, index=adata.obs_names)
    sub = pd.Series("", index=adata.obs_names, dtype=object)
    tables = {}
    for p in parts:
        if p.n_obs == 0:
            continue
        comp = str(p.obs["compartment"].iloc[0])
        label.loc[p.obs_names] = p.obs["cell_type"].astype(str).to_numpy()
        broad.loc[p.obs_names] = p.obs.get("cell_type_broad", p.obs["cell_type"]).astype(str).to_numpy()
        conf.loc[p.obs_names] = p.obs["cell_type_confidence"].to_numpy()
        broad_conf.loc[p.obs_names] = p.obs.get("cell_type_broad_confidence", p.obs["cell_type_confidence"]).to_numpy()
        sub.loc[p.obs_names] = [f"{comp}:{c}" for c in p.obs["leiden_compartment"].astype(str)]
        if calls is None:
            tables[comp] = p.uns["milkcells"]["cell_type"]["clusters"]
        elif comp not in calls or not len(calls[comp]):
            raise ValueError(f"no cell-type calls given for compartment {comp!r} ({p.n_obs} cells)")
        else:
            tables[comp] = calls[comp].drop(columns="compartment")
    adata.obs["cell_type"] = pd.Categorical(label.to_numpy())
    adata.obs["cell_type_broad"] = pd.Categorical(broad.to_numpy())
    adata.obs["cell_type_confidence"] = conf.to_numpy().astype(np.float32)
    adata.obs["cell_type_broad_confidence"] = broad_conf.to_numpy().astype(np.float32)
    adata.obs["leiden_compartment"] = pd.Categorical(sub.to_numpy())
    adata.uns.setdefault("milkcells", {})["cell_types"] = tables


#: the first columns of a table of cell-type calls per cluster (:func:`cell_type_calls`); then the
#: score of each of the compartment's types (``score_<type>``)
CALL_COLUMNS = [
    "compartment",
    "leiden_compartment",
    "n_cells",
    "label",
    "score",
    "runner_up",
    "runner_up_score",
    "confidence",
    "purity",
    "status",
]


def cell_type_calls(adata: ad.AnnData, compartment: str | None = None) -> pd.DataFrame:
    """A compartment's cell-type calls per cluster, as :func:`subcluster_compartment` made them.

    One row per cluster (``leiden_compartment``): its cells, the type called (``label``; ``status``
    says whether and why not), its score, the runner-up's, confidence and purity, and the score of
    every type of the compartment; the compartment's name in the first column. A table without
    rows (columns :data:`CALL_COLUMNS`) for a compartment without cells.
    """
    if adata.n_obs == 0:
        return pd.DataFrame(columns=CALL_COLUMNS)
    name = compartment or str(adata.obs["compartment"].iloc[0])
    calls = adata.uns["milkcells"]["cell_type"]["clusters"]
    return pd.concat([pd.Series(name, index=calls.index, name="compartment"), calls], axis=1)


def read_cell_type_calls(path) -> pd.DataFrame:
    """A table of :func:`cell_type_calls` written by ``milkcells.storage.write_table(..., exact=True)``.

    Read back with its values and types (cluster names as text, counts as integers, the types'
    scores as float32), so that what a later step keeps of it equals the compartment's own table.
    """
    calls = pd.read_csv(
        path, sep="\t", dtype={c: str for c in ("compartment", "leiden_compartment")}, float_precision="round_trip"
    )
    if list(calls.columns[: len(CALL_COLUMNS)]) != CALL_COLUMNS:
        raise ValueError(f"{path}: expected a table of cell-type calls with columns {CALL_COLUMNS} first")
    scores = [c for c in calls.columns if c.startswith("score_")]
    return calls.astype({"n_cells": np.int64} | {c: np.float32 for c in scores})


def concat_cell_type_calls(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The compartments' tables of :func:`cell_type_calls` in one (a type's score empty outside its compartment)."""
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=CALL_COLUMNS)


#: the columns of a sweep table without rows (no compartment swept)
SWEEP_COLUMNS = ["compartment", "resolution"]


def sweep_table(adata: ad.AnnData) -> pd.DataFrame:
    """The resolution sweep of a compartment made by :func:`subcluster_compartment` (resolution ``"auto"``).

    A table without rows (columns :data:`SWEEP_COLUMNS`) when the compartment was not swept.
    """
    sweep = adata.uns.get("milkcells", {}).get("subcluster", {}).get("sweep")
    return pd.DataFrame(columns=SWEEP_COLUMNS) if sweep is None else sweep


def concat_sweeps(sweeps: list[pd.DataFrame]) -> pd.DataFrame:
    """The compartments' sweep tables (:func:`sweep_table`) in one: those with rows, in order."""
    sweeps = [s for s in sweeps if len(s)]
    return pd.concat(sweeps) if sweeps else pd.DataFrame(columns=SWEEP_COLUMNS)
