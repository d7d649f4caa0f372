rule simulate_demo:
    """The embedded demo: SIMULATED raw milk droplets (milkcells.demo)."""
    output:
        os.path.join(DEMO_DIR, "simulated_{demo}.h5ad"),
    log:
        "logs/simulate_demo/{demo}.log",
    conda:
        "../envs/analysis.yaml"
    threads: sized_threads("simulate_demo")
    resources:
        mem_mb=sized_mem_mb("simulate_demo"),
        runtime=sized_runtime("simulate_demo"),
    params:
        row=demo_row,
        demo=config["demo"],
        seed=config["seed"],
    script:
        "../scripts/simulate_demo.py"
