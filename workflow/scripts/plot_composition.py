import pandas as pd

from milkcells import plots
from milkcells.logs import setup_rule
from milkcells.storage import save_figure

setup_rule(snakemake)
table = pd.read_csv(snakemake.input[0], sep="\t", dtype={"sample": str})
save_figure(plots.composition_bars(table, level=snakemake.wildcards.level), snakemake.output[0])
