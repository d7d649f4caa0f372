import pandas as pd

from milkcells import composition, plots
from milkcells.logs import setup_rule
from milkcells.storage import save_figure

setup_rule(snakemake)
table = pd.read_csv(snakemake.input[0], sep="\t", dtype={"sample": str, "donor": str})
# the same model, and seed, as tables/composition_time.tsv
effects = composition.composition_over_time(table, seed=snakemake.params.config["seed"])
save_figure(plots.composition_over_days(table, effects), snakemake.output[0])
