rule call_cells:
    """Call cells from raw droplets (EmptyDrops); keep filtered input as is."""
    input:
        out("samples", "{sample}", "ingested.h5ad"),
    output:
        temp(out("samples", "{sample}", "called.h5ad")),
    params:
        cfg=config["cell_calling"],
        seed=config["seed"],
    threads: sized_threads("call_cells")
    resources:
        mem_mb=sized_mem_mb("call_cells"),
        runtime=sized_runtime("call_cells"),
    log:
        out("logs", "call_cells", "{sample}.log"),
    script:
        "../scripts/call_cells.py"
