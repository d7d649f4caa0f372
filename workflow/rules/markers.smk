rule markers:
    """Marker genes of every Leiden cluster."""
    input:
        out("intermediate", "clustered.h5ad"),
    output:
        report(out("tables", "markers.tsv"), caption="../report/markers.rst", category="Clusters"),
    params:
        cfg=config["markers"],
    log:
        out("logs", "markers.log"),
    script:
        "../scripts/markers.py"
