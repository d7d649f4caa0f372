"""milkcells.archives.scp: reading a Single Cell Portal export and importing it end to end."""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from milkcells import InputError, MilkcellsWarning, io
from milkcells.archives import scp
from milkcells.samplesheet import read_sample_sheet

DATA = Path(__file__).parent / "data" / "sources"
SCP_COUNTS = DATA / "scp_raw_counts.txt.gz"
SCP_META = DATA / "scp_metadata.csv"


def _fixture_tables():
    counts = pd.read_csv(SCP_COUNTS, sep="\t", index_col=0)
    meta = pd.read_csv(SCP_META, skiprows=[1], keep_default_na=False)
    return counts, meta


def test_read_scp_fixture():
    counts, meta = _fixture_tables()
    a = scp.read_scp(SCP_COUNTS, SCP_META)
    assert a.shape == (12, 30)
    assert sp.issparse(a.X) and a.X.format == "csr" and a.X.dtype == np.float32
    np.testing.assert_array_equal(a.X.toarray(), counts.to_numpy().T)
    assert a.obs_names.tolist() == counts.columns.tolist()
    assert a.var_names.tolist() == counts.index.tolist()
    assert a.var["gene_ids"].tolist() == counts.index.tolist()
    assert a.var.loc["MT-CO1", "mt"] and a.var.loc["RPL3", "ribo"] and not a.var.loc["CSN2", "mt"]
    # the TYPE row: numeric -> float (NA -> NaN), group -> categorical; the row itself is gone
    assert a.obs["time_post_partum_days"].dtype == float
    assert a.obs["n_counts"].tolist() == meta["n_counts"].astype(float).tolist()
    assert isinstance(a.obs["General_Celltype"].dtype, pd.CategoricalDtype)
    assert "TYPE" not in a.obs_names and "group" not in a.obs["milk_stage"].astype(str).tolist()
    # carried-through fields
    assert a.obs["author_label"].astype(str).tolist() == meta["General_Celltype"].tolist()
    assert "removed" in a.obs["author_label"].cat.categories
    assert a.obs["sample"].astype(str).tolist() == meta["biosample_id"].tolist()
    first, last = a.obs.iloc[0], a.obs.iloc[-1]
    assert (first["donor"], first["days_postpartum"], first["barcode"]) == ("BM01", 5.0, "AAACCTGA")
    assert last["donor"] == "K1" and np.isnan(last["days_postpartum"])  # donor NA -> sample
    assert set(a.obs["sample_type"]) == {"milk"} and (a.obs["batch"] == a.obs["sample"]).all()
    assert a.uns["milkcells"]["ingest"]["params"]["reader"] == "read_scp"


def test_read_scp_plain_comma_r_style_and_chunks(tmp_path):
    counts, _ = _fixture_tables()
    ref = scp.read_scp(SCP_COUNTS, SCP_META)
    # comma-separated, not gzipped, no header cell above the gene names (R's write.table)
    csv_counts = tmp_path / "counts.csv"
    csv_counts.write_text(
        ",".join(counts.columns)
        + "\n"
        + "\n".join(f"{g}," + ",".join(map(str, row)) for g, row in zip(counts.index, counts.to_numpy(), strict=True))
        + "\n"
    )
    tab_meta = tmp_path / "meta.txt.gz"
    with gzip.open(tab_meta, "wt") as fh:
        fh.write(SCP_META.read_text().replace(",", "\t"))
    for chunk in (1, 7, 1000):
        a = scp.read_scp(csv_counts, tab_meta, chunk_genes=chunk)
        np.testing.assert_array_equal(a.X.toarray(), ref.X.toarray())
        pd.testing.assert_frame_equal(a.obs, ref.obs)


def _edit_meta(tmp_path, edit) -> Path:
    lines = SCP_META.read_text().splitlines()
    out = tmp_path / "meta.csv"
    out.write_text("\n".join(edit(lines)) + "\n")
    return out


