import pandas as pd

from milkcells import compartments, recipe
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, write_h5ad, write_table

setup_rule(snakemake)
name = snakemake.wildcards.compartment
# only this compartment's cells are read: their annotations and corrected counts, and their rows of
# preprocessed.h5ad (the genes' scale on all cells comes from the gene_scale rule); the UMAP is the
# rule `compartment_umap`'s, run beside the assembly of the atlas
adata = read_h5ad_part(
    snakemake.input.adata,
    rows=lambda obs: obs["compartment"].astype(str) == name,
    obsp=False,
    matrices={"X": (snakemake.input.matrices, "X"), "counts": (snakemake.input.matrices, "layers/counts")},
)
scale = pd.read_csv(snakemake.input.scale, sep="\t", index_col="gene")["scale"]
sub = recipe.subcluster(adata, name, config=snakemake.params.config, scale=scale, umap=False, copy=False)
write_h5ad(sub, snakemake.output.adata)
# the resolution sweep (resolution auto), for the table of all compartments' sweeps
write_table(compartments.sweep_table(sub), snakemake.output.sweep)
# its cell-type calls per cluster, every digit kept: the atlas (rule annotated) keeps them as they are
write_table(compartments.cell_type_calls(sub, name), snakemake.output.calls, exact=True)
