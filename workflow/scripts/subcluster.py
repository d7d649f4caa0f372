import pandas as pd

from milkcells import compartments
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, write_h5ad, write_table

setup_rule(snakemake)
p = snakemake.params
a = p.annotation
name = snakemake.wildcards.compartment
# only this compartment's cells are read: their annotations and corrected counts, and their rows of
# preprocessed.h5ad (the genes' scale on all cells comes from the gene_scale rule); the UMAP is the
# rule `compartment_umap`'s, run beside the assembly of the atlas
adata = read_h5ad_part(snakemake.input.adata, rows=lambda obs: obs["compartment"].astype(str) == name, obsp=False,
                       matrices={"X": (snakemake.input.matrices, "X"),
                                 "counts": (snakemake.input.matrices, "layers/counts")})
scale = pd.read_csv(snakemake.input.scale, sep="\t", index_col="gene")["scale"]
sub = compartments.subcluster_compartment(
    adata, name,
    markers=a["marker_table"],
    n_top_genes=p.pre["n_top_genes"], hvg_batch_key=p.pre["hvg_batch_key"], n_pcs=p.pre["n_pcs"],
    integration=p.integration["method"], integration_key=p.integration["key"],
    n_neighbors=p.clustering["n_neighbors"], resolution=p.clustering["compartment_resolution"],
    min_score=a["min_score"], min_margin=a["min_margin"], min_purity=a["min_purity"], expr_floor=a["expr_floor"],
    ambient_threshold=a["ambient_threshold"], milk_alpha=a["milk_alpha"], shared_level=a["shared_level"],
    min_relative=a["min_relative"], scale=scale, umap=False, copy=False, seed=p.seed,
)
write_h5ad(sub, snakemake.output.adata)
# the resolution sweep (resolution auto), for the table of all compartments' sweeps
write_table(compartments.sweep_table(sub), snakemake.output.sweep)
