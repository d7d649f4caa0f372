"""The baseline of ``benchmarks/scale.py``: a plain scanpy tutorial script on the same input.

It follows the scanpy clustering tutorial, as most people would write it, with scanpy defaults:
QC metrics, fixed cell and gene filters, normalise, log1p, batch-aware HVGs (per sample),
``adata.raw``, dense scaling (max 10), PCA (arpack), neighbours, UMAP, Leiden (igraph),
Wilcoxon markers (on ``raw``) and one h5ad written::

    python benchmarks/plain_scanpy.py out.h5ad sample1.h5ad sample2.h5ad ...
"""

from __future__ import annotations

import sys

import anndata as ad
import scanpy as sc


def main(out: str, paths: list[str]) -> None:
    adatas = {}
    for p in paths:
        a = sc.read_h5ad(p)
        adatas[a.obs["sample"].iloc[0] if "sample" in a.obs else p] = a
    adata = ad.concat(adatas, label="sample", index_unique="-")
    adata.var["mt"] = adata.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], inplace=True, log1p=False)
    sc.pp.filter_cells(adata, min_genes=200)
    sc.pp.filter_cells(adata, min_counts=500)
    sc.pp.filter_genes(adata, min_cells=3)
    adata = adata[adata.obs["pct_counts_mt"] < 20].copy()
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=2000, batch_key="sample")
    adata.raw = adata
    hv = adata[:, adata.var["highly_variable"]].copy()
    sc.pp.scale(hv, max_value=10)
    sc.tl.pca(hv, svd_solver="arpack")
    sc.pp.neighbors(hv, n_neighbors=15, n_pcs=30)
    sc.tl.umap(hv)
    sc.tl.leiden(hv, flavor="igraph", n_iterations=2, directed=False)
    sc.tl.rank_genes_groups(hv, "leiden", method="wilcoxon")
    for key in ("X_pca", "X_umap"):
        adata.obsm[key] = hv.obsm[key]
    adata.obs["leiden"] = hv.obs["leiden"]
    adata.uns["rank_genes_groups"] = hv.uns["rank_genes_groups"]
    adata.write_h5ad(out)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
