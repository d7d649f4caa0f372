from milkcells import integrate
from milkcells._script import setup
from milkcells._utils import read_h5ad_part, write_h5ad_from

setup(snakemake)
# the embedding and obs; the matrices are copied as stored
adata = read_h5ad_part(snakemake.input[0], X=False, layers=(), obsp=False, varm=False)
rep = integrate.integrate(adata, seed=snakemake.params.seed, **snakemake.params.cfg)
added = {"uns": adata.uns} | ({f"obsm/{rep}": adata.obsm[rep]} if rep != "X_pca" else {})
write_h5ad_from(snakemake.input[0], snakemake.output[0], added)
