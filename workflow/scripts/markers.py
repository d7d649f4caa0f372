from milkcells import recipe
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, write_table

setup_rule(snakemake)
# the clusters, and the log-normalised expression of preprocessed.h5ad
adata = read_h5ad_part(
    snakemake.input.annotations, obsm=False, obsp=False, varm=False, matrices={"X": (snakemake.input.matrices, "X")}
)
write_table(recipe.markers(adata, config=snakemake.params.config), snakemake.output[0])
