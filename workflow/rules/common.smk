# Helpers shared by the rules: config and sample-sheet validation, paths.
import os
import re
from importlib.resources import files
from pathlib import Path

from snakemake.utils import validate

import milkcells
from milkcells.io import read_sample_sheet

SCHEMAS = files("milkcells") / "schemas"

validate(config, schema=str(SCHEMAS / "config.schema.yaml"), set_default=True)

OUTDIR = Path(config["outdir"])
DEMO_DIR = "resources/demo"
COMPARTMENTS = ["epithelial", "immune", "stromal"]

# Where the samples come from: the sample sheet (`samples`, the default), or a
# public dataset pulled by the checkpoint `prepare_dataset` (dataset.source).
DATASET = config["dataset"]
MODE = DATASET["source"]
DATASET_DIR = Path(DATASET["download_dir"]) / DATASET["name"]


def check_sheet(sheet, path):
    validate(sheet.astype({"days_postpartum": object}).where(sheet.notna(), None),
             schema=str(SCHEMAS / "samples.schema.yaml"))
    return sheet


SAMPLES = check_sheet(read_sample_sheet(config["samples"]), config["samples"]) if MODE == "samples" else None


def is_demo_path(path):
    p = Path(path)
    return p.parent.as_posix() == DEMO_DIR and p.name.startswith("simulated_") and p.suffix == ".h5ad"


for _name, _row in (SAMPLES.iterrows() if SAMPLES is not None else ()):
    if not is_demo_path(_row["path"]) and not os.path.exists(_row["path"]):
        raise milkcells.InputError(
            "input not found", file=_row["path"], sample=_name, field="path",
            expected=f"a 10x MTX folder, a 10x .h5 or an .h5ad file (sample sheet {config['samples']})",
        )


wildcard_constraints:
    sample="|".join(map(re.escape, SAMPLES.index)) if SAMPLES is not None else r"[A-Za-z0-9][A-Za-z0-9._-]*",
    compartment="|".join(COMPARTMENTS),


def out(*parts):
    return str(OUTDIR.joinpath(*parts))


def sample_table():
    """The sample sheet: the user's, or the one the checkpoint built for a public dataset."""
    if SAMPLES is not None:
        return SAMPLES
    sheet = checkpoints.prepare_dataset.get().output.sheet
    return check_sheet(read_sample_sheet(sheet), sheet)


def sample_input(wildcards):
    return sample_table().loc[wildcards.sample, "path"]


def sample_metadata(wildcards):
    row = sample_table().loc[wildcards.sample].drop(labels=["sample", "path"])
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}


def demo_row(wildcards):
    hits = SAMPLES[SAMPLES["path"].map(lambda p: Path(p).name) == f"simulated_{wildcards.demo}.h5ad"]
    if hits.empty:
        raise ValueError(f"no sample-sheet row has the path {DEMO_DIR}/simulated_{wildcards.demo}.h5ad")
    r = hits.iloc[0]
    days = r["days_postpartum"]
    return {"sample": r["sample"], "donor": r["donor"], "days_postpartum": 30.0 if days != days else float(days)}


def per_sample(name):
    """Input function: one file per sample (known once the sample sheet is)."""

    def files(wildcards):
        return expand(out("samples", "{sample}", name), sample=sample_table().index)

    return files


def dataset_inputs(wildcards):
    """Local files a public-dataset import reads (SCP export, URL list)."""
    if MODE == "scp":
        return [DATASET["scp_counts"], DATASET["scp_metadata"]]
    if MODE == "urls":
        return [DATASET["url_list"]]
    return []


# the authors' labels to compare with, when the data carry them; the simulated demo
# compares its calls with the simulation's truth
AUTHOR_KEY = config["annotation"]["author_label_column"] or (
    "author_label" if MODE in ("scp", "cellxgene")
    else "sim_cell_type" if SAMPLES is not None and SAMPLES["path"].map(is_demo_path).all()
    else None
)


def final_outputs():
    agreement = [out("tables", "author_agreement.tsv"), out("figures", "author_confusion.png")] if AUTHOR_KEY else []
    return agreement + [
        out("annotated.h5ad"),
        *expand(out("compartments", "{compartment}.h5ad"), compartment=["epithelial", "immune"]),
        out("tables", "qc_summary.tsv"),
        out("tables", "composition.tsv"),
        out("tables", "markers.tsv"),
        out("tables", "clusters.tsv"),
        out("tables", "ambient.tsv"),
        out("tables", "composition_time.tsv"),
        out("tables", "resolution_sweep.tsv"),
        out("figures", "composition_time.png"),
        *expand(out("figures", "umap_{key}.png"),
                key=["compartment", "cell_type", "cell_type_confidence", "sample", "leiden"]),
        out("figures", "marker_dotplot.png"),
        out("figures", "qc_distributions.png"),
        out("figures", "composition_cell_type.png"),
        out("figures", "composition_compartment.png"),
    ]
