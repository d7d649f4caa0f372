"""Defaults live once, in the config schema; the library's keyword defaults mirror it."""

import inspect
from importlib.resources import files

import pytest
import yaml
from snakemake.utils import validate

from milkcells import (
    annotate,
    archives,
    cellcalling,
    cluster,
    compartments,
    demo,
    doublets,
    integrate,
    markers,
    preprocess,
    qc,
    recipe,
)

from .conftest import REPO

SCHEMA = yaml.safe_load((files("milkcells") / "schemas" / "config.schema.yaml").read_text())

# (config section, config key) -> (function, parameter)
MIRRORS = {
    ("cell_calling", "method"): (cellcalling.call_cells, "method"),
    ("cell_calling", "lower"): (cellcalling.call_cells, "lower"),
    ("cell_calling", "min_umis"): (cellcalling.call_cells, "min_umis"),
    ("cell_calling", "fdr"): (cellcalling.call_cells, "fdr"),
    ("cell_calling", "niters"): (cellcalling.call_cells, "niters"),
    ("cell_calling", "retain"): (cellcalling.call_cells, "retain"),
    ("cell_calling", "ambient_range"): (cellcalling.call_cells, "ambient_range"),
    ("cell_calling", "max_removed_fraction"): (cellcalling.call_cells, "max_removed_fraction"),
    ("cell_calling", "error_on_excess_loss"): (cellcalling.call_cells, "error_on_excess_loss"),
    **{("qc", k): (qc.filter_cells, k) for k in SCHEMA["properties"]["qc"]["properties"]},
    **{("doublets", k): (doublets.remove_doublets, k) for k in SCHEMA["properties"]["doublets"]["properties"]},
    ("preprocess", "min_cells"): (preprocess.merge_samples, "min_cells"),
    ("preprocess", "target_sum"): (preprocess.preprocess, "target_sum"),
    ("preprocess", "n_top_genes"): (preprocess.preprocess, "n_top_genes"),
    ("preprocess", "hvg_batch_key"): (preprocess.preprocess, "hvg_batch_key"),
    ("preprocess", "n_pcs"): (preprocess.preprocess, "n_pcs"),
    ("preprocess", "scale"): (preprocess.preprocess, "scale"),
    ("integration", "method"): (integrate.integrate, "method"),
    ("integration", "key"): (integrate.integrate, "key"),
    ("integration", "theta"): (integrate.integrate, "theta"),
    ("integration", "max_iter"): (integrate.integrate, "max_iter"),
    ("clustering", "n_neighbors"): (cluster.cluster, "n_neighbors"),
    ("clustering", "resolution"): (cluster.cluster, "resolution"),
    ("subcluster", "resolution"): (compartments.subcluster_compartment, "resolution"),
    ("markers", "method"): (markers.rank_markers, "method"),
    ("markers", "n_genes"): (markers.rank_markers, "n_genes"),
    ("markers", "max_cells_per_group"): (markers.rank_markers, "max_cells_per_group"),
    ("compartment_calls", "min_score"): (annotate.annotate_compartments, "min_score"),
    ("compartment_calls", "exclusive_ratio"): (annotate.annotate_compartments, "exclusive_ratio"),
    ("annotation", "marker_table"): (annotate.annotate_cell_types, "marker_table"),
    ("annotation", "min_score"): (annotate.annotate_cell_types, "min_score"),
    ("annotation", "min_margin"): (annotate.annotate_compartments, "min_margin"),
    ("annotation", "expr_floor"): (annotate.annotate_compartments, "expr_floor"),
    ("annotation", "ambient_threshold"): (annotate.annotate_compartments, "ambient_threshold"),
    ("annotation", "min_purity"): (annotate.annotate_compartments, "min_purity"),
    ("annotation", "milk_alpha"): (annotate.annotate_cell_types, "milk_alpha"),
    ("annotation", "shared_level"): (annotate.annotate_cell_types, "shared_level"),
    ("annotation", "min_relative"): (annotate.annotate_cell_types, "min_relative"),
    **{
        ("dataset", k): (archives.get(name).prepare, k)
        for name in archives.names()
        for k in ("mirror", "retries", "backoff")
    },
    ("demo", "n_cells"): (demo.simulate_milk_sample, "n_cells"),
    ("demo", "n_empty"): (demo.simulate_milk_sample, "n_empty"),
    ("demo", "n_genes"): (demo.simulate_milk_sample, "n_genes"),
}


@pytest.mark.parametrize(("section", "key"), sorted(MIRRORS))
def test_library_default_mirrors_schema(section, key):
    func, param = MIRRORS[(section, key)]
    schema_default = SCHEMA["properties"][section]["properties"][key]["default"]
    assert inspect.signature(func).parameters[param].default == schema_default
    if section != "dataset":  # the science blocks carry the library's keyword names
        assert key == param, (section, key, param)


@pytest.mark.parametrize("name", archives.names())
def test_each_archive_has_its_block_of_prepare_keywords(name):
    """dataset.<archive> holds exactly the archive's own keywords of prepare, with its defaults."""
    block = SCHEMA["properties"]["dataset"]["properties"][name]
    params = inspect.signature(archives.get(name).prepare).parameters
    own = [k for k in list(params)[1:] if k not in ("mirror", "retries", "backoff")]
    assert list(block["properties"]) == own
    assert block["additionalProperties"] is False and block["default"] == {}
    for key, spec in block["properties"].items():
        default = params[key].default
        if default is inspect.Parameter.empty:  # needed when the archive is chosen: an empty default
            assert spec["default"] in (None, []), (name, key)
        else:
            assert spec["default"] == default, (name, key)