def test_read_scp_type_row_errors(tmp_path):
    no_type = _edit_meta(tmp_path, lambda ls: [ls[0], *ls[2:]])
    with pytest.raises(InputError, match="second row") as e:
        scp.read_scp(SCP_COUNTS, no_type)
    assert e.value.field == "TYPE" and "TYPE" in e.value.expected
    bad_type = _edit_meta(
        tmp_path, lambda ls: [ls[0], ls[1].replace("group,group,numeric", "group,text,numeric"), *ls[2:]]
    )
    with pytest.raises(InputError, match="column type 'text'") as e:
        scp.read_scp(SCP_COUNTS, bad_type)
    assert e.value.field == "donor_id"
    text_in_numeric = _edit_meta(tmp_path, lambda ls: [*ls[:2], ls[2].replace(",5,", ",five,"), *ls[3:]])
    msg = "'five' of cell 'BM01_5dpp_r1_AAACCTGA' is not a number"
    with pytest.raises(InputError, match=msg) as e:
        scp.read_scp(SCP_COUNTS, text_in_numeric)
    assert e.value.field == "time_post_partum_days"
    no_name = _edit_meta(tmp_path, lambda ls: [ls[0].replace("NAME", "cell"), *ls[1:]])
    with pytest.raises(InputError, match="first header cell"):
        scp.read_scp(SCP_COUNTS, no_name)


def test_read_scp_missing_column_and_bad_counts(tmp_path):
    with pytest.raises(InputError, match="no column 'cell_type' \\(label_column\\)") as e:
        scp.read_scp(SCP_COUNTS, SCP_META, label_column="cell_type")
    assert e.value.field == "cell_type"
    counts, _ = _fixture_tables()
    frac = counts.astype(float)
    frac.iloc[3, 2] = 0.5
    f = tmp_path / "norm.tsv"
    frac.to_csv(f, sep="\t", index_label="GENE")
    with pytest.raises(InputError, match="not a non-negative integer") as e:
        scp.read_scp(f, SCP_META)
    assert e.value.field == "counts" and e.value.expected == "raw integer counts"
    dup = tmp_path / "dup.tsv"
    renamed = counts.rename(columns={counts.columns[1]: counts.columns[0]})
    renamed.to_csv(dup, sep="\t", index_label="GENE")
    with pytest.raises(InputError, match="duplicated cell names in the header"):
        scp.read_scp(dup, SCP_META)


def test_read_scp_unmatched_cells(tmp_path):
    one_missing = _edit_meta(tmp_path, lambda ls: ls[:-1])  # 1 of 12 cells unmatched (8.3 %)
    with pytest.raises(InputError, match=r"1 cell\(s\) only in the counts") as e:
        scp.read_scp(SCP_COUNTS, one_missing)
    assert e.value.field == "NAME"
    with pytest.warns(MilkcellsWarning, match="only in the counts"):
        a = scp.read_scp(SCP_COUNTS, one_missing, max_unmatched=0.1)
    assert a.n_obs == 11 and "K1_AACTCAGT" not in a.obs_names
    counts, _ = _fixture_tables()
    np.testing.assert_array_equal(a.X.toarray(), counts.to_numpy().T[:11])
    disjoint = _edit_meta(tmp_path, lambda ls: [*ls[:2], *("X" + line for line in ls[2:])])
    with pytest.raises(InputError, match="no cell of the count table is in the metadata"):
        scp.read_scp(SCP_COUNTS, disjoint, max_unmatched=0.5)


def test_read_scp_writes_h5ad(tmp_path):
    a = scp.read_scp(SCP_COUNTS, SCP_META)
    a.write_h5ad(tmp_path / "scp.h5ad")
    b = ad.read_h5ad(tmp_path / "scp.h5ad")
    assert b.obs["author_label"].astype(str).tolist() == a.obs["author_label"].astype(str).tolist()


def test_prepare_scp_splits_samples_with_author_labels(tmp_path):
    sheet = scp.prepare(tmp_path, counts=SCP_COUNTS, metadata=SCP_META)
    back = read_sample_sheet(tmp_path / "samples.tsv")
    assert list(back.index) == list(sheet["sample"]) and len(back) >= 2
    assert back.loc["BM01_5dpp_r1", "days_postpartum"] == 5
    assert back.loc["BM02_6wkpp_r1", "days_postpartum"] == 42
    for sample, row in back.iterrows():
        a = io.read_sample(row["path"], sample=sample)
        assert (a.obs["sample"] == sample).all() and "author_label" in a.obs
        assert a.obs["author_label"].notna().all()
