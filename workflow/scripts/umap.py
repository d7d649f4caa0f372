import anndata as ad
import pandas as pd

from milkcells import recipe
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, write_h5ad

setup_rule(snakemake)
# the graph and the embedding it was built from: no matrix is read
adata = read_h5ad_part(snakemake.input[0], X=False, layers=(), varm=False)
recipe.embed(adata, config=snakemake.params.config)
result = ad.AnnData(
    obs=pd.DataFrame(index=adata.obs_names), obsm={"X_umap": adata.obsm["X_umap"]}, uns={"umap": adata.uns["umap"]}
)
write_h5ad(result, snakemake.output[0])
