from milkcells import recipe
from milkcells.logs import setup_rule
from milkcells.storage import read_h5ad_part, write_table

log = setup_rule(snakemake)
adata = read_h5ad_part(snakemake.input[0], X=False, layers=(), obsm=False, obsp=False, varm=False)  # obs
# the shares, the donor-aware model of every share over days postpartum (see milkcells.composition_model),
# the shares per lactation stage
table, time, stage = recipe.composition(adata, config=snakemake.params.config)
write_table(table, snakemake.output.table)
for _, row in time[time["note"].astype(str) != ""].iterrows():
    log.info("%s %s: %s", row["level"], row["label"], row["note"])
write_table(time, snakemake.output.time)
write_table(stage, snakemake.output.stage)
