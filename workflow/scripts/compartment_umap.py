from milkcells import cluster
from milkcells._script import setup
from milkcells._utils import read_h5ad_part, write_h5ad_from

log = setup(snakemake)
# the compartment's graph and embedding; its matrices are copied as stored
sub = read_h5ad_part(snakemake.input[0], X=False, layers=(), varm=False)
added = {}
if "connectivities" in sub.obsp:
    cluster.embed(sub, seed=snakemake.params.seed)
    added = {"obsm/X_umap": sub.obsm["X_umap"], "uns/umap": sub.uns["umap"]}
else:
    log.info("compartment %s: %d cells, not re-clustered: no UMAP", snakemake.wildcards.compartment, sub.n_obs)
write_h5ad_from(snakemake.input[0], snakemake.output[0], added)
