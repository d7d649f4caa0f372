from milkcells import plots
from milkcells._script import setup
from milkcells._utils import read_h5ad_part, save_figure

setup(snakemake)
adata = read_h5ad_part(snakemake.input[0], X=False, layers=(), obsp=False, varm=False)  # obs and the embedding
key = snakemake.wildcards.key
save_figure(plots.umap(adata, key, title=f"{adata.n_obs} cells by {key.replace('_', ' ')}"), snakemake.output[0])
