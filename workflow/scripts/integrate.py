from milkcells import recipe
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, write_annotations

setup_rule(snakemake)
# the cells' annotations and embedding; the matrices stay in preprocessed.h5ad
adata = read_h5ad_part(snakemake.input[0], X=False, layers=(), varm=False)
recipe.integrate(adata, config=snakemake.params.config)
write_annotations(adata, snakemake.output[0])
