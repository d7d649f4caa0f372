rule cluster:
    """kNN graph, UMAP and Leiden clustering of all cells."""
    input:
        out("intermediate", "integrated.h5ad"),
    output:
        temp(out("intermediate", "clustered.h5ad")),
    params:
        n_neighbors=config["clustering"]["n_neighbors"],
        resolution=config["clustering"]["resolution"],
        seed=config["seed"],
    threads: sized_threads("cluster")
    resources:
        mem_mb=sized_mem_mb("cluster"),
        runtime=sized_runtime("cluster"),
    log:
        out("logs", "cluster.log"),
    script:
        "../scripts/cluster.py"
