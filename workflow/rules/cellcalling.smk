rule call_cells:
    """Call cells from raw droplets (barcode-rank inflection); keep filtered input as is."""
    input:
        out("samples", "{sample}", "ingested.h5ad"),
    output:
        out("samples", "{sample}", "called.h5ad"),
    params:
        cfg=config["cell_calling"],
    log:
        out("logs", "call_cells", "{sample}.log"),
    script:
        "../scripts/call_cells.py"
