import anndata as ad

from milkcells import annotate
from milkcells._script import setup
from milkcells._utils import write_h5ad, write_table

setup(snakemake)
cfg = dict(snakemake.params.cfg)
adata = ad.read_h5ad(snakemake.input[0])
table = annotate.annotate_compartments(
    adata, markers=cfg["marker_table"], min_score=cfg["compartment_min_score"], min_margin=cfg["min_margin"],
    min_purity=cfg["min_purity"], expr_floor=cfg["expr_floor"], ambient_threshold=cfg["ambient_threshold"],
    exclusive_ratio=cfg["compartment_exclusive_ratio"],
)
write_table(table.reset_index(), snakemake.output.clusters)
write_h5ad(adata, snakemake.output.adata)
