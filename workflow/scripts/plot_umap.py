from milkcells import plots
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, save_figure

setup_rule(snakemake)
adata = read_h5ad_part(snakemake.input[0], X=False, layers=(), obsp=False, varm=False)  # obs and the embedding
key = snakemake.wildcards.key
save_figure(plots.umap(adata, key, title=f"{adata.n_obs} cells by {key.replace('_', ' ')}"), snakemake.output[0])
