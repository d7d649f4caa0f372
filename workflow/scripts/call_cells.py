from milkcells import cellcalling, io
from milkcells.logs import setup_rule
from milkcells.storage import write_h5ad

setup_rule(snakemake)
adata = io.read_sample(snakemake.input[0], sample=snakemake.wildcards.sample, metadata=snakemake.params.metadata)
called = cellcalling.call_cells(adata, seed=snakemake.params.seed, **snakemake.params.cfg)
write_h5ad(called, snakemake.output[0])
