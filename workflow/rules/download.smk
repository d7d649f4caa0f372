checkpoint prepare_dataset:
    """Pull a public dataset (dataset.archive: a module of milkcells.archives) into a sample sheet."""
    input:
        dataset_inputs,
    output:
        sheet=str(DATASET_DIR / "samples.tsv"),
    params:
        dataset=DATASET,
    threads: sized_threads("prepare_dataset")
    resources:
        mem_mb=sized_mem_mb("prepare_dataset"),
        runtime=sized_runtime("prepare_dataset"),
    log:
        str(DATASET_DIR / "prepare_dataset.log"),
    conda:
        "../envs/download.yaml"
    script:
        "../scripts/prepare_dataset.py"
