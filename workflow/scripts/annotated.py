import anndata as ad
import pandas as pd

from milkcells import compartments
from milkcells._script import setup
from milkcells._utils import package_versions, read_h5ad_part, write_h5ad, write_table

setup(snakemake)
adata = ad.read_h5ad(snakemake.input.adata)
# of each compartment only its cells' labels (obs) and records (uns)
parts = [read_h5ad_part(p, X=False, layers=(), obsm=False, obsp=False, varm=False) for p in snakemake.input.parts]
compartments.collect_cell_types(adata, parts)
adata.uns["milkcells"]["cell_types"] = {
    str(p.obs["compartment"].iloc[0]): p.uns["milkcells"]["cell_type"]["clusters"] for p in parts if p.n_obs
}
adata.uns["milkcells"]["config"] = {k: v for k, v in snakemake.config.items() if v is not None}
adata.uns["milkcells"]["versions"] = package_versions()
sweeps = [p.uns["milkcells"]["subcluster"]["sweep"] for p in parts if "sweep" in p.uns["milkcells"].get("subcluster", {})]
write_table(pd.concat(sweeps) if sweeps else pd.DataFrame(columns=["compartment", "resolution"]), snakemake.output.sweep)
write_h5ad(adata, snakemake.output.adata)
