import anndata as ad

from milkcells import ambient
from milkcells._script import setup
from milkcells._utils import write_h5ad, write_table

setup(snakemake)
adata = ad.read_h5ad(snakemake.input[0])
table = ambient.estimate_contamination(adata)
ambient.correct_ambient(adata)
write_table(table, snakemake.output.table)
write_h5ad(adata, snakemake.output.adata)
