import anndata as ad

from milkcells import plots
from milkcells._script import setup
from milkcells._utils import save_figure

setup(snakemake)
adata = ad.read_h5ad(snakemake.input[0])
save_figure(plots.marker_dotplot(adata, markers=snakemake.params.marker_table), snakemake.output[0])
