rule doublets:
    """Doublets per sample: Scrublet and the heterotypic (cluster-aware) classifier; removed and counted per detector."""
    input:
        out("samples", "{sample}", "qc.h5ad"),
    output:
        out("samples", "{sample}", "singlets.h5ad"),
    params:
        cfg=config["doublets"],
        seed=config["seed"],
    threads: sized_threads("doublets")
    resources:
        mem_mb=sized_mem_mb("doublets"),
        runtime=sized_runtime("doublets"),
    log:
        out("logs", "doublets", "{sample}.log"),
    script:
        "../scripts/doublets.py"
