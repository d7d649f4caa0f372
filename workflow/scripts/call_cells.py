from milkcells import io, recipe
from milkcells.logs import setup_rule
from milkcells.storage import write_h5ad

setup_rule(snakemake)
adata = io.read_sample(snakemake.input[0], sample=snakemake.wildcards.sample, metadata=snakemake.params.metadata)
write_h5ad(recipe.call_cells(adata, config=snakemake.params.config), snakemake.output[0])
