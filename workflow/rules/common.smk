# Helpers shared by the rules: config and sample-sheet validation, paths.
import re
from importlib.resources import files
from pathlib import Path

from snakemake.utils import validate

from milkcells import archives
from milkcells.markertable import COMPARTMENTS
from milkcells.recipe import check_renamed_keys, stage_config
from milkcells.samplesheet import SAMPLE_NAME, read_sample_sheet

SCHEMAS = files("milkcells") / "schemas"

check_renamed_keys(config)
validate(config, schema=str(SCHEMAS / "config.schema.yaml"), set_default=True)

OUTDIR = Path(config["outdir"])
DEMO_DIR = "resources/demo"

# Where the samples come from: the sample sheet (`samples`, the default), or a public
# dataset pulled by the checkpoint `prepare_dataset` (dataset.archive: a module of
# milkcells.archives, its settings in dataset.<archive>).
DATASET = config["dataset"]
MODE = DATASET["archive"]
ARCHIVE = None if MODE == "samples" else archives.get(MODE)
DATASET_DIR = Path(DATASET["download_dir"]) / DATASET["name"]


def is_demo_path(path):
    p = Path(path)
    return p.parent.as_posix() == DEMO_DIR and p.name.startswith("simulated_") and p.suffix == ".h5ad"


# the sheet is checked against its schema (schemas/samples.schema.yaml) and its inputs must exist, but the
# simulated demo's, which the first rule makes
SAMPLES = read_sample_sheet(config["samples"], check_paths=True, made_later=is_demo_path) if MODE == "samples" else None


wildcard_constraints:
    sample="|".join(map(re.escape, SAMPLES.index)) if SAMPLES is not None else SAMPLE_NAME.pattern.strip("^$"),
    compartment="|".join(COMPARTMENTS),


def out(*parts):
    return str(OUTDIR.joinpath(*parts))


def sample_table():
    """The sample sheet: the user's, or the one the checkpoint built for a public dataset."""
    if SAMPLES is not None:
        return SAMPLES
    return read_sample_sheet(checkpoints.prepare_dataset.get().output.sheet, check_paths=True)


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
    """Local files a public-dataset import reads (an SCP export, a URL list)."""
    return ARCHIVE.local_inputs(DATASET.get(MODE, {})) if ARCHIVE is not None else []


# the authors' labels to compare with, when the data carry them; the simulated demo
# compares its calls with the simulation's truth
AUTHOR_KEY = config["annotation"]["author_label_column"] or (
    "author_label"
    if ARCHIVE is not None and ARCHIVE.CARRIES_AUTHOR_LABELS
    else "sim_cell_type" if SAMPLES is not None and SAMPLES["path"].map(is_demo_path).all() else None
)


def final_outputs():
    agreement = [out("tables", "author_agreement.tsv"), out("figures", "author_confusion.png")] if AUTHOR_KEY else []
    return agreement + [
        out("annotated.h5ad"),
        *expand(out("compartments", "{compartment}.h5ad"), compartment=COMPARTMENTS),
        out("tables", "qc_summary.tsv"),
        out("tables", "composition.tsv"),
        out("tables", "markers.tsv"),
        out("tables", "clusters.tsv"),
        out("tables", "ambient.tsv"),
        out("tables", "composition_time.tsv"),
        out("tables", "resolution_sweep.tsv"),
        out("tables", "cell_type_calls.tsv"),
        out("figures", "composition_time.png"),
        *expand(
            out("figures", "umap_{key}.png"),
            key=["compartment", "cell_type", "cell_type_confidence", "sample", "leiden"],
        ),
        out("figures", "marker_dotplot.png"),
        out("figures", "qc_distributions.png"),
        out("figures", "composition_cell_type.png"),
        out("figures", "composition_compartment.png"),
    ]


