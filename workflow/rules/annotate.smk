rule annotate_compartments:
    """Score curated milk markers per cluster; call epithelial, immune, stromal or unassigned."""
    input:
        annotations=out("intermediate", "clustered.h5ad"),
        matrices=out("intermediate", "preprocessed.h5ad"),
    output:
        adata=temp(out("intermediate", "compartments_called.h5ad")),
        clusters=report(out("tables", "clusters.tsv"), caption="../report/clusters.rst", category="Clusters"),
    log:
        out("logs", "annotate_compartments.log"),
    # the compartment calls lead to the longest chain of the run (ambient, gene_scale, subcluster): they
    # go before the markers and the atlas's UMAP, which nothing waits for
    priority: 3
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("annotate_compartments")
    resources:
        mem_mb=sized_mem_mb("annotate_compartments"),
        runtime=sized_runtime("annotate_compartments"),
    params:
        config=stage_config("call_compartments", config),
    script:
        "../scripts/annotate_compartments.py"


rule annotated:
    """Collect the cell types called within each compartment into the full atlas."""
    input:
        adata=out("intermediate", "ambient_corrected.h5ad"),
        matrices=out("intermediate", "preprocessed.h5ad"),
        umap=out("intermediate", "umap.h5ad"),
        parts=expand(out("intermediate", "compartments", "{compartment}.h5ad"), compartment=COMPARTMENTS),
        calls=expand(out("intermediate", "compartments", "{compartment}_cell_type_calls.tsv"), compartment=COMPARTMENTS),
    output:
        out("annotated.h5ad"),
    log:
        out("logs", "annotated.log"),
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("annotated")
    resources:
        mem_mb=sized_mem_mb("annotated"),
        runtime=sized_runtime("annotated"),
    script:
        "../scripts/annotated.py"
