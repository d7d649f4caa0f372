checkpoint prepare_dataset:
    """Pull a public dataset (dataset.archive: a module of milkcells.archives) into a sample sheet."""
    input:
        dataset_inputs,
    output:
        sheet=str(DATASET_DIR / "samples.tsv"),
    log:
        str(DATASET_DIR / "prepare_dataset.log"),
    conda:
        "../envs/download.yaml"
    threads: sized_threads("prepare_dataset")
    resources:
        mem_mb=sized_mem_mb("prepare_dataset"),
        runtime=sized_runtime("prepare_dataset"),
    params:
        dataset=DATASET,
    script:
        "../scripts/prepare_dataset.py"
