from milkcells import public
from milkcells._script import setup

log = setup(snakemake)
d = snakemake.params.dataset
out_dir = snakemake.output.sheet.rsplit("/", 1)[0]
common = {"retries": d["retries"], "backoff": d["backoff"]}
if d["source"] == "biostudies":
    public.prepare_biostudies(d["accessions"], out_dir, base_url=snakemake.params.biostudies_url,
                              include_tissue=d["include_tissue"], mirror=d["mirror"], **common)
elif d["source"] == "scp":
    public.prepare_scp(d["scp_counts"], d["scp_metadata"], out_dir, label_column=d["scp_label_column"])
elif d["source"] == "cellxgene":
    public.prepare_cellxgene(d["cellxgene_dataset_id"], out_dir, api_url=d["cellxgene_api_url"],
                             obs_filter=d["cellxgene_obs_filter"], label_column=d["cellxgene_label_column"],
                             sample_column=d["cellxgene_sample_column"], mirror=d["mirror"], **common)
elif d["source"] == "urls":
    public.prepare_url_list(d["url_list"], out_dir, mirror=d["mirror"], **common)
else:
    raise ValueError(f"dataset.source {d['source']!r} needs no preparation")
