import anndata as ad

from milkcells import plots, qc
from milkcells._script import setup
from milkcells._utils import save_figure, write_table

log = setup(snakemake)
records = {}
for path in snakemake.input:
    a = ad.read_h5ad(path, backed="r")
    records[a.uns["milkcells"]["ingest"]["params"]["sample"]] = a.uns["milkcells"]
table = qc.qc_summary_table(records)
for _, row in table[table["flags"] != ""].iterrows():
    log.warning("sample %s: %s", row["sample"], row["flags"])
write_table(table, snakemake.output.table)
save_figure(plots.qc_distributions(records), snakemake.output.figure)
