"""The recipe: the stages of the analysis in their order, each a library call with its settings.

Every stage takes the run's configuration (the keys and defaults of
``schemas/config.schema.yaml``; :func:`default_config`) and calls the library
with the blocks it names in :data:`STAGES`, whose keys are the keyword names of
the functions they feed. The workflow's rules call these stages one per job
(each rule's ``params`` hold :func:`stage_config` of its stage, so that a
changed setting re-runs the stage), and :func:`run` chains them in memory (the
notebook and the pipeline test), so the order and the arguments are written
once, here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib.resources import files
from typing import TYPE_CHECKING

from ._utils import InputError, package_versions

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd

__all__ = [
    "RENAMED_KEYS",
    "STAGES",
    "Run",
    "analyse",
    "call_cells",
    "call_compartments",
    "check_renamed_keys",
    "cluster",
    "collect",
    "composition",
    "correct_ambient",
    "default_config",
    "embed",
    "gene_scale",
    "markers",
    "preprocess",
    "qc",
    "record_run",
    "run",
    "stage_config",
    "subcluster",
    "integrate",
]

#: The stages in their order, each with the config blocks it reads (``seed`` is the top-level key).
STAGES: dict[str, tuple[str, ...]] = {
    "call_cells": ("seed", "cell_calling"),
    "qc": ("seed", "qc", "doublets"),
    "preprocess": ("seed", "preprocess"),
    "integrate": ("seed", "integration"),
    "cluster": ("seed", "clustering"),
    "embed": ("seed",),
    "markers": ("markers",),
    "call_compartments": ("annotation", "compartment_calls"),
    "correct_ambient": (),
    "gene_scale": ("annotation",),
    "subcluster": ("seed", "preprocess", "integration", "clustering", "annotation", "subcluster"),
    "collect": (),
    "composition": ("seed",),
}

#: Config keys renamed to the keyword names of the functions they feed: ``(block, old) -> (block, new)``.
RENAMED_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("clustering", "compartment_resolution"): ("subcluster", "resolution"),
    ("annotation", "markers"): ("annotation", "marker_table"),
    ("annotation", "compartment_min_score"): ("compartment_calls", "min_score"),
    ("annotation", "compartment_exclusive_ratio"): ("compartment_calls", "exclusive_ratio"),
}

#: The keys of the annotation block that the compartment calls share with the cell types.
_SHARED_WITH_COMPARTMENTS = ("marker_table", "min_margin", "min_purity", "expr_floor", "ambient_threshold")


def _schema() -> dict:
    import yaml

    return yaml.safe_load((files("milkcells") / "schemas" / "config.schema.yaml").read_text())


def check_renamed_keys(config: dict, *, file: str | None = None) -> None:
    """Raise :class:`~milkcells.InputError` naming the new key when ``config`` uses a renamed one."""
    for (block, old), (new_block, new) in RENAMED_KEYS.items():
        if isinstance(config.get(block), dict) and old in config[block]:
            raise InputError(
                "this config key was renamed",
                file=file,
                field=f"{block}.{old}",
                expected=f"{new_block}.{new}, the keyword of the library function it feeds",
            )


def default_config(overrides: dict | None = None) -> dict:
    """The run's configuration: the schema's defaults, with ``overrides`` (whole blocks or some of their keys).

    Unknown keys and bad values raise, as the workflow's validation does.
    """
    import jsonschema

    overrides = copy.deepcopy(overrides or {})
    check_renamed_keys(overrides)
    schema = _schema()

    def fill(spec: dict, given: dict) -> dict:
        out = dict(given)
        for key, sub in spec.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if "properties" in sub and isinstance(out.get(key), dict):
                out[key] = fill(sub, out[key])
        return out

    config = fill(schema, overrides)
    try:
        jsonschema.validate(config, schema)
    except jsonschema.ValidationError as e:
        raise InputError(
            e.message, field=".".join(map(str, e.absolute_path)) or None, expected="a setting of the config schema"
        ) from None
    return config


def stage_config(stage: str, config: dict) -> dict:
    """The config blocks stage ``stage`` reads (:data:`STAGES`), as a rule passes them in its ``params``."""
    return {block: config[block] for block in STAGES[stage]}


def call_cells(adata: ad.AnnData, *, config: dict) -> ad.AnnData:
    """Call cells in one sample's droplets (:func:`milkcells.cellcalling.call_cells`, block ``cell_calling``)."""
    from . import cellcalling

    return cellcalling.call_cells(adata, seed=config["seed"], **config["cell_calling"])


