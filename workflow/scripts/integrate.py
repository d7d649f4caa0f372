import anndata as ad

from milkcells import integrate
from milkcells._script import setup
from milkcells._utils import write_h5ad

setup(snakemake)
adata = ad.read_h5ad(snakemake.input[0])
integrate.integrate(adata, seed=snakemake.params.seed, **snakemake.params.cfg)
write_h5ad(adata, snakemake.output[0])
