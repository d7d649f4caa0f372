rule preprocess:
    """Merge samples; normalise, log1p, batch-aware highly variable genes, PCA."""
    input:
        per_sample("singlets.h5ad"),
    output:
        temp(out("intermediate", "preprocessed.h5ad")),
    log:
        out("logs", "preprocess.log"),
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("preprocess")
    resources:
        mem_mb=sized_mem_mb("preprocess"),
        runtime=sized_runtime("preprocess"),
    params:
        config=stage_config("preprocess", config),
    script:
        "../scripts/preprocess.py"
