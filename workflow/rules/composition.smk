rule composition:
    """Counts and shares of compartments and cell types per sample."""
    input:
        out("annotated.h5ad"),
    output:
        report(out("tables", "composition.tsv"), caption="../report/composition.rst", category="Composition"),
    log:
        out("logs", "composition.log"),
    script:
        "../scripts/composition.py"
