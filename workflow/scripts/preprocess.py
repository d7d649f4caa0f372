import anndata as ad

from milkcells import recipe
from milkcells.logs import setup_rule, timed
from milkcells.storage import write_h5ad

setup_rule(snakemake)
with timed("read the samples"):
    samples = [ad.read_h5ad(p) for p in snakemake.input]
write_h5ad(recipe.preprocess(samples, config=snakemake.params.config), snakemake.output[0])
