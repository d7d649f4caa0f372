#!/usr/bin/env bash
# Rebuild the real, author-labelled scRNA-seq sets that benchmarks/real_labelled.py reads.
#
# Nothing here ships with milkcells: the files are taken from public GitHub repositories
# (R packages that bundle small labelled human single-cell sets as example data), converted to
# h5ad with integer counts in X, gene symbols as var_names, obs["author_label"] and obs["sample"],
# and written OUTSIDE the repository:
#
#   $OUT/<name>/<name>.h5ad      (default OUT=/work/realdata)
#
# Usage (from the repository root; needs git, R >= 4 with Matrix and SingleCellExperiment, and
# the project's Python environment):
#
#   apt-get install -y r-base-core r-bioc-singlecellexperiment     # Debian 12; or BiocManager
#   bash benchmarks/fetch_real_labelled.sh                          # -> /work/realdata/*/
#   OUT=/tmp/realdata PY=.venv/bin/python bash benchmarks/fetch_real_labelled.sh
#
# Sources (repository @ commit used, path, licence of the repository; underlying data):
#   breast_scdeconr   Liuy12/SCdeconR @ 0a2665ec08e760e89b429e8acf611ca04fb48adb
#                     inst/extdata/refdata/sample{1,2}/{matrix.mtx.gz,features.tsv.gz,barcodes.tsv.gz},
#                     inst/extdata/refdata/phenodata_sample{1,2}.txt; GPL (>= 3).
#                     Healthy breast: sample1 = Komen tissue bank 10x scRNA-seq (140 cells), sample2 =
#                     GTEx breast snRNA-seq (120 cells); 20 cells per author label.
#   breast_wu2021_cid4465
#                     omnideconv/spacedeconv @ 3c3317a5fd861ed4d42bb096f58a5634b0a16899
#                     data/single_cell_data_2.RData (SingleCellExperiment); GPL-3.
#                     Wu et al. 2021 Nat Genet 53:1334 (GEO GSE176078), TNBC tumour CID4465, 1,564 cells,
#                     10x UMI counts, author labels celltype_major / celltype_minor / celltype_subset.
#   pbmc_sorted_zheng2017
#                     JEFworks/MUDAN @ 3636ed2f9a404cbdfcfdce5500384b59a72de666
#                     data/referenceCounts.rda, data/referenceAnnot.rda; GPL-3.
#                     10x FACS-sorted PBMC populations (Zheng et al. 2017 Nat Commun 8:14049), 2,140 cells,
#                     8,863 genes; the label is the sorted population (a label from the sort, not from
#                     clustering). All cells go into one sample: each population was its own 10x run, so a
#                     per-run sample would make batch = label and Harmony would merge the types.
#   pbmc4k_soupx      constantAmateur/SoupX @ 8d89492306a7e82a79a3c0588b806d5127f2003c
#                     data/PBMC_sc.RData (SoupChannel: toc = 2,170 of the 4,340 cells of 10x pbmc4k, and the
#                     ambient profile from the empty droplets), data/PBMC_metaData.RData (Annotation: B,
#                     T_CD4, T_CD8, NK, MNP, ?, by the SoupX author from Seurat clusters); GPL-2.
#                     The ambient profile is kept as var["ambient_fraction"] (what milkcells' cell calling
#                     would have left there).
#   headneck_chetah   jdekanter/CHETAH @ c19cba2906b44b3c56c9d8ad3b23f1fdf54b98e1
#                     data/headneck_ref.rda (SingleCellExperiment, colData celltypes); AGPL-3.
#                     Puram et al. 2017 Cell (GEO GSE103322), Smart-seq2, 180 cells, 7,943 genes.
#                     NOT UMI counts: the assay is log2(TPM/10 + 1); X holds round(10 * (2^x - 1)), i.e.
#                     TPM rounded to integers (marked obs["counts_kind"] = "tpm"); a secondary set.
#
# The repositories are read with `git show <commit>:<path>` from a blob-less clone (only the blobs
# needed are downloaded). With MIRROR set to a directory holding bare copies named owner+name/repo
# (as the fetch tool of the development machines leaves them), no network is used.
set -euo pipefail

