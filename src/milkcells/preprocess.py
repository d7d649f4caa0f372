"""Merging samples, normalisation, highly variable genes and PCA."""

from __future__ import annotations

import gc
import logging
import warnings
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from ._utils import MilkcellsWarning, record_params
from .genes import is_mitochondrial, is_ribosomal
from .logs import timed

__all__ = ["merge_samples", "normalise", "highly_variable_genes", "pca", "preprocess", "signal_components"]

log = logging.getLogger(__name__)


def merge_samples(adatas: Sequence[ad.AnnData], *, min_cells: int = 3, consume: bool = False) -> ad.AnnData:
    """Concatenate per-sample objects on their shared genes.

    Parameters
    ----------
    adatas
        One AnnData per sample (raw counts in ``X``, ``obs_names`` unique
        across samples as :func:`milkcells.io.read_sample` makes them).
    min_cells
        Genes detected in fewer cells (over all samples) are dropped.
    consume
        Empty ``adatas`` (a list) while merging, each sample dropped once its counts are copied, so
        that the samples and the merged matrix are not held in full at once (the workflow's
        ``preprocess`` rule; 250,000 cells: 4.4 GB of counts either way).

    Returns
    -------
    The merged object; per-sample processing records are kept in
    ``uns["milkcells"]["samples"][<sample>]``. The same as ``anndata.concat`` (inner join,
    ``merge="first"``) followed by ``scanpy.pp.filter_genes(min_cells=...)``, which is what it does
    for objects with layers, embeddings or a non-canonical CSR ``X``; for bare CSR counts (the
    workflow's samples) the merged matrix is built sample by sample, already without the dropped
    genes: peak memory is the merged counts plus one sample instead of four times the counts.
    """
    if not adatas:
        raise ValueError("no samples to merge")
    records = {}
    for a in adatas:
        name = str(a.uns.get("milkcells", {}).get("ingest", {}).get("params", {}).get("sample", ""))
        if not name and a.n_obs:
            name = str(a.obs["sample"].iloc[0])
        records[name or f"sample_{len(records) + 1}"] = {
            k: v for k, v in a.uns.get("milkcells", {}).items() if k != "versions"
        }
    empty = [name for name, a in zip(records, adatas, strict=True) if a.n_obs == 0]
    if empty:
        warnings.warn(
            f"samples {empty} have no cells left after QC and doublet removal; they are left out",
            MilkcellsWarning,
            stacklevel=2,
        )
    kept = [a for a in adatas if a.n_obs > 0]
    if consume and isinstance(adatas, list):
        adatas[:] = kept
        kept = adatas
    if not kept:
        raise ValueError(f"no sample has cells left after QC: {list(records)}")
    shared = set(kept[0].var_names)
    for a in kept[1:]:
        shared &= set(a.var_names)
    union = set().union(*(set(a.var_names) for a in kept))
    if len(shared) < len(union):
        log.warning(
            "%d of %d genes are missing from at least one sample and are dropped",
            len(union) - len(shared), len(union),
        )  # fmt: skip
    ambient = {}
    for a in kept:
        if "ambient_fraction" in a.var and a.n_obs:
            ambient[f"ambient_fraction_{a.obs['sample'].iloc[0]}"] = a.var["ambient_fraction"]
    n_kept = len(kept)
    bare = all(_bare_csr(a) for a in kept)
    if bare:  # obs and var as anndata.concat makes them; the matrix below
        shells = [ad.AnnData(obs=a.obs, var=a.var) for a in kept]
        merged = ad.concat(shells, join="inner", merge="first", index_unique=None)
        del shells
    else:
        merged = ad.concat(list(kept), join="inner", merge="first", index_unique=None)
        if consume:
            kept.clear()
    # per-sample gene statistics do not describe the merged data
    merged.var = merged.var.drop(
        columns=["ambient_fraction", "n_cells_by_counts", "mean_counts", "pct_dropout_by_counts", "total_counts"],
        errors="ignore",
    )
    for col, frac in ambient.items():
        merged.var[col] = frac.reindex(merged.var_names).to_numpy(dtype=float)
    for col in ("sample", "donor", "batch", "sample_type"):
        if col in merged.obs:
            merged.obs[col] = merged.obs[col].astype(str).astype("category")
    if bare:
        merged = _merge_counts(merged, kept, min_cells=min_cells)
        if consume:
            kept.clear()
    elif min_cells > 0:
        sc.pp.filter_genes(merged, min_cells=min_cells)
    merged.uns["milkcells"] = {"samples": records}
    record_params(merged, "merge", {"min_cells": min_cells, "n_samples": n_kept})
    return merged


