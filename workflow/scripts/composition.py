import anndata as ad

from milkcells import composition
from milkcells._script import setup
from milkcells._utils import write_table

setup(snakemake)
adata = ad.read_h5ad(snakemake.input[0])
table = composition.composition_table(adata)
write_table(table, snakemake.output.table)
write_table(composition.composition_over_time(table), snakemake.output.time)
