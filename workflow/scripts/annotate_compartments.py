from milkcells import annotate
from milkcells._script import setup
from milkcells._utils import read_h5ad_part, write_h5ad_from, write_table

setup(snakemake)
cfg = dict(snakemake.params.cfg)
# the log-normalised expression and the graph (not the counts); the matrices are copied as stored
adata = read_h5ad_part(snakemake.input[0], layers=(), varm=False)
table = annotate.annotate_compartments(
    adata, markers=cfg["marker_table"], min_score=cfg["compartment_min_score"], min_margin=cfg["min_margin"],
    min_purity=cfg["min_purity"], expr_floor=cfg["expr_floor"], ambient_threshold=cfg["ambient_threshold"],
    exclusive_ratio=cfg["compartment_exclusive_ratio"],
)
write_table(table.reset_index(), snakemake.output.clusters)
write_h5ad_from(snakemake.input[0], snakemake.output.adata, {"obs": adata.obs, "uns": adata.uns})