def _bare_csr(a: ad.AnnData) -> bool:
    """Counts in a canonical CSR ``X`` and nothing else per cell or gene but ``obs``/``var``."""
    X = a.X
    return (
        isinstance(X, sp.csr_matrix | sp.csr_array)
        and X.has_canonical_format
        and not (len(a.layers) or len(a.obsm) or len(a.varm) or len(a.obsp) or len(a.varp) or a.raw is not None)
    )


def _merge_counts(merged: ad.AnnData, samples: list[ad.AnnData], *, min_cells: int) -> ad.AnnData:
    """``merged`` (obs and var, no matrix) with the samples' counts on its genes in >= ``min_cells`` cells.

    Cells per gene are counted as ``scanpy.pp.filter_genes`` counts them (entries > 0) and kept in
    ``var["n_cells"]`` when ``min_cells > 0``. Each sample is dropped from ``samples`` once copied.
    """
    genes = merged.var_names
    where = [genes.get_indexer(a.var_names) for a in samples]  # each sample gene's place; -1: not shared
    n_cells = np.zeros(len(genes), dtype=np.int64)
    for a, col in zip(samples, where, strict=True):
        c = col[a.X.indices[a.X.data > 0]]
        n_cells += np.bincount(c[c >= 0], minlength=len(genes))
    keep = n_cells >= min_cells if min_cells > 0 else np.ones(len(genes), bool)
    place = np.full(len(genes), -1, dtype=np.int64)
    place[keep] = np.arange(int(keep.sum()))
    to_place = [np.where(col >= 0, place[col], -1) for col in where]
    nnz = sum(int(((to[a.X.indices] >= 0) & (a.X.data != 0)).sum()) for a, to in zip(samples, to_place, strict=True))
    n_obs = sum(a.n_obs for a in samples)
    itype = np.int32 if max(nnz, int(keep.sum())) < np.iinfo(np.int32).max else np.int64
    data = np.empty(nnz, dtype=np.result_type(*(a.X.dtype for a in samples)))
    indices = np.empty(nnz, dtype=itype)
    indptr = np.zeros(n_obs + 1, dtype=itype)
    row = pos = 0
    sorted_ = True
    for i, to in enumerate(to_place):
        X = samples[i].X
        sorted_ &= bool(np.all(np.diff(to[to >= 0]) > 0))
        mapped = to[X.indices]
        sel = (mapped >= 0) & (X.data != 0)  # explicit zeros dropped, as anndata.concat drops them
        k = int(sel.sum())
        data[pos : pos + k] = X.data[sel]
        indices[pos : pos + k] = mapped[sel]
        before = np.r_[0, np.cumsum(sel)]
        indptr[row + 1 : row + X.shape[0] + 1] = pos + before[X.indptr[1:]]
        row += X.shape[0]
        pos += k
        del X, mapped, sel, before
        samples[i] = None  # the caller's list, when consuming; else a copy of it
        gc.collect()
    if min_cells > 0:
        merged.var["n_cells"] = n_cells
        removed = int((~keep).sum())
        if removed:
            log.info("filtered out %d genes that are detected in less than %d cells", removed, min_cells)
    merged = merged[:, keep].copy()
    X = sp.csr_matrix((data, indices, indptr), shape=(n_obs, int(keep.sum())))
    if not sorted_:
        X.sort_indices()
    merged.X = X
    return merged


def normalise(adata: ad.AnnData, *, target_sum: float = 1e4) -> None:
    """Keep raw counts in ``layers["counts"]``; library-size normalise and log1p ``X``.

    Sparse (CSR) counts and the normalised ``X`` have the same non-zeros, so they share one copy of
    the sparsity structure (``indices``, ``indptr``): at 250,000 cells that is 2.2 GB less. Explicit
    zeros are dropped from the counts first. A change of structure made in place to one of the two
    (``eliminate_zeros``, ``sort_indices``) would garble the other; subsetting, copying or writing
    either gives it arrays of its own.
    """
    if "counts" not in adata.layers:
        X = adata.X
        if isinstance(X, sp.csr_matrix | sp.csr_array) and X.dtype.kind == "f":
            X.sum_duplicates()  # sorted indices, no duplicates; and then no explicit zeros
            X.eliminate_zeros()
            adata.layers["counts"] = X
            adata.X = sp.csr_matrix((X.data.copy(), X.indices, X.indptr), shape=X.shape)
        else:
            adata.layers["counts"] = X.copy()
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    record_params(adata, "normalise", {"target_sum": target_sum})