def qc(adata: ad.AnnData, *, config: dict) -> ad.AnnData:
    """QC filters, then doublet removal, of one sample (blocks ``qc`` and ``doublets``)."""
    from . import doublets
    from . import qc as qc_

    kept = qc_.filter_cells(adata, **config["qc"])
    return doublets.remove_doublets(kept, seed=config["seed"], **config["doublets"])


def preprocess(samples: list[ad.AnnData], *, config: dict, consume: bool = False) -> ad.AnnData:
    """Merge the samples, normalise, select genes and run PCA (block ``preprocess``).

    With ``consume`` the list of samples is emptied as they are merged (memory: see
    :func:`milkcells.preprocess.merge_samples`).
    """
    from . import preprocess as preprocess_

    settings = dict(config["preprocess"])
    merged = preprocess_.merge_samples(samples, min_cells=settings.pop("min_cells"), consume=consume)
    preprocess_.preprocess(merged, seed=config["seed"], **settings)
    return merged


def integrate(adata: ad.AnnData, *, config: dict) -> str:
    """Integrate the batches on the PCA embedding (block ``integration``); returns the embedding's key."""
    from . import integrate as integrate_

    return integrate_.integrate(adata, seed=config["seed"], **config["integration"])


def cluster(adata: ad.AnnData, *, config: dict, umap: bool = True) -> None:
    """KNN graph and Leiden clusters of all cells (block ``clustering``); the UMAP too with ``umap``."""
    from . import cluster as cluster_

    cluster_.cluster(adata, seed=config["seed"], umap=umap, **config["clustering"])


def embed(adata: ad.AnnData, *, config: dict) -> None:
    """UMAP of the kNN graph (:func:`milkcells.cluster.embed`), as :func:`cluster` with ``umap`` makes it."""
    from . import cluster as cluster_

    cluster_.embed(adata, seed=config["seed"])


def markers(adata: ad.AnnData, *, config: dict) -> pd.DataFrame:
    """Marker genes of every Leiden cluster (block ``markers``)."""
    from . import markers as markers_

    return markers_.rank_markers(adata, groupby="leiden", **config["markers"])


def call_compartments(adata: ad.AnnData, *, config: dict) -> pd.DataFrame:
    """Each cluster's compartment (blocks ``compartment_calls`` and the shared keys of ``annotation``)."""
    from . import annotate

    shared = {k: config["annotation"][k] for k in _SHARED_WITH_COMPARTMENTS}
    return annotate.annotate_compartments(adata, **shared, **config["compartment_calls"])


def correct_ambient(adata: ad.AnnData, *, config: dict) -> pd.DataFrame:
    """Each sample's ambient contamination (the returned table) and the corrected counts (a layer)."""
    from . import ambient

    table = ambient.estimate_contamination(adata)
    ambient.correct_ambient(adata)
    return table


def gene_scale(adata: ad.AnnData, *, config: dict) -> pd.Series:
    """Each marker gene's scale on all cells, for the compartments' cell types (block ``annotation``)."""
    from . import scoring

    a = config["annotation"]
    return scoring.marker_gene_scale(adata, marker_table=a["marker_table"], expr_floor=a["expr_floor"])


def subcluster(
    adata: ad.AnnData,
    compartment: str,
    *,
    config: dict,
    scale: pd.Series | None = None,
    umap: bool = True,
    copy: bool = True,
) -> ad.AnnData:
    """One compartment re-clustered and its cell types called (:func:`milkcells.compartments.subcluster_compartment`).

    Blocks ``subcluster`` and ``annotation``, with the genes, embedding and graph settings of
    ``preprocess``, ``integration`` and ``clustering`` applied within the compartment.

    Parameters
    ----------
    adata, compartment
        All cells, or (with ``scale``) the compartment's alone; its name.
    config
        The run's configuration.
    scale, umap, copy
        As :func:`milkcells.compartments.subcluster_compartment`'s.
    """
    from . import compartments

    pre, integration = config["preprocess"], config["integration"]
    annotation = {k: v for k, v in config["annotation"].items() if k != "author_label_column"}
    return compartments.subcluster_compartment(
        adata, compartment,
        n_top_genes=pre["n_top_genes"], hvg_batch_key=pre["hvg_batch_key"], n_pcs=pre["n_pcs"],
        integration=integration["method"], integration_key=integration["key"],
        n_neighbors=config["clustering"]["n_neighbors"], **config["subcluster"], **annotation,
        scale=scale, umap=umap, copy=copy, seed=config["seed"],
    )  # fmt: skip


