rule preprocess:
    """Merge samples; normalise, log1p, batch-aware highly variable genes, PCA."""
    input:
        per_sample("singlets.h5ad"),
    output:
        out("intermediate", "preprocessed.h5ad"),
    params:
        cfg=config["preprocess"],
        seed=config["seed"],
    log:
        out("logs", "preprocess.log"),
    script:
        "../scripts/preprocess.py"
