# Per sample, two jobs: read + call cells, then QC + doublets. Each is one process, so a sample pays the
# start-up of Python, anndata and scanpy twice, not once per step (4-6 s each; at 12 samples of 110,000
# cells the four-rule chain spent about a third of its time starting up and re-reading its own output).
# Nothing is lost by the pairing: a step's output changes whenever the step before it reruns.


rule call_cells:
    """Read one sample (10x MTX folder, 10x .h5 or .h5ad), attach its sample-sheet fields, call cells from raw droplets (EmptyDrops); filtered input is kept as is."""
    input:
        sample_input,
    output:
        temp(out("samples", "{sample}", "called.h5ad")),
    log:
        out("logs", "call_cells", "{sample}.log"),
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("call_cells")
    resources:
        mem_mb=sized_mem_mb("call_cells"),
        runtime=sized_runtime("call_cells"),
    params:
        metadata=sample_metadata,
        config=stage_config("call_cells", config),
    script:
        "../scripts/call_cells.py"
