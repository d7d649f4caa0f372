rule markers:
    """Marker genes of every Leiden cluster."""
    input:
        annotations=out("intermediate", "clustered.h5ad"),
        matrices=out("intermediate", "preprocessed.h5ad"),
    output:
        report(out("tables", "markers.tsv"), caption="../report/markers.rst", category="Clusters"),
    log:
        out("logs", "markers.log"),
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("markers")
    resources:
        mem_mb=sized_mem_mb("markers"),
        runtime=sized_runtime("markers"),
    params:
        config=stage_config("markers", config),
    script:
        "../scripts/markers.py"
