from milkcells import datasets
from milkcells.logs import setup_rule
from milkcells.storage import write_h5ad

log = setup_rule(snakemake)
row, demo = snakemake.params.row, snakemake.params.demo
adata = datasets.simulate_milk_sample(
    row["sample"],
    donor=row["donor"],
    days_postpartum=row["days_postpartum"],
    n_cells=demo["n_cells"],
    n_empty=demo["n_empty"],
    n_genes=demo["n_genes"],
    seed=snakemake.params.seed,
)
log.info("simulated %s: %d droplets (SIMULATED demo data)", row["sample"], adata.n_obs)
write_h5ad(adata, snakemake.output[0])
