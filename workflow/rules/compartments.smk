rule gene_scale:
    """Each marker gene's scale (highest kNN-local mean) on the whole atlas, for the compartments' cell typing."""
    input:
        out("intermediate", "ambient_corrected.h5ad"),
    output:
        out("tables", "gene_scale.tsv"),
    log:
        out("logs", "gene_scale.log"),
    priority: 3
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("gene_scale")
    resources:
        mem_mb=sized_mem_mb("gene_scale"),
        runtime=sized_runtime("gene_scale"),
    params:
        config=stage_config("gene_scale", config),
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
        calls=temp(out("intermediate", "compartments", "{compartment}_cell_type_calls.tsv")),
    log:
        out("logs", "subcluster", "{compartment}.log"),
    # the largest compartment first (milk is mostly epithelial): it is the longest job of the run, and
    # its UMAP follows it; the others fit beside it
    priority: lambda wildcards: 2 if wildcards.compartment == "epithelial" else 0
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("subcluster")
    resources:
        mem_mb=sized_mem_mb("subcluster"),
        runtime=sized_runtime("subcluster"),
    params:
        config=stage_config("subcluster", config),
    script:
        "../scripts/subcluster.py"


rule compartment_umap:
    """One compartment's UMAP from its kNN graph, added to a copy of the compartment's file: its own job, run beside the assembly of the atlas."""
    input:
        adata=out("intermediate", "compartments", "{compartment}.h5ad"),
        umap=out("intermediate", "umap.h5ad"),
    output:
        out("compartments", "{compartment}.h5ad"),
    log:
        out("logs", "compartment_umap", "{compartment}.log"),
    priority: lambda wildcards: 1 if wildcards.compartment == "epithelial" else 0
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("compartment_umap")
    resources:
        mem_mb=sized_mem_mb("compartment_umap"),
        runtime=sized_runtime("compartment_umap"),
    params:
        config=stage_config("embed", config),
    script:
        "../scripts/compartment_umap.py"


rule resolution_sweep:
    """The resolution sweeps of the compartments re-clustered at resolution auto, in one table."""
    input:
        expand(out("intermediate", "compartments", "{compartment}_sweep.tsv"), compartment=COMPARTMENTS),
    output:
        report(out("tables", "resolution_sweep.tsv"), caption="../report/resolution_sweep.rst", category="Clusters"),
    log:
        out("logs", "resolution_sweep.log"),
    conda:
        "../envs/figures.yaml"
    threads: sized_threads("resolution_sweep")
    resources:
        mem_mb=sized_mem_mb("resolution_sweep"),
        runtime=sized_runtime("resolution_sweep"),
    script:
        "../scripts/resolution_sweep.py"


rule cell_type_calls:
    """The cell-type calls of every compartment's clusters, in one table."""
    input:
        expand(out("intermediate", "compartments", "{compartment}_cell_type_calls.tsv"), compartment=COMPARTMENTS),
    output:
        report(out("tables", "cell_type_calls.tsv"), caption="../report/cell_type_calls.rst", category="Clusters"),
    log:
        out("logs", "cell_type_calls.log"),
    conda:
        "../envs/figures.yaml"
    threads: sized_threads("cell_type_calls")
    resources:
        mem_mb=sized_mem_mb("cell_type_calls"),
        runtime=sized_runtime("cell_type_calls"),
    script:
        "../scripts/cell_type_calls.py"
