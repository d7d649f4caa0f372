import pandas as pd

from milkcells import compartments
from milkcells.logs import setup_rule
from milkcells.storage import write_table

setup_rule(snakemake)
sweeps = [pd.read_csv(path, sep="\t") for path in snakemake.input]
write_table(compartments.concat_sweeps(sweeps), snakemake.output[0])
