import anndata as ad

from milkcells import doublets, qc
from milkcells._script import setup
from milkcells._utils import record_params, write_h5ad

log = setup(snakemake)
adata = qc.filter_cells(ad.read_h5ad(snakemake.input[0]), **snakemake.params.qc)
cfg = dict(snakemake.params.doublets)
if cfg.pop("enabled"):
    adata = doublets.remove_doublets(adata, seed=snakemake.params.seed, **cfg)
else:
    log.info("doublet detection disabled in the config")
    record_params(adata, "doublets", {"enabled": False})
    adata.uns["milkcells"]["doublets"].update(
        {"n_doublets": 0, "n_kept": int(adata.n_obs), "by_detector": {"scrublet": 0, "heterotypic": 0, "both": 0}}
    )
write_h5ad(adata, snakemake.output[0])
