rule cluster:
    """kNN graph and Leiden clustering of all cells."""
    input:
        out("intermediate", "integrated.h5ad"),
    output:
        temp(out("intermediate", "clustered.h5ad")),
    log:
        out("logs", "cluster.log"),
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("cluster")
    resources:
        mem_mb=sized_mem_mb("cluster"),
        runtime=sized_runtime("cluster"),
    params:
        config=stage_config("cluster", config),
    script:
        "../scripts/cluster.py"


rule umap:
    """UMAP of all cells from the kNN graph: its own job, run beside the compartment calls that do not need it."""
    input:
        out("intermediate", "clustered.h5ad"),
    output:
        temp(out("intermediate", "umap.h5ad")),
    log:
        out("logs", "umap.log"),
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("umap")
    resources:
        mem_mb=sized_mem_mb("umap"),
        runtime=sized_runtime("umap"),
    params:
        config=stage_config("embed", config),
    script:
        "../scripts/umap.py"
