from milkcells import cluster
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, write_annotations

setup_rule(snakemake)
adata = read_h5ad_part(snakemake.input[0])  # annotations: no matrix
p = snakemake.params
# the UMAP is the rule `umap`'s, run beside the compartment calls
cluster.cluster(adata, n_neighbors=p.n_neighbors, resolution=p.resolution, seed=p.seed, umap=False)
write_annotations(adata, snakemake.output[0])
