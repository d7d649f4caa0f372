rule simulate_demo:
    """The embedded demo: SIMULATED raw milk droplets (milkcells.datasets)."""
    output:
        DEMO_DIR + "/simulated_{demo}.h5ad",
    params:
        row=demo_row,
        demo=config["demo"],
        seed=config["seed"],
    log:
        "logs/simulate_demo/{demo}.log",
    script:
        "../scripts/simulate_demo.py"
