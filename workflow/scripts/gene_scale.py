from milkcells import recipe
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, write_table

setup_rule(snakemake)
# the evidence layer and the kNN graph of all cells: nothing else of the atlas is read
adata = read_h5ad_part(snakemake.input[0], X=False, layers=("ambient_corrected",), obsm=False, varm=False)
scale = recipe.gene_scale(adata, config=snakemake.params.config)
write_table(scale.rename("scale").rename_axis("gene").reset_index(), snakemake.output[0])
