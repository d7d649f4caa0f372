# milkcells: an annotated, compartment-split single-cell atlas of human milk.
#
#   snakemake --cores 8                                  # the simulated demo
#   snakemake --cores 8 --config samples=my.tsv outdir=out
#   snakemake --cores 8 --configfile my_config.yaml
#   snakemake --report results/report.html               # after a run
import os

from snakemake.utils import min_version

min_version("9.0")

# every rule is a new Python process: numba's compiled functions (scanpy, UMAP) are cached on disk
# across them, so each rule does not compile them again (as `make run` does)
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.abspath(os.path.join(".cache", "numba")))


# the defaults ship beside this Snakefile, wherever the working directory is
configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        final_outputs(),


include: "workflow/rules/demo.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/cellcalling.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/integrate.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/markers.smk"
include: "workflow/rules/annotate.smk"
include: "workflow/rules/ambient.smk"
include: "workflow/rules/compartments.smk"
include: "workflow/rules/composition.smk"
include: "workflow/rules/plots.smk"