def test_every_schema_key_is_mirrored_or_workflow_only():
    workflow_only = {("annotation", "author_label_column")} | {
        ("dataset", k)
        for k in ("archive", "name", "download_dir", *archives.names())  # blocks: tested above
    }
    for section, spec in SCHEMA["properties"].items():
        for key in spec.get("properties", {}):
            assert (section, key) in MIRRORS or (section, key) in workflow_only, (section, key)


@pytest.mark.parametrize(
    "param",
    ["min_score", "min_margin", "min_purity", "expr_floor", "ambient_threshold", "shared_level", "min_relative"],
)
def test_same_thresholds_for_cell_types_and_compartment_split(param):
    funcs = [annotate.annotate_cell_types, compartments.subcluster_compartment]
    if param not in (
        "min_score",
        "shared_level",
        "min_relative",
    ):  # compartments have their own, lower no-call baseline
        funcs.append(annotate.annotate_compartments)
    defaults = {inspect.signature(f).parameters[param].default for f in funcs}
    assert len(defaults) == 1, (param, defaults)


def test_shipped_configs_validate_and_agree_with_schema():
    for path in (REPO / "config" / "config.yaml", REPO / ".test" / "config.yaml", REPO / "config" / "twigger2022.yaml"):
        cfg = yaml.safe_load(path.read_text())
        validate(cfg, schema=str(files("milkcells") / "schemas" / "config.schema.yaml"), set_default=True)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    overrides = set()  # keys config.yaml sets to something other than the default (none now)
    for section, values in cfg.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if (section, key) not in overrides:
                    assert SCHEMA["properties"][section]["properties"][key]["default"] == value, (section, key)
        else:
            assert SCHEMA["properties"][section]["default"] == values, section


def test_biostudies_url_default_is_the_library_default():
    biostudies = archives.get("biostudies")
    block = SCHEMA["properties"]["dataset"]["properties"]["biostudies"]["properties"]
    assert block["base_url"]["default"] == biostudies.BIOSTUDIES_BASE_URL
    assert inspect.signature(biostudies.prepare).parameters["base_url"].default == biostudies.BIOSTUDIES_BASE_URL


def test_schema_rejects_unknown_and_bad_values():
    from snakemake.exceptions import WorkflowError

    schema = str(files("milkcells") / "schemas" / "config.schema.yaml")
    with pytest.raises(WorkflowError, match="qc"):
        validate({"samples": "s.tsv", "outdir": "o", "qc": {"nmads_mito": -1}}, schema=schema)
    with pytest.raises(WorkflowError):
        validate({"samples": "s.tsv", "outdir": "o", "typo_key": 1}, schema=schema)
    with pytest.raises(WorkflowError, match="accession"):  # an archive's block is checked like the rest
        validate(
            {"samples": "s.tsv", "outdir": "o", "dataset": {"biostudies": {"accession": ["E-MTAB-1"]}}}, schema=schema
        )


def test_nested_archive_defaults_are_filled():
    cfg = {
        "samples": "s.tsv",
        "outdir": "o",
        "dataset": {"archive": "biostudies", "biostudies": {"accessions": ["E-MTAB-9841"]}},
    }
    validate(cfg, schema=str(files("milkcells") / "schemas" / "config.schema.yaml"), set_default=True)
    assert cfg["dataset"]["biostudies"] == {
        "accessions": ["E-MTAB-9841"],
        "include_tissue": False,
        "base_url": "https://ftp.ebi.ac.uk/biostudies/fire/",
    }
    assert cfg["dataset"]["cellxgene"]["label_column"] == "cell_type" and cfg["dataset"]["retries"] == 5


@pytest.mark.parametrize(("old", "new"), sorted(recipe.RENAMED_KEYS.items()))
def test_renamed_keys_name_the_new_key(old, new):
    from milkcells import InputError

    with pytest.raises(InputError, match=rf"{old[0]}\.{old[1]}.*renamed.*{new[0]}\.{new[1]}"):
        recipe.default_config({old[0]: {old[1]: 1}})
    assert (
        new[1] in SCHEMA["properties"][new[0]]["properties"]
        and old[1] not in SCHEMA["properties"][old[0]]["properties"]
    )


def test_recipe_default_config_is_the_validated_schema_defaults():
    cfg = {"samples": "s.tsv", "outdir": "o"}
    validate(cfg, schema=str(files("milkcells") / "schemas" / "config.schema.yaml"), set_default=True)
    assert recipe.default_config() == cfg | {"samples": "config/samples.tsv", "outdir": "results"}
    got = recipe.default_config({"qc": {"min_genes": 150}})
    assert got["qc"]["min_genes"] == 150 and got["qc"]["min_counts"] == cfg["qc"]["min_counts"]
    from milkcells import InputError

    with pytest.raises(InputError, match="qc"):
        recipe.default_config({"qc": {"nmads_mito": -1}})


def test_every_stage_reads_blocks_of_the_schema():
    for stage, blocks in recipe.STAGES.items():
        for block in blocks:
            assert block in SCHEMA["properties"], (stage, block)
