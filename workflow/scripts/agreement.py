import anndata as ad

from milkcells import agreement, plots
from milkcells._script import setup
from milkcells._utils import save_figure, write_table

log = setup(snakemake)
adata = ad.read_h5ad(snakemake.input[0])
summary, per_label, confusion = agreement.label_agreement(adata, author_key=snakemake.params.author_key)
log.info("agreement with %s: %s", snakemake.params.author_key, summary)
for k, v in summary.items():  # whole-dataset figures, repeated on every row
    per_label[f"total_{k}" if k in per_label.columns else k] = v
write_table(per_label, snakemake.output.table)
save_figure(plots.confusion_heatmap(confusion, title=f"{snakemake.params.author_key} vs milkcells "
                                    f"(ARI {summary['adjusted_rand_index']:.2f})"), snakemake.output.figure)
