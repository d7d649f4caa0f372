rule subcluster:
    """One compartment's cells, re-clustered and typed within the compartment."""
    input:
        out("intermediate", "ambient_corrected.h5ad"),
    output:
        out("compartments", "{compartment}.h5ad"),
    params:
        pre=config["preprocess"],
        integration=config["integration"],
        clustering=config["clustering"],
        annotation=config["annotation"],
        seed=config["seed"],
    threads: sized_threads("subcluster")
    resources:
        mem_mb=sized_mem_mb("subcluster"),
        runtime=sized_runtime("subcluster"),
    log:
        out("logs", "subcluster", "{compartment}.log"),
    script:
        "../scripts/subcluster.py"
