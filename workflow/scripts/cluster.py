import anndata as ad

from milkcells import cluster
from milkcells._script import setup
from milkcells._utils import write_h5ad

setup(snakemake)
adata = ad.read_h5ad(snakemake.input[0])
p = snakemake.params
cluster.cluster(adata, n_neighbors=p.n_neighbors, resolution=p.resolution, seed=p.seed)
write_h5ad(adata, snakemake.output[0])