# Resources sized from each job's input (its size on disk in MB: uncompressed h5ad, about the
# size of its matrices in memory). Per rule: threads (at most; see sized_threads), memory = base +
# factor x input MB and runtime = base + minutes per input GB, both times 1.5 ** (attempt - 1), so
# that a job killed for memory or time (--retries, set in the SLURM profiles) is retried with more.
# The factors come from benchmarks/scale.py (peak RSS and time of each rule's largest job against
# its input at 110,000 cells on 2 cores, in the comments: input, peak, time), rounded up; runtimes
# are several times the measured. Rules that read a part of their input (only obs, an embedding, a
# graph, one layer) have small factors.
#          rule: (threads, mem MB base, MB per input MB, runtime min base, min per input GB)
RULE_SIZING = {
    "simulate_demo": (1, 1000, 0, 10, 0),
    "prepare_dataset": (1, 2000, 0, 240, 0),
    "call_cells": (1, 1000, 5, 10, 20),  # 110k cells: 227 MB in, 0.9 GB peak, 4 s (read + call)
    "qc": (1, 1500, 10, 10, 20),  # 228 MB, 1.9 GB, 54 s (12,800 cells; QC + doublets)
    "qc_summary": (1, 1000, 1, 10, 5),  # 1.8 GB, 0.5 GB, 23 s
    "preprocess": (4, 1500, 5, 15, 10),  # 1.8 GB, 7.5 GB, 70 s
    "integrate": (4, 1000, 0.5, 15, 5),  # 3.6 GB (reads obs, the PCA), 0.4 GB, 22 s
    "cluster": (4, 1500, 0.5, 20, 5),  # 3.6 GB (obs, the embedding), 1.2 GB, 88 s
    "umap": (1, 1000, 0.3, 20, 5),  # 3.7 GB (the graph, the embedding), 0.7 GB, 75 s; one thread
    "markers": (2, 1500, 2, 20, 5),  # 3.7 GB, 4.7 GB, 46 s
    "annotate_compartments": (2, 1500, 1, 15, 5),  # 3.7 GB (X, the graph), 2.3 GB, 25 s
    "ambient": (1, 1500, 2, 15, 5),  # 3.7 GB (the counts), 4.6 GB, 51 s
    "gene_scale": (1, 1000, 0.5, 10, 3),  # 5.5 GB (one layer, the graph), 2.3 GB, 4 s
    "subcluster": (4, 1500, 2, 20, 5),  # 5.5 GB (its rows), 6.8 GB, 118 s (epithelial, 89k cells)
    "compartment_umap": (1, 1500, 0.3, 20, 5),
    "resolution_sweep": (1, 1000, 0, 10, 0),  # 5.0 GB (the graph; copies the file), 0.7 GB, 84 s
    "cell_type_calls": (1, 1000, 0, 10, 0),
    "annotated": (1, 1000, 0.1, 15, 3),  # 10.9 GB (obs, uns; copies the atlas's file), 0.4 GB, 28 s
    "composition": (1, 1000, 0.1, 15, 3),  # 5.5 GB (obs), 0.2 GB, 6 s
    "agreement": (1, 1000, 1.5, 10, 3),
    "plot_umap": (1, 1000, 0.1, 10, 3),  # 5.5 GB (obs, embedding), 0.4 GB, 7 s
    "plot_markers": (1, 1000, 1.5, 10, 3),  # 5.5 GB, 5.8 GB, 14 s
    "plot_composition": (1, 1000, 0, 10, 0),
    "plot_composition_time": (1, 1000, 0, 10, 0),
}


def _input_mb(input):
    try:
        return float(input.size_mb)
    except Exception:  # inputs not there yet (dry run, checkpoint): the base figure
        return 0.0


# Jobs that can run beside others on one machine (the qc_summary beside preprocess; markers beside
# the compartment calls; the three compartments): such a rule takes its share of --cores, so that
# the jobs run together instead of one after another (a rule asking for more threads than there are
# cores is given them all, and nothing runs beside it: on 2 cores the three compartments ran in turn).
RULE_SHARE = {"preprocess": 2, "markers": 2, "annotate_compartments": 2, "subcluster": 3}


def sized_threads(rule):
    """Threads of a rule: its cap (RULE_SIZING), or its share of the cores where that is fewer."""
    cap = RULE_SIZING[rule][0]
    try:
        cores = workflow.cores
    except Exception:  # no --cores (a cluster executor, --report): the cap
        return cap
    if not isinstance(cores, int) or cores <= 0:
        return cap
    return max(1, min(cap, cores // RULE_SHARE.get(rule, 1)))


def sized_mem_mb(rule):
    """Input function for resources.mem_mb: base + factor x input MB, more at each attempt."""
    _, base, factor, _, _ = RULE_SIZING[rule]

    def mem_mb(wildcards, input, attempt):
        return int((base + factor * _input_mb(input)) * 1.5 ** (attempt - 1))

    return mem_mb


def sized_runtime(rule):
    """Input function for resources.runtime (minutes): base + per input GB, more at each attempt."""
    _, _, _, base, per_gb = RULE_SIZING[rule]

    def runtime(wildcards, input, attempt):
        return int((base + per_gb * _input_mb(input) / 1024) * 1.5 ** (attempt - 1))

    return runtime
