rule composition:
    """Counts and shares of compartments and cell types per sample; the donor-aware model of each share over
    days postpartum (milkcells.composition_model); shares per lactation stage."""
    input:
        out("annotated.h5ad"),
    output:
        table=report(out("tables", "composition.tsv"), caption="../report/composition.rst", category="Composition"),
        time=report(
            out("tables", "composition_time.tsv"), caption="../report/composition_model.rst", category="Composition"
        ),
        stage=report(
            out("tables", "composition_stage.tsv"), caption="../report/composition_stage.rst", category="Composition"
        ),
    log:
        out("logs", "composition.log"),
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("composition")
    resources:
        mem_mb=sized_mem_mb("composition"),
        runtime=sized_runtime("composition"),
    params:
        config=stage_config("composition", config),
    script:
        "../scripts/composition.py"


rule agreement:
    """Agreement of the calls with the authors' labels: ARI, per-label precision and recall, confusion matrix."""
    input:
        out("annotated.h5ad"),
    output:
        table=report(out("tables", "author_agreement.tsv"), caption="../report/author_agreement.rst", category="Atlas"),
        figure=report(
            out("figures", "author_confusion.png"), caption="../report/author_agreement.rst", category="Atlas"
        ),
    log:
        out("logs", "agreement.log"),
    conda:
        "../envs/figures.yaml"
    threads: sized_threads("agreement")
    resources:
        mem_mb=sized_mem_mb("agreement"),
        runtime=sized_runtime("agreement"),
    params:
        author_key=AUTHOR_KEY,
        # the table the cells were called with
        marker_table=config["annotation"]["marker_table"],
    script:
        "../scripts/agreement.py"
