from milkcells import recipe
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, write_annotations, write_table

setup_rule(snakemake)
# the annotations and graph, and the log-normalised expression of preprocessed.h5ad
adata = read_h5ad_part(snakemake.input.annotations, varm=False, matrices={"X": (snakemake.input.matrices, "X")})
table = recipe.call_compartments(adata, config=snakemake.params.config)
write_table(table.reset_index(), snakemake.output.clusters)
write_annotations(adata, snakemake.output.adata)
