import anndata as ad

from milkcells import composition
from milkcells._script import setup
from milkcells._utils import write_table

log = setup(snakemake)
adata = ad.read_h5ad(snakemake.input[0])
table = composition.composition_table(adata)
write_table(table, snakemake.output.table)
# the donor-aware model of every share over days postpartum (see milkcells.composition_model)
time = composition.composition_over_time(table, seed=snakemake.config.get("seed", 0))
for _, row in time[time["note"].astype(str) != ""].iterrows():
    log.info("%s %s: %s", row["level"], row["label"], row["note"])
write_table(time, snakemake.output.time)
write_table(composition.composition_by_stage(table), snakemake.output.stage)
