import anndata as ad

from milkcells import plots
from milkcells.logs import setup_rule
from milkcells.storage import save_figure

setup_rule(snakemake)
adata = ad.read_h5ad(snakemake.input[0])
save_figure(plots.marker_dotplot(adata, marker_table=snakemake.params.marker_table), snakemake.output[0])
