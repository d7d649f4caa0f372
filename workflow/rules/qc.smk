rule qc:
    """Per-sample QC (MAD-based thresholds and floors), then doublet removal (Scrublet and the heterotypic classifier, counted per detector)."""
    input:
        out("samples", "{sample}", "called.h5ad"),
    output:
        out("samples", "{sample}", "singlets.h5ad"),
    log:
        out("logs", "qc", "{sample}.log"),
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("qc")
    resources:
        mem_mb=sized_mem_mb("qc"),
        runtime=sized_runtime("qc"),
    params:
        config=stage_config("qc", config),
    script:
        "../scripts/qc.py"


rule qc_summary:
    """Per-sample table of barcodes, called cells, cells removed by each filter and doublets; QC figure."""
    input:
        per_sample("singlets.h5ad"),
    output:
        table=report(out("tables", "qc_summary.tsv"), caption="../report/qc_summary.rst", category="Quality control"),
        figure=report(
            out("figures", "qc_distributions.png"),
            caption="../report/qc_distributions.rst",
            category="Quality control",
        ),
    log:
        out("logs", "qc_summary.log"),
    conda:
        "../envs/figures.yaml"
    threads: sized_threads("qc_summary")
    resources:
        mem_mb=sized_mem_mb("qc_summary"),
        runtime=sized_runtime("qc_summary"),
    params:
        # the samples, in the order of the input files
        samples=lambda wildcards: list(sample_table().index),
    script:
        "../scripts/qc_summary.py"
