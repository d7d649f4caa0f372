import numpy as np

from milkcells import compartments, recipe
from milkcells.logs import setup_rule
from milkcells.storage import Stored, read_h5ad_part, write_h5ad_from

setup_rule(snakemake)
# the atlas's annotations (its matrices are copied as stored: preprocessed.h5ad's X and counts, the
# corrected counts of the ambient rule); of each compartment its cells' labels (obs) and its table of
# cell-type calls (rule subcluster)
atlas = read_h5ad_part(snakemake.input.adata, X=False, layers=(), varm=False)
parts = [read_h5ad_part(p, X=False, layers=(), obsm=False, obsp=False, varm=False) for p in snakemake.input.parts]
calls = {t["compartment"].iloc[0]: t for t in map(compartments.read_cell_type_calls, snakemake.input.calls) if len(t)}
recipe.collect(atlas, parts, config=snakemake.config, calls=calls)
umap = read_h5ad_part(snakemake.input.umap, X=False, layers=(), obsp=False, varm=False)
if not np.array_equal(umap.obs_names, atlas.obs_names):
    raise ValueError(f"{snakemake.input.umap} does not hold the cells of {snakemake.input.adata} in its order")
atlas.uns["umap"] = umap.uns["umap"]
elements = {
    "obs": atlas.obs,
    "var": atlas.var,
    "uns": atlas.uns,
    "obsm/X_umap": umap.obsm["X_umap"],
    "layers/ambient_corrected": Stored(snakemake.input.adata, "layers/ambient_corrected"),
}
elements |= {f"obsm/{k}": v for k, v in atlas.obsm.items()} | {f"obsp/{k}": v for k, v in atlas.obsp.items()}
write_h5ad_from(snakemake.input.matrices, snakemake.output[0], elements)
