from milkcells import archives
from milkcells.logs import setup_rule

log = setup_rule(snakemake)
d = snakemake.params.dataset
out_dir = snakemake.output.sheet.rsplit("/", 1)[0]
archive = archives.get(d["archive"])
archive.prepare(out_dir, mirror=d["mirror"], retries=d["retries"], backoff=d["backoff"], **d.get(archive.NAME, {}))
