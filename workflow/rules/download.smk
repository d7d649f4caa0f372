checkpoint prepare_dataset:
    """Pull a public dataset (BioStudies accessions, SCP export, CELLxGENE dataset or a URL list) into a sample sheet."""
    input:
        dataset_inputs,
    output:
        sheet=str(DATASET_DIR / "samples.tsv"),
    params:
        dataset=DATASET,
        biostudies_url=config["biostudies_url"],
    log:
        str(DATASET_DIR / "prepare_dataset.log"),
    script:
        "../scripts/prepare_dataset.py"
