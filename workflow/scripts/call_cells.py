import anndata as ad

from milkcells import cellcalling
from milkcells._script import setup
from milkcells._utils import write_h5ad

setup(snakemake)
adata = ad.read_h5ad(snakemake.input[0])
called = cellcalling.call_cells(adata, seed=snakemake.params.seed, **snakemake.params.cfg)
write_h5ad(called, snakemake.output[0])
