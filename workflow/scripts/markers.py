import anndata as ad

from milkcells import markers
from milkcells._script import setup
from milkcells._utils import write_table

setup(snakemake)
adata = ad.read_h5ad(snakemake.input[0])
write_table(markers.rank_markers(adata, groupby="leiden", **snakemake.params.cfg), snakemake.output[0])
