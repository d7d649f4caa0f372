rule integrate:
    """Integrate donors/batches on the PCA embedding (Harmony, or none)."""
    input:
        out("intermediate", "preprocessed.h5ad"),
    output:
        temp(out("intermediate", "integrated.h5ad")),
    log:
        out("logs", "integrate.log"),
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("integrate")
    resources:
        mem_mb=sized_mem_mb("integrate"),
        runtime=sized_runtime("integrate"),
    params:
        config=stage_config("integrate", config),
    script:
        "../scripts/integrate.py"
