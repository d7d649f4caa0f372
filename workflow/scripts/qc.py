import anndata as ad

from milkcells import doublets, qc
from milkcells.logs import setup_rule
from milkcells.storage import write_h5ad

setup_rule(snakemake)
adata = qc.filter_cells(ad.read_h5ad(snakemake.input[0]), **snakemake.params.qc)
adata = doublets.remove_doublets(adata, seed=snakemake.params.seed, **snakemake.params.doublets)
write_h5ad(adata, snakemake.output[0])
