import anndata as ad

from milkcells import agreement, plots
from milkcells.logs import setup_rule
from milkcells.storage import save_figure, write_table

log = setup_rule(snakemake)
adata = ad.read_h5ad(snakemake.input[0])
summary, per_label, confusion = agreement.label_agreement(
    adata, author_key=snakemake.params.author_key, marker_table=snakemake.params.marker_table
)
log.info("agreement with %s: %s", snakemake.params.author_key, summary)
lead = ["author_label", "recall", "precision", "f1"]
per_label = per_label[lead + [c for c in per_label.columns if c not in lead]]
# whole-dataset figures, repeated on every row: macro-F1 first; the ARI last, under its own name (secondary)
for k, v in summary.items():
    if k != "adjusted_rand_index":
        per_label[f"total_{k}"] = "; ".join(map(str, v)) if isinstance(v, list) else v
per_label["adjusted_rand_index"] = summary["adjusted_rand_index"]
write_table(per_label, snakemake.output.table)
save_figure(
    plots.confusion_heatmap(
        confusion,
        title=f"{snakemake.params.author_key} vs milkcells "
        f"(macro-F1 {summary['macro_f1']:.2f}, recall {summary['macro_recall']:.2f})",
    ),
    snakemake.output.figure,
)
