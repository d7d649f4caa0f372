from milkcells import composition
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, write_table

log = setup_rule(snakemake)
adata = read_h5ad_part(snakemake.input[0], X=False, layers=(), obsm=False, obsp=False, varm=False)  # obs
table = composition.composition_table(adata)
write_table(table, snakemake.output.table)
# the donor-aware model of every share over days postpartum (see milkcells.composition_model)
time = composition.composition_over_time(table, seed=snakemake.config.get("seed", 0))
for _, row in time[time["note"].astype(str) != ""].iterrows():
    log.info("%s %s: %s", row["level"], row["label"], row["note"])
write_table(time, snakemake.output.time)
write_table(composition.composition_by_stage(table), snakemake.output.stage)
