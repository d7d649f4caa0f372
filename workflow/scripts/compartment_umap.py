from milkcells import recipe
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, write_h5ad_from

log = setup_rule(snakemake)
# the compartment's graph and embedding; its matrices are copied as stored
sub = read_h5ad_part(snakemake.input.adata, X=False, layers=(), varm=False)
# the atlas's UMAP of the compartment's cells, beside the compartment's own
atlas = read_h5ad_part(snakemake.input.umap, X=False, layers=(), obsp=False, varm=False)
added = {"obsm/X_umap_all": atlas[sub.obs_names].obsm["X_umap"]}
if "connectivities" in sub.obsp:
    recipe.embed(sub, config=snakemake.params.config)
    added |= {"obsm/X_umap": sub.obsm["X_umap"], "uns/umap": sub.uns["umap"]}
else:
    log.info("compartment %s: %d cells, not re-clustered: no UMAP", snakemake.wildcards.compartment, sub.n_obs)
write_h5ad_from(snakemake.input.adata, snakemake.output[0], added)
