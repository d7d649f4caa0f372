from milkcells import ambient
from milkcells._script import setup
from milkcells._utils import read_h5ad_part, write_h5ad_from, write_table

setup(snakemake)
# the counts and obs; the other matrices are copied as stored
adata = read_h5ad_part(snakemake.input[0], X=False, layers=("counts",), obsm=False, obsp=False, varm=False)
table = ambient.estimate_contamination(adata)
ambient.correct_ambient(adata)
write_table(table, snakemake.output.table)
write_h5ad_from(snakemake.input[0], snakemake.output.adata,
                {"obs": adata.obs, "uns": adata.uns, "layers/ambient_corrected": adata.layers["ambient_corrected"]})
