rule ambient:
    """Each sample's ambient-RNA contamination (from non-epithelial cells' milk transcripts); corrected counts."""
    input:
        annotations=out("intermediate", "compartments_called.h5ad"),
        matrices=out("intermediate", "preprocessed.h5ad"),
    output:
        adata=temp(out("intermediate", "ambient_corrected.h5ad")),
        table=report(out("tables", "ambient.tsv"), caption="../report/ambient.rst", category="Quality control"),
    log:
        out("logs", "ambient.log"),
    priority: 3
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("ambient")
    resources:
        mem_mb=sized_mem_mb("ambient"),
        runtime=sized_runtime("ambient"),
    script:
        "../scripts/ambient.py"