def collect(adata: ad.AnnData, parts: list[ad.AnnData], *, config: dict, calls: dict | None = None) -> None:
    """The compartments' cell types back into the atlas, and the run's settings recorded (:func:`record_run`).

    ``calls``: each compartment's table of cluster calls, where it comes from a file
    (:func:`milkcells.compartments.collect_cell_types`).
    """
    from . import compartments

    compartments.collect_cell_types(adata, parts, calls=calls)
    record_run(adata, config)


def composition(adata: ad.AnnData, *, config: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Shares per sample, their model over days postpartum, and shares per lactation stage."""
    from . import composition as composition_

    table = composition_.composition_table(adata)
    return (
        table,
        composition_.composition_over_time(table, seed=config["seed"]),
        composition_.composition_by_stage(table),
    )


def record_run(adata: ad.AnnData, config: dict) -> None:
    """Keep the run's settings (``None`` left out) and the package versions in ``uns["milkcells"]``."""
    store = adata.uns.setdefault("milkcells", {})
    store["config"] = {k: v for k, v in config.items() if v is not None}
    store["versions"] = package_versions()


@dataclass
class Run:
    """What :func:`run` makes: the atlas, each compartment, and the tables (named as the workflow's)."""

    atlas: ad.AnnData
    compartments: dict[str, ad.AnnData] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame | pd.Series] = field(default_factory=dict)


def run(samples: list[ad.AnnData], config: dict | None = None) -> Run:
    """Run every stage in memory, in the workflow's order, on raw samples (from :func:`milkcells.io.read_sample`).

    ``config``: :func:`default_config` (whole, or overrides to it). The per-sample stages, the merge,
    then :func:`analyse`.
    """
    from . import qc as qc_

    config = default_config(config)
    singlets = [qc(call_cells(a, config=config), config=config) for a in samples]
    summary = qc_.qc_summary_table({_sample(a): a.uns["milkcells"] for a in singlets})
    atlas = preprocess(singlets, config=config)
    del singlets
    result = analyse(atlas, config)
    result.tables = {"qc_summary": summary, **result.tables}
    return result


def analyse(atlas: ad.AnnData, config: dict | None = None) -> Run:
    """Run the stages after the merge in memory, integration to composition (``atlas`` changes in place)."""
    from .compartments import cell_type_calls, concat_cell_type_calls, concat_sweeps, sweep_table
    from .markertable import COMPARTMENTS

    config = default_config(config)
    tables: dict = {}
    integrate(atlas, config=config)
    cluster(atlas, config=config)
    tables["markers"] = markers(atlas, config=config)
    tables["clusters"] = call_compartments(atlas, config=config).reset_index()
    tables["ambient"] = correct_ambient(atlas, config=config)
    tables["gene_scale"] = gene_scale(atlas, config=config)
    parts = {c: subcluster(atlas, c, config=config, scale=tables["gene_scale"]) for c in COMPARTMENTS}
    tables["resolution_sweep"] = concat_sweeps([sweep_table(p) for p in parts.values()])
    tables["cell_type_calls"] = concat_cell_type_calls([cell_type_calls(p, c) for c, p in parts.items()])
    collect(atlas, list(parts.values()), config=config)
    tables["composition"], tables["composition_time"], tables["composition_stage"] = composition(atlas, config=config)
    return Run(atlas=atlas, compartments=parts, tables=tables)


def _sample(adata: ad.AnnData) -> str:
    from .cellcalling import sample_name

    return sample_name(adata) or str(adata.obs["sample"].iloc[0])
