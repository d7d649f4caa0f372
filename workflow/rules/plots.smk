rule plot_umap:
    """UMAP of all cells coloured by compartment, cell type, sample or cluster."""
    input:
        out("annotated.h5ad"),
    output:
        report(out("figures", "umap_{key}.png"), caption="../report/umap.rst", category="Atlas", subcategory="UMAP"),
    log:
        out("logs", "plots", "umap_{key}.log"),
    wildcard_constraints:
        key="compartment|cell_type|cell_type_confidence|sample|leiden",
    conda:
        "../envs/figures.yaml"
    threads: sized_threads("plot_umap")
    resources:
        mem_mb=sized_mem_mb("plot_umap"),
        runtime=sized_runtime("plot_umap"),
    script:
        "../scripts/plot_umap.py"


rule plot_markers:
    """Dot plot of curated markers per cell type."""
    input:
        out("annotated.h5ad"),
    output:
        report(out("figures", "marker_dotplot.png"), caption="../report/marker_dotplot.rst", category="Atlas"),
    log:
        out("logs", "plots", "marker_dotplot.log"),
    conda:
        "../envs/figures.yaml"
    threads: sized_threads("plot_markers")
    resources:
        mem_mb=sized_mem_mb("plot_markers"),
        runtime=sized_runtime("plot_markers"),
    params:
        marker_table=config["annotation"]["marker_table"],
    script:
        "../scripts/plot_markers.py"


rule plot_composition:
    """Stacked bars of compartment and cell-type shares per sample."""
    input:
        out("tables", "composition.tsv"),
    output:
        report(
            out("figures", "composition_{level}.png"), caption="../report/composition_bars.rst", category="Composition"
        ),
    log:
        out("logs", "plots", "composition_{level}.log"),
    wildcard_constraints:
        level="cell_type|compartment",
    conda:
        "../envs/figures.yaml"
    threads: sized_threads("plot_composition")
    resources:
        mem_mb=sized_mem_mb("plot_composition"),
        runtime=sized_runtime("plot_composition"),
    script:
        "../scripts/plot_composition.py"


rule plot_composition_time:
    """Shares of each cell type against days postpartum, per donor."""
    input:
        out("tables", "composition.tsv"),
    output:
        report(out("figures", "composition_time.png"), caption="../report/composition_time.rst", category="Composition"),
    log:
        out("logs", "plots", "composition_time.log"),
    conda:
        "../envs/figures.yaml"
    threads: sized_threads("plot_composition_time")
    resources:
        mem_mb=sized_mem_mb("plot_composition_time"),
        runtime=sized_runtime("plot_composition_time"),
    params:
        config=stage_config("composition", config),
    script:
        "../scripts/plot_composition_time.py"