def _release() -> None:
    """Free the temporaries of a step now.

    AnnData views and their parents form reference cycles, which hold copies of the matrix until the
    cyclic collector happens to run (measured on the 88,000-cell epithelial compartment: 2.2 GB still
    held after the HVG step, the re-clustering's peak 10.9 GB; 9.0 GB when collected).
    """
    gc.collect()


def highly_variable_genes(
    adata: ad.AnnData,
    *,
    n_top_genes: int = 2000,
    batch_key: str | None = "sample",
    exclude_mito_ribo: bool = True,
) -> None:
    """Batch-aware highly variable genes (Seurat flavour on log-normalised data).

    Genes are ranked within each batch and by the number of batches in which
    they are variable. Mitochondrial and ribosomal genes are never selected
    when ``exclude_mito_ribo``. Sets ``var["highly_variable"]``.
    """
    key = batch_key if batch_key and batch_key in adata.obs and adata.obs[batch_key].nunique() > 1 else None
    if key is not None:
        small = adata.obs[key].value_counts()
        if (small < 10).any():
            log.warning("batches with <10 cells are ignored for batch-aware HVG: %s", list(small[small < 10].index))
            key = None
    n_top = int(min(n_top_genes, adata.n_vars))
    with warnings.catch_warnings():
        # a small batch may have fewer genes with a dispersion than n_top: all of them are used
        warnings.filterwarnings("ignore", message="`n_top_genes` > number of normalized dispersions")
        # on X alone: with a batch key scanpy copies each batch's whole AnnData, every layer included
        lean = ad.AnnData(
            X=adata.X,
            obs=adata.obs[[key]] if key else pd.DataFrame(index=adata.obs_names),
            var=pd.DataFrame(index=adata.var_names),
        )
        sc.pp.highly_variable_genes(lean, n_top_genes=n_top, flavor="seurat", batch_key=key)
    for col in lean.var.columns:
        adata.var[col] = lean.var[col].to_numpy()
    adata.uns["hvg"] = lean.uns["hvg"]
    del lean
    if exclude_mito_ribo:
        bad = is_mitochondrial(adata.var_names) | is_ribosomal(adata.var_names)
        adata.var.loc[bad, "highly_variable"] = False
    record_params(
        adata, "hvg", {"n_top_genes": n_top_genes, "batch_key": key or "", "exclude_mito_ribo": exclude_mito_ribo}
    )
    _release()


