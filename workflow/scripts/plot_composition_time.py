import pandas as pd

from milkcells import plots
from milkcells._script import setup
from milkcells._utils import save_figure

setup(snakemake)
table = pd.read_csv(snakemake.input[0], sep="\t", dtype={"sample": str, "donor": str})
save_figure(plots.shares_over_time(table), snakemake.output[0])
