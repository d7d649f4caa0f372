import anndata as ad

from milkcells import plots
from milkcells._script import setup
from milkcells._utils import save_figure

setup(snakemake)
adata = ad.read_h5ad(snakemake.input[0])
key = snakemake.wildcards.key
save_figure(plots.umap(adata, key, title=f"{adata.n_obs} cells by {key.replace('_', ' ')}"), snakemake.output[0])
