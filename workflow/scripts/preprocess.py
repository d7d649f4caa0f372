import anndata as ad

from milkcells import preprocess
from milkcells.logs import setup_rule, timed
from milkcells.storage import write_h5ad

setup_rule(snakemake)
cfg = dict(snakemake.params.cfg)
with timed("read and merge the samples"):
    merged = preprocess.merge_samples([ad.read_h5ad(p) for p in snakemake.input], min_cells=cfg.pop("min_cells"))
preprocess.preprocess(merged, seed=snakemake.params.seed, **cfg)
write_h5ad(merged, snakemake.output[0])
