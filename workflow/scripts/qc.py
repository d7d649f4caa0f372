import anndata as ad

from milkcells import recipe
from milkcells.logs import setup_rule
from milkcells.storage import write_h5ad

setup_rule(snakemake)
write_h5ad(recipe.qc(ad.read_h5ad(snakemake.input[0]), config=snakemake.params.config), snakemake.output[0])
