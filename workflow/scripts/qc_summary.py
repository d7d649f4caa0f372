import anndata as ad

from milkcells import plots, qc
from milkcells.logs import setup_rule
from milkcells.storage import save_figure, write_table

log = setup_rule(snakemake)
# each sample's records of cell calling, QC and doublets (its uns)
records = {
    name: ad.read_h5ad(path, backed="r").uns["milkcells"]
    for name, path in zip(snakemake.params.samples, snakemake.input, strict=True)
}
table = qc.qc_summary_table(records)
for _, row in table[table["flags"] != ""].iterrows():
    log.warning("sample %s: %s", row["sample"], row["flags"])
write_table(table, snakemake.output.table)
save_figure(plots.qc_distributions(records), snakemake.output.figure)
