from milkcells import demo
from milkcells.logs import setup_rule
from milkcells.storage import write_h5ad

log = setup_rule(snakemake)
row, settings = snakemake.params.row, snakemake.params.demo
adata = demo.simulate_milk_sample(
    row["sample"],
    donor=row["donor"],
    days_postpartum=row["days_postpartum"],
    n_cells=settings["n_cells"],
    n_empty=settings["n_empty"],
    n_genes=settings["n_genes"],
    seed=snakemake.params.seed,
)
log.info("simulated %s: %d droplets (SIMULATED demo data)", row["sample"], adata.n_obs)
write_h5ad(adata, snakemake.output[0])
