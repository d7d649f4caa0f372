from milkcells import recipe
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, write_annotations

setup_rule(snakemake)
adata = read_h5ad_part(snakemake.input[0])  # annotations: no matrix
# the UMAP is the rule `umap`'s, run beside the compartment calls
recipe.cluster(adata, config=snakemake.params.config, umap=False)
write_annotations(adata, snakemake.output[0])
