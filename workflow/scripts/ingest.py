from milkcells import io
from milkcells._script import setup
from milkcells._utils import write_h5ad

setup(snakemake)
adata = io.read_sample(snakemake.input[0], sample=snakemake.wildcards.sample, metadata=snakemake.params.metadata)
write_h5ad(adata, snakemake.output[0])
