import anndata as ad

from milkcells import qc
from milkcells._script import setup
from milkcells._utils import write_h5ad

setup(snakemake)
adata = ad.read_h5ad(snakemake.input[0])
write_h5ad(qc.filter_cells(adata, **snakemake.params.cfg), snakemake.output[0])
