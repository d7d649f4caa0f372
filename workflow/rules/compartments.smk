rule gene_scale:
    """Each marker gene's scale (highest kNN-local mean) on the whole atlas, for the compartments' cell typing."""
    input:
        out("intermediate", "ambient_corrected.h5ad"),
    output:
        out("tables", "gene_scale.tsv"),
    params:
        config=stage_config("gene_scale", config),
    priority: 3
    threads: sized_threads("gene_scale")
    resources:
        mem_mb=sized_mem_mb("gene_scale"),
        runtime=sized_runtime("gene_scale"),
    log:
        out("logs", "gene_scale.log"),
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/gene_scale.py"


rule subcluster:
    """One compartment's cells, re-clustered and typed within the compartment."""
    input:
        adata=out("intermediate", "ambient_corrected.h5ad"),
        matrices=out("intermediate", "preprocessed.h5ad"),
        scale=out("tables", "gene_scale.tsv"),
    output:
        adata=temp(out("intermediate", "compartments", "{compartment}.h5ad")),
        sweep=temp(out("intermediate", "compartments", "{compartment}_sweep.tsv")),
    params:
        config=stage_config("subcluster", config),
    # the largest compartment first (milk is mostly epithelial): it is the longest job of the run, and
    # its UMAP follows it; the others fit beside it
    priority: lambda wildcards: 2 if wildcards.compartment == "epithelial" else 0
    threads: sized_threads("subcluster")
    resources:
        mem_mb=sized_mem_mb("subcluster"),
        runtime=sized_runtime("subcluster"),
    log:
        out("logs", "subcluster", "{compartment}.log"),
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/subcluster.py"


rule compartment_umap:
    """One compartment's UMAP from its kNN graph, added to a copy of the compartment's file: its own job, run beside the assembly of the atlas."""
    input:
        adata=out("intermediate", "compartments", "{compartment}.h5ad"),
        umap=out("intermediate", "umap.h5ad"),
    output:
        out("compartments", "{compartment}.h5ad"),
    params:
        config=stage_config("embed", config),
    priority: lambda wildcards: 1 if wildcards.compartment == "epithelial" else 0
    threads: sized_threads("compartment_umap")
    resources:
        mem_mb=sized_mem_mb("compartment_umap"),
        runtime=sized_runtime("compartment_umap"),
    log:
        out("logs", "compartment_umap", "{compartment}.log"),
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compartment_umap.py"


rule resolution_sweep:
    """The resolution sweeps of the compartments re-clustered at resolution auto, in one table."""
    input:
        expand(out("intermediate", "compartments", "{compartment}_sweep.tsv"), compartment=COMPARTMENTS),
    output:
        report(out("tables", "resolution_sweep.tsv"), caption="../report/resolution_sweep.rst", category="Clusters"),
    threads: sized_threads("resolution_sweep")
    resources:
        mem_mb=sized_mem_mb("resolution_sweep"),
        runtime=sized_runtime("resolution_sweep"),
    log:
        out("logs", "resolution_sweep.log"),
    conda:
        "../envs/figures.yaml"
    script:
        "../scripts/resolution_sweep.py"
