from milkcells import recipe
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, write_annotations, write_table

setup_rule(snakemake)
# the annotations, and the counts of preprocessed.h5ad
adata = read_h5ad_part(
    snakemake.input.annotations, varm=False, matrices={"counts": (snakemake.input.matrices, "layers/counts")}
)
write_table(recipe.correct_ambient(adata, config={}), snakemake.output.table)
# the annotations and the one new matrix: the corrected counts
write_annotations(adata, snakemake.output.adata, layers=("ambient_corrected",))