def _scaled_pca(X, n_comps: int, *, max_value: float = 10.0, block: int = 8192) -> dict:
    """PCA of ``X``'s columns scaled to unit variance and clipped at ``max_value`` SD, in blocks of rows.

    The same arithmetic as ``sc.pp.scale(max_value=...)`` (float32, the genes' means and unbiased
    SDs in float64, clipped on both sides) followed by ``sc.pp.pca(svd_solver="covariance_eigh")``
    (scikit-learn: the eigendecomposition of the covariance matrix, signs as ``svd_flip`` sets
    them), without the dense copy of the whole matrix: each block of rows is densified, scaled and
    added to the Gram matrix (float64), then projected in a second pass. The components equal
    scanpy's to float32 precision; memory is one block and the genes' covariance (250,000 cells x
    2,000 genes: ~0.1 GB instead of 2 GB for the dense matrix).
    """
    from scanpy.preprocessing._utils import _get_mean_var

    n, g = X.shape
    mean, var = _get_mean_var(X)
    std = np.sqrt(var)
    std[std == 0] = 1
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)

    def scaled(start: int) -> np.ndarray:
        rows = X[start : start + block]
        z = rows.toarray() if sp.issparse(rows) else np.array(rows)
        z = z.astype(np.float32, copy=False)
        z -= mean32
        z /= std32
        np.clip(z, -max_value, max_value, out=z)
        return z

    total = np.zeros(g)
    gram = np.zeros((g, g))
    for start in range(0, n, block):
        z = scaled(start)
        total += z.sum(axis=0, dtype=np.float64)
        gram += z.T @ z
    centre = total / n
    cov = (gram - n * np.outer(centre, centre)) / (n - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    eigenvalues, eigenvectors = eigenvalues[::-1].clip(min=0), eigenvectors[:, ::-1]
    components = eigenvectors[:, :n_comps].T
    # svd_flip(u_based_decision=False): each component's largest loading positive
    signs = np.sign(components[np.arange(n_comps), np.abs(components).argmax(axis=1)])
    components *= signs[:, None]
    comps32 = components.T.astype(np.float32)
    shift = (centre @ components.T).astype(np.float32)
    scores = np.empty((n, n_comps), dtype=np.float32)
    for start in range(0, n, block):
        scores[start : start + block] = scaled(start) @ comps32 - shift
    return {
        "X_pca": scores,
        "PCs": components.T.astype(np.float32),
        "variance": eigenvalues[:n_comps],
        "variance_ratio": eigenvalues[:n_comps] / eigenvalues.sum(),
    }


def pca(adata: ad.AnnData, *, n_comps: int = 30, scale: bool = True, seed: int = 0) -> None:
    """PCA on the highly variable genes (optionally scaled, clipped at 10 SD).

    Scaled, the components come from the eigendecomposition of the genes' covariance (exact),
    computed block by block without a dense copy of the matrix (:func:`_scaled_pca`); unscaled
    sparse data go to ARPACK.

    Sets ``obsm["X_pca"]``, ``varm["PCs"]`` (zero outside the HVGs) and ``uns["pca"]``.
    """
    hv = adata.var["highly_variable"].to_numpy()
    # X's HVG columns alone: subsetting the AnnData would copy every layer's columns too
    X = adata.X[:, hv]
    n = int(min(n_comps, X.shape[0] - 1, X.shape[1] - 1))
    if scale:
        res = _scaled_pca(X, n)
        x_pca, loadings = res["X_pca"], res["PCs"]
        uns = {
            "params": {"zero_center": True, "use_highly_variable": False, "mask_var": None},
            "variance": res["variance"],
            "variance_ratio": res["variance_ratio"],
        }
    else:
        sub = ad.AnnData(X=X, obs=pd.DataFrame(index=adata.obs_names), var=adata.var.loc[hv, []])
        sc.pp.pca(sub, n_comps=n, random_state=seed, svd_solver="arpack")
        x_pca, loadings, uns = sub.obsm["X_pca"], sub.varm["PCs"], sub.uns["pca"]
        del sub
    del X
    adata.obsm["X_pca"] = x_pca
    pcs = np.zeros((adata.n_vars, n), dtype=np.float32)
    pcs[hv] = loadings
    adata.varm["PCs"] = pcs
    adata.uns["pca"] = uns
    record_params(adata, "pca", {"n_comps": n, "scale": scale, "seed": seed})
    _release()


def preprocess(
    adata: ad.AnnData,
    *,
    target_sum: float = 1e4,
    n_top_genes: int = 2000,
    hvg_batch_key: str | None = "sample",
    n_pcs: int = 30,
    scale: bool = True,
    seed: int = 0,
) -> None:
    """Normalise, select highly variable genes and run PCA, in place.

    Parameters
    ----------
    adata
        Merged raw counts (kept in ``layers["counts"]``).
    target_sum
        Library size after normalisation (then log1p).
    n_top_genes, hvg_batch_key
        See :func:`highly_variable_genes`.
    n_pcs, scale, seed
        See :func:`pca`.
    """
    with timed("normalise", log):
        normalise(adata, target_sum=target_sum)
    with timed("highly variable genes", log):
        highly_variable_genes(adata, n_top_genes=n_top_genes, batch_key=hvg_batch_key)
    with timed("PCA", log):
        pca(adata, n_comps=n_pcs, scale=scale, seed=seed)


def signal_components(adata: ad.AnnData, *, min_comps: int = 10) -> int:
    """How many principal components stand above noise (the Marchenko-Pastur edge).

    For ``n`` cells and ``p`` scaled genes of pure noise, the eigenvalues of the
    covariance matrix lie below ``(1 + sqrt(p / n))**2`` (Marchenko and Pastur
    1967; the rule of PCAtools' ``chooseMarchenkoPastur``). Components above it
    carry structure; the rest only add noise to the kNN graph, which matters in
    a small compartment (90 cells of four stromal types in 30 components are
    neighbours by noise).

    Parameters
    ----------
    adata
        After :func:`pca` with ``scale=True`` (``uns["pca"]["variance"]``, ``var["highly_variable"]``).
    min_comps
        Never fewer (nor more than computed). The edge is conservative in a
        small compartment, where a subtle split (CD4 against CD8 T cells)
        lives in weak components: 10 keep it.

    Returns
    -------
    The number of components to use.
    """
    var = np.asarray(adata.uns["pca"]["variance"], dtype=float)
    hv = adata.var["highly_variable"].to_numpy()
    X = adata.X[:, hv]
    if sp.issparse(X):
        mean = np.asarray(X.mean(axis=0)).ravel()
        sq = np.asarray(X.multiply(X).mean(axis=0)).ravel()
    else:
        mean, sq = X.mean(axis=0), (X * X).mean(axis=0)
    p = int(((sq - mean**2) > 1e-12).sum())  # genes with variance: unit variance once scaled
    edge = (1 + np.sqrt(p / max(adata.n_obs, 1))) ** 2
    return int(min(len(var), max(min_comps, int((var > edge).sum()))))
