import numpy as np
import pandas as pd

from milkcells import compartments
from milkcells._script import setup
from milkcells._utils import Stored, package_versions, read_h5ad_part, write_h5ad_from, write_table

setup(snakemake)
# the atlas's annotations (its matrices are copied as stored: preprocessed.h5ad's X and counts, the
# corrected counts of the ambient rule); of each compartment only its cells' labels (obs) and records (uns)
atlas = read_h5ad_part(snakemake.input.adata, X=False, layers=(), varm=False)
parts = [read_h5ad_part(p, X=False, layers=(), obsm=False, obsp=False, varm=False) for p in snakemake.input.parts]
compartments.collect_cell_types(atlas, parts)
atlas.uns["milkcells"]["cell_types"] = {
    str(p.obs["compartment"].iloc[0]): p.uns["milkcells"]["cell_type"]["clusters"] for p in parts if p.n_obs
}
atlas.uns["milkcells"]["config"] = {k: v for k, v in snakemake.config.items() if v is not None}
atlas.uns["milkcells"]["versions"] = package_versions()
umap = read_h5ad_part(snakemake.input.umap, X=False, layers=(), obsp=False, varm=False)
if not np.array_equal(umap.obs_names, atlas.obs_names):
    raise ValueError(f"{snakemake.input.umap} does not hold the cells of {snakemake.input.adata} in its order")
atlas.uns["umap"] = umap.uns["umap"]
sweeps = [p.uns["milkcells"]["subcluster"]["sweep"] for p in parts if "sweep" in p.uns["milkcells"].get("subcluster", {})]
write_table(pd.concat(sweeps) if sweeps else pd.DataFrame(columns=["compartment", "resolution"]), snakemake.output.sweep)
elements = {"obs": atlas.obs, "var": atlas.var, "uns": atlas.uns, "obsm/X_umap": umap.obsm["X_umap"],
            "layers/ambient_corrected": Stored(snakemake.input.adata, "layers/ambient_corrected")}
elements |= {f"obsm/{k}": v for k, v in atlas.obsm.items()} | {f"obsp/{k}": v for k, v in atlas.obsp.items()}
write_h5ad_from(snakemake.input.matrices, snakemake.output.adata, elements)
