import anndata as ad

from milkcells import recipe
from milkcells.logs import setup_rule, timed
from milkcells.storage import write_h5ad

setup_rule(snakemake)
with timed("read the samples"):
    samples = [ad.read_h5ad(p) for p in snakemake.input]
# the list is emptied as the samples are merged: they and the merged counts are not held at once
merged = recipe.preprocess(samples, config=snakemake.params.config, consume=True)
write_h5ad(merged, snakemake.output[0])
