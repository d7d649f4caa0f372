rule doublets:
    """Scrublet doublet scores per sample; predicted doublets removed and counted."""
    input:
        out("samples", "{sample}", "qc.h5ad"),
    output:
        out("samples", "{sample}", "singlets.h5ad"),
    params:
        cfg=config["doublets"],
        seed=config["seed"],
    log:
        out("logs", "doublets", "{sample}.log"),
    script:
        "../scripts/doublets.py"
