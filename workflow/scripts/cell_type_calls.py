from milkcells import compartments
from milkcells.logs import setup_rule
from milkcells.storage import write_table

setup_rule(snakemake)
calls = [compartments.read_cell_type_calls(path) for path in snakemake.input]
write_table(compartments.concat_cell_type_calls(calls), snakemake.output[0])
