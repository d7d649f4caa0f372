rule ingest:
    """Read one sample (10x MTX folder, 10x .h5 or .h5ad) and attach its sample-sheet fields."""
    input:
        sample_input,
    output:
        temp(out("samples", "{sample}", "ingested.h5ad")),
    params:
        metadata=sample_metadata,
    threads: sized_threads("ingest")
    resources:
        mem_mb=sized_mem_mb("ingest"),
        runtime=sized_runtime("ingest"),
    log:
        out("logs", "ingest", "{sample}.log"),
    script:
        "../scripts/ingest.py"
