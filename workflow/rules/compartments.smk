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
    log:
        out("logs", "subcluster", "{compartment}.log"),
    script:
        "../scripts/subcluster.py"
