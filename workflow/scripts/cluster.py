from milkcells import cluster
from milkcells._script import setup
from milkcells._utils import read_h5ad_part, write_h5ad_from

setup(snakemake)
# the embedding and obs; the matrices are copied as stored
adata = read_h5ad_part(snakemake.input[0], X=False, layers=(), obsp=False, varm=False)
p = snakemake.params
# the UMAP is the rule `umap`'s, run beside the compartment calls
cluster.cluster(adata, n_neighbors=p.n_neighbors, resolution=p.resolution, seed=p.seed, umap=False)
write_h5ad_from(snakemake.input[0], snakemake.output[0],
                {"obs": adata.obs, "uns": adata.uns} | {f"obsp/{k}": v for k, v in adata.obsp.items()})
