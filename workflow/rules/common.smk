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

SAMPLES = read_sample_sheet(config["samples"])
validate(SAMPLES.astype({"days_postpartum": object}).where(SAMPLES.notna(), None),
         schema=str(SCHEMAS / "samples.schema.yaml"))


def is_demo_path(path):
    p = Path(path)
    return p.parent.as_posix() == DEMO_DIR and p.name.startswith("simulated_") and p.suffix == ".h5ad"


for _name, _row in SAMPLES.iterrows():
    if not is_demo_path(_row["path"]) and not os.path.exists(_row["path"]):
        raise milkcells.InputError(
            "input not found", file=_row["path"], sample=_name, field="path",
            expected=f"a 10x MTX folder, a 10x .h5 or an .h5ad file (sample sheet {config['samples']})",
        )


wildcard_constraints:
    sample="|".join(map(re.escape, SAMPLES.index)) if SAMPLES.size else "NONE",
    compartment="|".join(COMPARTMENTS),


def out(*parts):
    return str(OUTDIR.joinpath(*parts))


def sample_input(wildcards):
    return SAMPLES.loc[wildcards.sample, "path"]


def sample_metadata(wildcards):
    row = SAMPLES.loc[wildcards.sample].drop(labels=["sample", "path"])
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}


def demo_row(wildcards):
    hits = SAMPLES[SAMPLES["path"].map(lambda p: Path(p).name) == f"simulated_{wildcards.demo}.h5ad"]
    if hits.empty:
        raise ValueError(f"no sample-sheet row has the path {DEMO_DIR}/simulated_{wildcards.demo}.h5ad")
    r = hits.iloc[0]
    days = r["days_postpartum"]
    return {"sample": r["sample"], "donor": r["donor"], "days_postpartum": 30.0 if days != days else float(days)}


def per_sample(name):
    return expand(out("samples", "{sample}", name), sample=SAMPLES.index)


def final_outputs():
    return [
        out("annotated.h5ad"),
        *expand(out("compartments", "{compartment}.h5ad"), compartment=["epithelial", "immune"]),
        out("tables", "qc_summary.tsv"),
        out("tables", "composition.tsv"),
        out("tables", "markers.tsv"),
        out("tables", "clusters.tsv"),
        out("tables", "ambient.tsv"),
        *expand(out("figures", "umap_{key}.png"), key=["compartment", "cell_type", "sample", "leiden"]),
        out("figures", "marker_dotplot.png"),
        out("figures", "qc_distributions.png"),
        out("figures", "composition_cell_type.png"),
        out("figures", "composition_compartment.png"),
    ]
