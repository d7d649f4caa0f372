from milkcells import annotate
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, write_annotations, write_table

setup_rule(snakemake)
cfg = dict(snakemake.params.cfg)
# the annotations and graph, and the log-normalised expression of preprocessed.h5ad
adata = read_h5ad_part(snakemake.input.annotations, varm=False, matrices={"X": (snakemake.input.matrices, "X")})
table = annotate.annotate_compartments(
    adata, markers=cfg["marker_table"], min_score=cfg["compartment_min_score"], min_margin=cfg["min_margin"],
    min_purity=cfg["min_purity"], expr_floor=cfg["expr_floor"], ambient_threshold=cfg["ambient_threshold"],
    exclusive_ratio=cfg["compartment_exclusive_ratio"],
)
write_table(table.reset_index(), snakemake.output.clusters)
write_annotations(adata, snakemake.output.adata)