OUT=${OUT:-/work/realdata}
PY=${PY:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
MIRROR=${MIRROR:-/work/.mirror}
SRC=$OUT/_src
mkdir -p "$SRC"

gitdir() {  # owner/name -> a git dir holding it
  local repo=$1 m=$MIRROR/${1/\//+}
  for d in "$m/repo" "$m/repo/.git" "$m"; do
    if git --git-dir="$d" rev-parse --verify -q HEAD >/dev/null 2>&1; then echo "$d"; return; fi
  done
  local c=$SRC/clones/${1/\//+}
  if [[ ! -d $c ]]; then
    git clone -q --filter=blob:none --no-checkout "https://github.com/$repo.git" "$c" >&2
  fi
  echo "$c/.git"
}

get() {  # owner/name commit path dest
  local d
  d=$(gitdir "$1")
  mkdir -p "$(dirname "$4")"
  git --git-dir="$d" show "$2:$3" >"$4" 2>/dev/null || git --git-dir="$d" show "HEAD:$3" >"$4"
}

SC=0a2665ec08e760e89b429e8acf611ca04fb48adb
for s in sample1 sample2; do
  for f in matrix.mtx.gz features.tsv.gz barcodes.tsv.gz; do
    get Liuy12/SCdeconR $SC "inst/extdata/refdata/$s/$f" "$SRC/scdeconr/$s/$f"
  done
  get Liuy12/SCdeconR $SC "inst/extdata/refdata/phenodata_$s.txt" "$SRC/scdeconr/phenodata_$s.txt"
done
get omnideconv/spacedeconv 3c3317a5fd861ed4d42bb096f58a5634b0a16899 data/single_cell_data_2.RData "$SRC/wu_single_cell_data_2.RData"
get JEFworks/MUDAN 3636ed2f9a404cbdfcfdce5500384b59a72de666 data/referenceCounts.rda "$SRC/mudan_referenceCounts.rda"
get JEFworks/MUDAN 3636ed2f9a404cbdfcfdce5500384b59a72de666 data/referenceAnnot.rda "$SRC/mudan_referenceAnnot.rda"
get constantAmateur/SoupX 8d89492306a7e82a79a3c0588b806d5127f2003c data/PBMC_sc.RData "$SRC/soupx_PBMC_sc.RData"
get constantAmateur/SoupX 8d89492306a7e82a79a3c0588b806d5127f2003c data/PBMC_metaData.RData "$SRC/soupx_PBMC_metaData.RData"
get jdekanter/CHETAH c19cba2906b44b3c56c9d8ad3b23f1fdf54b98e1 data/headneck_ref.rda "$SRC/headneck_ref.rda"

# the inputs as they were when the benchmark was written (sha256)
cd "$SRC"
sha256sum -c --quiet <<'SUMS'
73d4da39a5faa32daf13516c94b81bc9c364d7fdb9a18fac75f3a4d15713566a  scdeconr/sample1/barcodes.tsv.gz
092f25efaec38d816952f3fe6ba64c3019b340563c8c7bab6a34e1caf9999c32  scdeconr/sample1/features.tsv.gz
42a6facf7f852dd11195145d5d36803a85e934ecd83db2b00f8b575a16863f7c  scdeconr/sample1/matrix.mtx.gz
71482a4d7d6d4daf910302ac98dcbc2b8293bd4eb85603fad9eccba9ed0ab3a1  scdeconr/sample2/barcodes.tsv.gz
092f25efaec38d816952f3fe6ba64c3019b340563c8c7bab6a34e1caf9999c32  scdeconr/sample2/features.tsv.gz
d4d175151d0e259d0866c6f1c51ffdccadc5445345c70ecac9e61e29329a728a  scdeconr/sample2/matrix.mtx.gz
734610e647350f8457cb4d9db0d5e535b65ceb25ab768098e2f3c796bd375de7  scdeconr/phenodata_sample1.txt
3e5d3b3c33b349c6590ea2b8914fac93fc52f768806cb8677fd7a5288e120b24  scdeconr/phenodata_sample2.txt
5f719b65edd292429ff69aa1a648252508298069002337c785e9688f8af150fa  wu_single_cell_data_2.RData
d44df269ab223db35a3ac0f46a08f623b61ffd46f44f110b34910724b932a8d6  mudan_referenceCounts.rda
72ac3b67cb1f831c23a9ecc094451d93901a8f2ba30fa1089704482e5cb76865  mudan_referenceAnnot.rda
6ce9a1348e8e8e2a578388a1b506c862cd96e7da67f26b3a308b3e762e13217e  soupx_PBMC_sc.RData
17c8122d321dfc03cf12e6b83dbb5ed3add65456b8c1c0d1f1db3c7a2bba7af8  soupx_PBMC_metaData.RData
1f138e5478e735c10b63a0cc86aa97c97300c4732d56e823dc3a6c18bca74070  headneck_ref.rda
SUMS

# R: each .rda/.RData -> MatrixMarket (genes x cells) + genes.csv + cells.csv
Rscript - <<'EOF'
suppressMessages({library(Matrix); library(SingleCellExperiment)})
dump <- function(name, counts, cells, extra_var = NULL) {
  dir.create(file.path("export", name), recursive = TRUE, showWarnings = FALSE)
  counts <- as(as(counts, "CsparseMatrix"), "generalMatrix")
  writeMM(counts, file.path("export", name, "matrix.mtx"))
  genes <- data.frame(gene = rownames(counts))
  if (!is.null(extra_var)) genes <- cbind(genes, extra_var)
  write.csv(genes, file.path("export", name, "genes.csv"), row.names = FALSE)
  write.csv(data.frame(cell = colnames(counts), cells, check.names = FALSE),
            file.path("export", name, "cells.csv"), row.names = FALSE)
  cat(name, ":", nrow(counts), "genes x", ncol(counts), "cells\n")
}
# Wu et al. 2021, CID4465
load("wu_single_cell_data_2.RData")
x <- single_cell_data_2
cd <- as.data.frame(colData(x))
dump("breast_wu2021_cid4465", counts(x),
     data.frame(author_label = cd$celltype_minor, celltype_major = cd$celltype_major,
                celltype_subset = cd$celltype_subset, sample = cd$orig.ident, subtype = cd$subtype))
# Zheng 2017 sorted PBMC (MUDAN)
load("mudan_referenceCounts.rda"); load("mudan_referenceAnnot.rda")
stopifnot(all(names(referenceAnnot) == colnames(referenceCounts)) || is.null(names(referenceAnnot)))
dump("pbmc_sorted_zheng2017", Matrix(referenceCounts, sparse = TRUE),
     data.frame(author_label = as.character(referenceAnnot), sample = "zheng2017_sorted",
                sort_run = sub("[ACGT]+-1$", "", colnames(referenceCounts))))
# SoupX pbmc4k half
load("soupx_PBMC_sc.RData"); load("soupx_PBMC_metaData.RData")
toc <- PBMC_sc$toc
dump("pbmc4k_soupx", toc,
     data.frame(author_label = as.character(PBMC_metaData[colnames(toc), "Annotation"]), sample = "pbmc4k",
                author_cluster = as.character(PBMC_metaData[colnames(toc), "Cluster"])),
     extra_var = data.frame(ambient_fraction = PBMC_sc$soupProfile[rownames(toc), "est"]))
# CHETAH head and neck reference (log2(TPM/10 + 1) -> TPM rounded)
load("headneck_ref.rda")
tpm <- round(10 * (2^as.matrix(assay(headneck_ref, "counts")) - 1))
dump("headneck_chetah", Matrix(tpm, sparse = TRUE),
     data.frame(author_label = headneck_ref$celltypes, sample = "puram2017", counts_kind = "tpm"))
EOF

# Python: exports -> h5ad
"$PY" - "$SRC" "$OUT" <<'EOF'
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.io
import scipy.sparse as sp

src, out = Path(sys.argv[1]), Path(sys.argv[2])


def write(name, a):
    a.X = sp.csr_matrix(a.X)
    assert np.all(a.X.data == np.round(a.X.data)), name
    a.X = a.X.astype(np.float32)
    a.var_names_make_unique()
    a.obs["author_label"] = a.obs["author_label"].astype(str)
    a.obs["sample"] = a.obs["sample"].astype(str)
    a.uns["source"] = SOURCES[name]
    (out / name).mkdir(parents=True, exist_ok=True)
    a.write_h5ad(out / name / f"{name}.h5ad", compression="gzip")
    print(name, a.shape, a.obs["author_label"].value_counts().to_dict())


SOURCES = {
    "breast_scdeconr": "Liuy12/SCdeconR@0a2665e inst/extdata/refdata (GPL>=3)",
    "breast_wu2021_cid4465": "omnideconv/spacedeconv@3c3317a data/single_cell_data_2.RData (GPL-3); Wu 2021 GSE176078",
    "pbmc_sorted_zheng2017": "JEFworks/MUDAN@3636ed2 data/referenceCounts.rda, referenceAnnot.rda (GPL-3); Zheng 2017",
    "pbmc4k_soupx": "constantAmateur/SoupX@8d89492 data/PBMC_sc.RData, PBMC_metaData.RData (GPL-2); 10x pbmc4k",
    "headneck_chetah": "jdekanter/CHETAH@c19cba2 data/headneck_ref.rda (AGPL-3); Puram 2017 GSE103322; TPM, not UMIs",
}

# SCdeconR: two 10x MTX folders + phenodata
parts = []
for s in ("sample1", "sample2"):
    a = sc.read_10x_mtx(src / "scdeconr" / s, var_names="gene_symbols")
    ph = pd.read_csv(src / "scdeconr" / f"phenodata_{s}.txt", sep="\t", index_col="cellid")
    a.obs_names = [f"{b}" for b in a.obs_names]
    missing = set(a.obs_names) - set(ph.index)
    if missing:  # barcodes may lack the _1/_2 suffix of the phenodata
        a.obs_names = [f"{b}_{s[-1]}" for b in a.obs_names]
    ph = ph.loc[a.obs_names]
    a.obs["author_label"] = ph["celltype"].to_numpy()
    a.obs["sample"] = f"{s}_{ph['cohort'].iloc[0]}"
    a.obs["subject"] = ph["subjectid"].to_numpy()
    a.obs["cohort"] = ph["cohort"].to_numpy()
    parts.append(a)
write("breast_scdeconr", ad.concat(parts, join="inner", merge="first"))

for name in ("breast_wu2021_cid4465", "pbmc_sorted_zheng2017", "pbmc4k_soupx", "headneck_chetah"):
    d = src / "export" / name
    X = scipy.io.mmread(d / "matrix.mtx").T.tocsr()
    genes = pd.read_csv(d / "genes.csv")
    cells = pd.read_csv(d / "cells.csv", index_col="cell", keep_default_na=False)
    a = ad.AnnData(X=X, obs=cells, var=genes.set_index("gene"))
    a.var.index = a.var.index.astype(str)
    write(name, a)
EOF
