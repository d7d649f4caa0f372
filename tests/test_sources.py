"""milkcells.sources: archive metadata -> sample sheets and AnnData (no network)."""

from __future__ import annotations

import csv
import gzip
import inspect
import shutil
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from milkcells import InputError, io, sources
from milkcells._utils import write_table
from milkcells.io import MilkcellsWarning

DATA = Path(__file__).parent / "data" / "sources"
B1 = DATA / "twigger_batch1_like.sdrf.txt"
B2 = DATA / "twigger_batch2_like.sdrf.txt"
B3 = DATA / "twigger_batch3_like.sdrf.txt"
SCP_COUNTS = DATA / "scp_raw_counts.txt.gz"
SCP_META = DATA / "scp_metadata.csv"
BASE = "https://ftp.ebi.ac.uk/biostudies/fire/"
FILES_9841 = BASE + "E-MTAB-/841/E-MTAB-9841/Files/"
DID = "0b4c3c8e-1234-4cde-9f00-abcdefabcdef"
CID = "fedcba98-7654-3210-fedc-ba9876543210"


def write_sdrf(path: Path, header: list[str], rows: list[list[str]], *, bom: bool = False) -> Path:
    text = "\n".join("\t".join(r) for r in [header, *rows]) + "\n"
    path.write_text(text, encoding="utf-8-sig" if bom else "utf-8")
    return path


# --------------------------------------------------------------------------- module conventions


def test_public_functions_documented_and_keyword_only():
    for name in sources.__all__:
        obj = getattr(sources, name)
        if not inspect.isfunction(obj):
            continue
        doc = inspect.getdoc(obj)
        assert doc and "Returns" in doc, name
        params = list(inspect.signature(obj).parameters.values())
        positional = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        # data arguments are positional; every option is keyword-only
        assert len(positional) <= 2, (name, [p.name for p in positional])
        assert all(p.default is inspect.Parameter.empty for p in positional), name
    src = inspect.getsource(sources)
    assert "basicConfig" not in src and 'filterwarnings("ignore")' not in src


# --------------------------------------------------------------------------- BioStudies URLs


@pytest.mark.parametrize(
    ("base", "acc", "expected"),
    [
        (BASE, "E-MTAB-9841", FILES_9841),
        ("https://ftp.ebi.ac.uk/biostudies/fire", "E-MTAB-10855",
         BASE + "E-MTAB-/855/E-MTAB-10855/Files/"),
        ("https://mirror.example.org/fire///", " e-mtab-10885 ",
         "https://mirror.example.org/fire/E-MTAB-/885/E-MTAB-10885/Files/"),
        (BASE, "E-MTAB-12", BASE + "E-MTAB-/012/E-MTAB-12/Files/"),
    ],
)
def test_biostudies_files_url(base, acc, expected):
    assert sources.biostudies_files_url(acc, base_url=base) == expected


def test_sdrf_url():
    assert sources.sdrf_url("E-MTAB-9841") == FILES_9841 + "E-MTAB-9841.sdrf.txt"


@pytest.mark.parametrize(
    "acc", ["MTAB-9841", "E-MTAB-", "E-MTA-9841", "GSE123456", "E-MTAB-98a1", ""]
)
def test_bad_accession(acc):
    with pytest.raises(InputError, match="accession") as e:
        sources.biostudies_files_url(acc)
    assert e.value.field == "accession" and "E-MTAB-9841" in e.value.expected


def test_bad_base_url():
    with pytest.raises(InputError, match="not a URL") as e:
        sources.sdrf_url("E-MTAB-9841", base_url="ftp.ebi.ac.uk/biostudies")
    assert e.value.field == "base_url"


# --------------------------------------------------------------------------- read_sdrf


def test_read_sdrf_bom_repeated_headers_and_comments():
    assert B1.read_bytes().startswith(b"\xef\xbb\xbf")
    df = sources.read_sdrf(B1)
    assert df.columns[0] == "Source Name"  # the BOM is gone
    assert (df.columns == "Derived Array Data File").sum() == 3
    assert (df.columns == "Comment [Derived ArrayExpress FTP file]").sum() == 3
    assert (df.columns == "Protocol REF").sum() == 3
    assert len(df) == 6  # two FASTQ rows per sample; the trailing '#' line is skipped
    assert df.index.name == "line" and list(df.index) == [2, 3, 4, 5, 6, 7]
    assert df.attrs["sdrf_file"] == str(B1)
    files = df.loc[2, "Derived Array Data File"].tolist()
    assert files == ["LMC1_matrix.mtx", "LMC1_features.tsv", "LMC1_barcodes.tsv"]


def test_dict_reader_would_lose_the_repeated_columns():
    """The quirk read_sdrf exists for: a dict-of-columns reader keeps only the last pair."""
    with open(B1, encoding="utf-8-sig", newline="") as fh:
        first = next(csv.DictReader(fh, delimiter="\t"))
    assert first["Derived Array Data File"] == "LMC1_barcodes.tsv"
    kept = sources.read_sdrf(B1).iloc[0]["Derived Array Data File"].tolist()
    assert "LMC1_matrix.mtx" in kept and "LMC1_features.tsv" in kept


def test_read_sdrf_pads_short_rows_and_trailing_tabs(tmp_path):
    f = tmp_path / "x.sdrf.txt"
    f.write_text("Source Name\tCharacteristics[individual]\tDerived Array Data File\t\n"
                 "S1\tD1\n\nS2\tD2\tS2.h5\t\t\n", encoding="utf-8")
    df = sources.read_sdrf(f)
    assert list(df.columns) == ["Source Name", "Characteristics[individual]",
                                "Derived Array Data File"]
    assert df.loc[2].tolist() == ["S1", "D1", ""]
    assert df.loc[4].tolist() == ["S2", "D2", "S2.h5"]


def test_read_sdrf_errors(tmp_path):
    with pytest.raises(InputError, match="not found") as e:
        sources.read_sdrf(tmp_path / "missing.sdrf.txt")
    assert "SDRF" in e.value.expected
    html = tmp_path / "page.sdrf.txt"
    html.write_text("<html><body>Not found</body></html>\n")
    with pytest.raises(InputError, match="no 'Source Name' column") as e:
        sources.read_sdrf(html)
    assert e.value.file == str(html) and e.value.field == "Source Name"
    wide = write_sdrf(tmp_path / "wide.sdrf.txt", ["Source Name", "Assay Name"],
                      [["S1", "A1", "oops"]])
    with pytest.raises(InputError, match="line 2 has 3 cells but the header 2"):
        sources.read_sdrf(wide)
    header_only = write_sdrf(tmp_path / "h.sdrf.txt", ["Source Name"], [])
    with pytest.raises(InputError, match="lists no samples"):
        sources.read_sdrf(header_only)
    latin = tmp_path / "latin.sdrf.txt"
    latin.write_bytes("Source Name\nS\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        sources.read_sdrf(latin)


# --------------------------------------------------------------------------- sdrf_samples


def test_sdrf_samples_milk_default_dedup_and_legacy_rewrite():
    s = sources.sdrf_samples(B1, accession="E-MTAB-9841")
    assert list(s["sample"]) == ["LMC1", "LMC2"]  # one row per sample; NMC1 (tissue) left out
    assert list(s.index) == ["LMC1", "LMC2"]
    assert list(s["donor"]) == ["MD1", "MD2"]
    assert set(s["source"]) == {"milk"}
    assert set(s["batch"]) == set(s["accession"]) == {"E-MTAB-9841"}
    assert set(s["chemistry"]) == {"10xV3"}
    assert s["days_postpartum"].tolist() == [28.0, 10.0]  # "4" week, "10" day
    files = s.loc["LMC1", "files"]
    assert [f["name"] for f in files] == [
        "LMC1_matrix.mtx", "LMC1_features.tsv", "LMC1_barcodes.tsv"]
    assert [f["url"] for f in files] == [FILES_9841 + f["name"] for f in files]
    assert {f["url_origin"] for f in files} == {"legacy"}


def test_sdrf_samples_legacy_rewrite_follows_base_url():
    s = sources.sdrf_samples(B1, accession="E-MTAB-9841",
                             base_url="https://mirror.example.org/fire")
    url = s.loc["LMC2", "files"][0]["url"]
    assert url == "https://mirror.example.org/fire/E-MTAB-/841/E-MTAB-9841/Files/LMC2_matrix.mtx"


def test_sdrf_samples_include_tissue():
    s = sources.sdrf_samples(sources.read_sdrf(B1), accession="E-MTAB-9841", include_tissue=True)
    assert list(s["sample"]) == ["LMC1", "LMC2", "NMC1"]
    assert s.loc["NMC1", "source"] == "tissue"
    assert np.isnan(s.loc["NMC1", "days_postpartum"])  # "not applicable"


def test_sdrf_samples_loose_headers_and_biostudies_urls():
    s = sources.sdrf_samples(B2, accession="E-MTAB-10855", include_tissue=True)
    # "Characteristics [Individual]" and "Comment[Derived ArrayExpress FTP file]" matched loosely
    assert s["donor"].tolist() == ["TD5", "MD2", "MD5"]
    # index names say nothing: the organism part decides
    assert s["source"].tolist() == ["tissue", "milk", "milk"]
    assert s["days_postpartum"].isna().all()
    # AD4's second row has empty file cells: the files come from its first row, once
    files = s.loc["AD4", "files"]
    assert [f["name"] for f in files] == [
        "AD4_matrix.mtx.gz", "AD4_features.tsv.gz", "AD4_barcodes.tsv.gz"]
    # ftp:// in the SDRF -> https:// under the base URL
    assert files[0]["url"] == BASE + "E-MTAB-/855/E-MTAB-10855/Files/AD4_matrix.mtx.gz"
    assert files[0]["url_origin"] == "biostudies"
    milk = sources.sdrf_samples(B2, accession="E-MTAB-10855")
    assert milk["sample"].tolist() == ["AD4", "AE4"]


def test_sdrf_samples_fallback_urls_without_url_column():
    s = sources.sdrf_samples(B3, accession="E-MTAB-10885", include_tissue=True)
    folder = BASE + "E-MTAB-/885/E-MTAB-10885/Files/"
    assert s.loc["LMC9", "files"] == [
        {"name": "LMC9_molecule_info.h5", "url": folder + "LMC9_molecule_info.h5",
         "url_origin": "fallback"}
    ]
    assert [f["url"] for f in s.loc["NMC1B", "files"]] == [
        folder + n for n in ("NMC1B_matrix.mtx", "NMC1B_genes.tsv", "NMC1B_barcodes.tsv")
    ]
    assert set(s["chemistry"]) == {"10xV2"}


def test_sdrf_samples_other_urls_kept_and_names_sanitised(tmp_path):
    f = write_sdrf(
        tmp_path / "x.sdrf.txt",
        ["Source Name", "Characteristics[organism part]", "Characteristics[days postpartum]",
         "Derived Array Data File", "Comment [Derived ArrayExpress FTP file]"],
        [["milk sample 1", "milk", "3 weeks", "m1.h5", "https://example.org/m1.h5"],
         ["milk sample 2", "milk", "12", "m2.h5", ""]],
    )
    s = sources.sdrf_samples(f, accession="E-MTAB-1234")
    assert s["sample"].tolist() == ["milk_sample_1", "milk_sample_2"]
    assert s["source_name"].tolist() == ["milk sample 1", "milk sample 2"]
    assert s["donor"].tolist() == s["sample"].tolist()  # no individual column
    assert s["days_postpartum"].tolist() == [21.0, 12.0]
    assert s.loc["milk_sample_1", "files"][0] == {
        "name": "m1.h5", "url": "https://example.org/m1.h5", "url_origin": "sdrf"}
    assert s.loc["milk_sample_2", "files"][0]["url_origin"] == "fallback"


def test_sdrf_samples_legacy_zip_bundle_maps_to_the_file(tmp_path):
    legacy = "ftp://ftp.ebi.ac.uk/pub/databases/microarray/data/experiment/MTAB/E-MTAB-5338/"
    f = write_sdrf(
        tmp_path / "x.sdrf.txt",
        ["Source Name", "Characteristics[organism part]", "Derived Array Data File",
         "Comment [Derived ArrayExpress FTP file]"],
        [["LMC1", "breast milk", "counts.txt", legacy + "E-MTAB-5338.processed.1.zip"]],
    )
    url = sources.sdrf_samples(f, accession="E-MTAB-5338").loc["LMC1", "files"][0]["url"]
    assert url == BASE + "E-MTAB-/338/E-MTAB-5338/Files/counts.txt"


def test_sdrf_samples_conflicting_rows(tmp_path):
    f = write_sdrf(tmp_path / "x.sdrf.txt",
                   ["Source Name", "Characteristics [Individual]",
                    "Characteristics[organism part]"],
                   [["LMC1", "D1", "breast milk"], ["LMC1", "D2", "breast milk"]], bom=True)
    with pytest.raises(InputError, match="rows disagree") as e:
        sources.sdrf_samples(f, accession="E-MTAB-9841")
    assert e.value.sample == "LMC1" and e.value.field == "Characteristics [Individual]"
    assert e.value.file == str(f) and "lines [2, 3]" in str(e.value)


def test_sdrf_samples_unknown_source_and_bad_days(tmp_path):
    f = write_sdrf(tmp_path / "x.sdrf.txt", ["Source Name", "Characteristics[organism part]"],
                   [["S1", "blood"]])
    with pytest.raises(InputError, match="cannot tell milk from tissue") as e:
        sources.sdrf_samples(f, accession="E-MTAB-9841")
    assert e.value.sample == "S1" and e.value.field == "Characteristics[organism part]"
    g = write_sdrf(tmp_path / "y.sdrf.txt",
                   ["Source Name", "Characteristics[organism part]",
                    "Characteristics[time post partum]"],
                   [["LMC1", "milk", "early"]])
    with pytest.raises(InputError, match="not a number of days") as e:
        sources.sdrf_samples(g, accession="E-MTAB-9841")
    assert e.value.field == "Characteristics[time post partum]" and e.value.sample == "LMC1"


def test_sdrf_samples_no_milk_and_no_source_name(tmp_path):
    f = write_sdrf(tmp_path / "x.sdrf.txt", ["Source Name", "Characteristics[organism part]"],
                   [["NMC1", "breast"]])
    msg = r"no milk sample left \(1 tissue sample\(s\) skipped\)"
    with pytest.raises(InputError, match=msg) as e:
        sources.sdrf_samples(f, accession="E-MTAB-9841")
    assert "include_tissue=True" in e.value.expected
    with pytest.raises(InputError, match="no 'Source Name' column"):
        sources.sdrf_samples(pd.DataFrame({"Assay Name": ["A"]}), accession="E-MTAB-9841")
    with pytest.raises(InputError, match="accession"):
        sources.sdrf_samples(B1, accession="9841")


# --------------------------------------------------------------------------- sheet + downloads


def test_sample_sheet_from_sdrf_reads_back(tmp_path):
    s = sources.sdrf_samples(B1, accession="E-MTAB-9841", include_tissue=True)
    sheet = sources.sample_sheet_from_sdrf(s, tmp_path / "raw")
    assert list(sheet.columns) == ["sample", "path", "donor", "batch", "source", "days_postpartum",
                                   "chemistry", "accession"]
    assert sheet["path"].tolist() == [str(tmp_path / "raw" / n) for n in ("LMC1", "LMC2", "NMC1")]
    write_table(sheet, tmp_path / "samples.tsv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = io.read_sample_sheet(tmp_path / "samples.tsv")
    # io may flag the extra columns (chemistry, accession) as carried into obs as they are
    assert all(issubclass(w.category, MilkcellsWarning) and "chemistry" in str(w.message)
               for w in caught)
    assert back["source"].tolist() == ["milk", "milk", "tissue"]
    assert back["donor"].tolist() == ["MD1", "MD2", "TD1"]
    assert back["days_postpartum"].iloc[:2].tolist() == [28.0, 10.0]
    assert np.isnan(back["days_postpartum"].iloc[2])
    assert back["chemistry"].tolist() == ["10xV3"] * 3


def test_downloads_land_where_io_reads_them(tmp_path, rng):
    """The planned file layout is what milkcells.io.read_counts expects."""
    s = sources.sdrf_samples(B2, accession="E-MTAB-10855")
    root = tmp_path / "raw"
    plan = sources.sdrf_downloads(s, root)
    assert plan["sample"].tolist() == ["AD4"] * 3 + ["AE4"] * 3
    assert plan["role"].tolist() == ["matrix", "features", "barcodes"] * 2
    assert plan.loc[0, "url"] == BASE + "E-MTAB-/855/E-MTAB-10855/Files/AD4_matrix.mtx.gz"
    assert plan.loc[0, "dest"] == str(root / "AD4" / "AD4_matrix.mtx.gz")
    # stand-in for the downloader: write a small MTX set under the planned names
    counts = sp.random(20, 5, density=0.4, format="csr", random_state=0, dtype=np.float32)
    counts.data = np.ceil(counts.data * 9)
    var = pd.DataFrame({"gene_ids": [f"ENSG{i}" for i in range(5)]},
                       index=["CSN2", "LALBA", "EPCAM", "PTPRC", "MT-CO1"])
    sample = ad.AnnData(counts, var=var)
    io.write_10x_mtx(sample, root / "AD4", prefix="AD4_", gzip=True)
    assert sorted(p.name for p in (root / "AD4").iterdir()) == sorted(plan["name"][:3])
    sheet = sources.sample_sheet_from_sdrf(s, root)
    adata = io.read_counts(sheet.loc[0, "path"], sample="AD4")
    assert adata.shape == (20, 5)
    np.testing.assert_array_equal(adata.X.toarray(), counts.toarray())


def test_sample_sheet_unusable_samples(tmp_path):
    s = sources.sdrf_samples(B3, accession="E-MTAB-10885", include_tissue=True)
    with pytest.raises(InputError, match="only a molecule_info.h5") as e:
        sources.sample_sheet_from_sdrf(s, tmp_path)
    assert e.value.sample == "LMC9"
    sheet = sources.sample_sheet_from_sdrf(s, tmp_path, skip_unusable=True)
    assert sheet["sample"].tolist() == ["NMC1B"] and sheet.loc[0, "source"] == "tissue"
    assert sources.sdrf_downloads(s, tmp_path, skip_unusable=True)["name"].tolist() == [
        "NMC1B_matrix.mtx", "NMC1B_genes.tsv", "NMC1B_barcodes.tsv"]
    milk_only = sources.sdrf_samples(B3, accession="E-MTAB-10885")
    with pytest.raises(InputError, match="no sample has usable 10x files"):
        sources.sample_sheet_from_sdrf(milk_only, tmp_path, skip_unusable=True)
    with pytest.raises(InputError, match="missing column 'files'"):
        sources.sample_sheet_from_sdrf(pd.DataFrame({"sample": ["x"]}), tmp_path)


def test_sample_sheet_h5_path(tmp_path):
    s = pd.DataFrame({
        "sample": ["LMC5"], "files": [[{"name": "LMC5_raw_feature_bc_matrix.h5", "url": "u"}]],
        "donor": ["D5"], "source": ["milk"], "accession": ["E-MTAB-10855"],
        "batch": ["E-MTAB-10855"], "days_postpartum": [np.nan], "chemistry": ["10xV3"],
    })
    sheet = sources.sample_sheet_from_sdrf(s, tmp_path)
    assert sheet.loc[0, "path"] == str(tmp_path / "LMC5" / "LMC5_raw_feature_bc_matrix.h5")
    plan = sources.sdrf_downloads(s, tmp_path)
    assert plan[["role", "url"]].values.tolist() == [["h5", "u"]]


# --------------------------------------------------------------------------- Single Cell Portal


def _fixture_tables():
    counts = pd.read_csv(SCP_COUNTS, sep="\t", index_col=0)
    meta = pd.read_csv(SCP_META, skiprows=[1], keep_default_na=False)
    return counts, meta


def test_read_scp_fixture():
    counts, meta = _fixture_tables()
    a = sources.read_scp(SCP_COUNTS, SCP_META)
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
    assert set(a.obs["source"]) == {"milk"} and (a.obs["batch"] == a.obs["sample"]).all()
    assert a.uns["milkcells"]["ingest"]["params"]["reader"] == "read_scp"


def test_read_scp_plain_comma_r_style_and_chunks(tmp_path):
    counts, _ = _fixture_tables()
    ref = sources.read_scp(SCP_COUNTS, SCP_META)
    # comma-separated, not gzipped, no header cell above the gene names (R's write.table)
    csv_counts = tmp_path / "counts.csv"
    csv_counts.write_text(",".join(counts.columns) + "\n" + "\n".join(
        f"{g}," + ",".join(map(str, row))
        for g, row in zip(counts.index, counts.to_numpy(), strict=True)
    ) + "\n")
    tab_meta = tmp_path / "meta.txt.gz"
    with gzip.open(tab_meta, "wt") as fh:
        fh.write(SCP_META.read_text().replace(",", "\t"))
    for chunk in (1, 7, 1000):
        a = sources.read_scp(csv_counts, tab_meta, chunk_genes=chunk)
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
        sources.read_scp(SCP_COUNTS, no_type)
    assert e.value.field == "TYPE" and "TYPE" in e.value.expected
    bad_type = _edit_meta(tmp_path, lambda ls: [
        ls[0], ls[1].replace("group,group,numeric", "group,text,numeric"), *ls[2:]])
    with pytest.raises(InputError, match="column type 'text'") as e:
        sources.read_scp(SCP_COUNTS, bad_type)
    assert e.value.field == "donor_id"
    text_in_numeric = _edit_meta(
        tmp_path, lambda ls: [*ls[:2], ls[2].replace(",5,", ",five,"), *ls[3:]])
    msg = "'five' of cell 'BM01_5dpp_r1_AAACCTGA' is not a number"
    with pytest.raises(InputError, match=msg) as e:
        sources.read_scp(SCP_COUNTS, text_in_numeric)
    assert e.value.field == "time_post_partum_days"
    no_name = _edit_meta(tmp_path, lambda ls: [ls[0].replace("NAME", "cell"), *ls[1:]])
    with pytest.raises(InputError, match="first header cell"):
        sources.read_scp(SCP_COUNTS, no_name)


def test_read_scp_missing_column_and_bad_counts(tmp_path):
    with pytest.raises(InputError, match="no column 'cell_type' \\(label_column\\)") as e:
        sources.read_scp(SCP_COUNTS, SCP_META, label_column="cell_type")
    assert e.value.field == "cell_type"
    counts, _ = _fixture_tables()
    frac = counts.astype(float)
    frac.iloc[3, 2] = 0.5
    f = tmp_path / "norm.tsv"
    frac.to_csv(f, sep="\t", index_label="GENE")
    with pytest.raises(InputError, match="not a non-negative integer") as e:
        sources.read_scp(f, SCP_META)
    assert e.value.field == "counts" and e.value.expected == "raw integer counts"
    dup = tmp_path / "dup.tsv"
    renamed = counts.rename(columns={counts.columns[1]: counts.columns[0]})
    renamed.to_csv(dup, sep="\t", index_label="GENE")
    with pytest.raises(InputError, match="duplicated cell names in the header"):
        sources.read_scp(dup, SCP_META)


def test_read_scp_unmatched_cells(tmp_path):
    one_missing = _edit_meta(tmp_path, lambda ls: ls[:-1])  # 1 of 12 cells unmatched (8.3 %)
    with pytest.raises(InputError, match=r"1 cell\(s\) only in the counts") as e:
        sources.read_scp(SCP_COUNTS, one_missing)
    assert e.value.field == "NAME"
    with pytest.warns(MilkcellsWarning, match="only in the counts"):
        a = sources.read_scp(SCP_COUNTS, one_missing, max_unmatched=0.1)
    assert a.n_obs == 11 and "K1_AACTCAGT" not in a.obs_names
    counts, _ = _fixture_tables()
    np.testing.assert_array_equal(a.X.toarray(), counts.to_numpy().T[:11])
    disjoint = _edit_meta(tmp_path, lambda ls: [*ls[:2], *("X" + line for line in ls[2:])])
    with pytest.raises(InputError, match="no cell of the count table is in the metadata"):
        sources.read_scp(SCP_COUNTS, disjoint, max_unmatched=0.5)


def test_read_scp_writes_h5ad(tmp_path):
    a = sources.read_scp(SCP_COUNTS, SCP_META)
    a.write_h5ad(tmp_path / "scp.h5ad")
    b = ad.read_h5ad(tmp_path / "scp.h5ad")
    assert b.obs["author_label"].astype(str).tolist() == a.obs["author_label"].astype(str).tolist()


# --------------------------------------------------------------------------- CELLxGENE


def test_cellxgene_dataset_url():
    assert sources.cellxgene_dataset_url(DID) == (
        f"https://api.cellxgene.cziscience.com/curation/v1/datasets/{DID}/versions")
    assert sources.cellxgene_dataset_url(DID.upper(), api_url="https://api.example.org/curation/",
                                          collection_id=CID) == (
        f"https://api.example.org/curation/v1/collections/{CID}/datasets/{DID}")
    with pytest.raises(InputError, match="not a UUID") as e:
        sources.cellxgene_dataset_url("lactocytes")
    assert e.value.field == "dataset_id"
    with pytest.raises(InputError, match="not a URL"):
        sources.cellxgene_dataset_url(DID, api_url="api.cellxgene.cziscience.com")


def _asset(filetype, url):
    return {"filetype": filetype, "url": url, "filesize": 123}


def test_cellxgene_h5ad_url_shapes():
    h5ad = f"https://datasets.cellxgene.cziscience.com/{DID}.h5ad"
    dataset = {"dataset_id": DID,
               "assets": [_asset("RDS", h5ad[:-4] + "rds"), _asset("H5AD", h5ad)]}
    assert sources.cellxgene_h5ad_url(dataset) == h5ad
    older = {"dataset_id": DID, "assets": [_asset("H5AD", "https://old/x.h5ad")]}
    versions = [dict(dataset), older]
    assert sources.cellxgene_h5ad_url(versions) == h5ad  # newest first
    other = "11111111-2222-3333-4444-555555555555"
    collection = {"collection_id": CID, "datasets": [
        {"dataset_id": other, "assets": [_asset("H5AD", "https://x/other.h5ad")]}, dataset]}
    assert sources.cellxgene_h5ad_url(collection, dataset_id=DID) == h5ad
    with pytest.raises(InputError, match="2 datasets in the document") as e:
        sources.cellxgene_h5ad_url(collection)
    assert e.value.field == "dataset_id"
    with pytest.raises(InputError, match="no dataset 99999999"):
        sources.cellxgene_h5ad_url(collection, dataset_id="99999999-2222-3333-4444-555555555555")
    msg = r"no H5AD asset with a URL \(asset types: \['RDS'\]\)"
    with pytest.raises(InputError, match=msg) as e:
        sources.cellxgene_h5ad_url({"dataset_id": DID, "assets": [_asset("RDS", "https://x.rds")]})
    assert e.value.field == "assets"
    with pytest.raises(InputError, match="no 'assets'"):
        sources.cellxgene_h5ad_url({"detail": "Not found", "status": 404})
    with pytest.raises(InputError, match="lists no dataset"):
        sources.cellxgene_h5ad_url([])


@pytest.fixture
def cxg_h5ad(tmp_path):
    """A tiny CELLxGENE-schema h5ad: raw counts in raw.X, normalised X, Ensembl var index."""
    rng = np.random.default_rng(7)
    n_cells = 16
    counts = rng.poisson(2.0, size=(n_cells, 6)).astype(np.float32)
    counts[:, 0] += 1  # no empty cell
    var = pd.DataFrame(
        {"feature_name": pd.Categorical(["CSN2", "LALBA", "PTPRC", "MT-CO1", "CSN2",
                                         "ERCC-00002 (spike-in control)"]),
         "feature_biotype": pd.Categorical(["gene"] * 5 + ["spike-in"])},
        index=["ENSG00000135222", "ENSG00000167531", "ENSG00000081237", "ENSG00000198804",
               "ENSG99999999999", "ERCC-00002"],
    )
    obs = pd.DataFrame(
        {"tissue": pd.Categorical(["milk", "breast"] * 8),
         "cell_type": pd.Categorical(["luminal epithelial cell of mammary gland", "macrophage",
                                      "T cell", "fibroblast"] * 4),
         "author_cell_type": pd.Categorical(["LC2", "Macro", "T", "FB"] * 4),
         "donor_id": pd.Categorical([f"D{i % 3}" for i in range(n_cells)]),
         "sample_id": pd.Categorical([f"S{i % 4}" for i in range(n_cells)])},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    a = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=var)
    a.raw = a.copy()
    norm = counts / counts.sum(axis=1, keepdims=True) * 1e4
    a.X = sp.csr_matrix(np.log1p(norm).astype(np.float32))
    path = tmp_path / "cxg.h5ad"
    a.write_h5ad(path)
    return path, counts, obs


def test_read_cellxgene_filter_raw_and_labels(cxg_h5ad):
    path, counts, obs = cxg_h5ad
    a = sources.read_cellxgene(path, obs_filter={"tissue": "milk"})
    milk = (obs["tissue"] == "milk").to_numpy()
    assert a.obs_names.tolist() == obs.index[milk].tolist()
    # raw counts (not the normalised X), spike-in dropped
    np.testing.assert_array_equal(a.X.toarray(), counts[milk][:, :5])
    assert a.X.format == "csr" and a.X.dtype == np.float32
    assert a.var_names.tolist() == ["CSN2", "LALBA", "PTPRC", "MT-CO1", "CSN2-1"]
    assert a.var["gene_ids"].tolist()[:2] == ["ENSG00000135222", "ENSG00000167531"]
    assert a.var.loc["MT-CO1", "mt"]
    labels = obs.loc[milk, "cell_type"].astype(str).tolist()
    assert a.obs["author_label"].astype(str).tolist() == labels
    assert a.obs["donor"].astype(str).tolist() == obs.loc[milk, "donor_id"].astype(str).tolist()
    assert (a.obs["sample"] == a.obs["donor"]).all() and set(a.obs["source"]) == {"milk"}
    assert list(a.obs["tissue"].cat.categories) == ["milk"]
    assert a.obs["days_postpartum"].isna().all()
    assert a.uns["milkcells"]["ingest"]["params"]["counts_from"] == "raw.X"


def test_read_cellxgene_list_filter_label_and_sample_columns(cxg_h5ad):
    path, counts, obs = cxg_h5ad
    a = sources.read_cellxgene(
        path, obs_filter={"tissue": ["milk", "breast milk"], "donor_id": ["D0", "D1"]},
        label_column="author_cell_type", sample_column="sample_id",
    )
    keep = ((obs["tissue"] == "milk") & obs["donor_id"].isin(["D0", "D1"])).to_numpy()
    assert a.n_obs == keep.sum()
    assert set(a.obs["author_label"].astype(str)) <= {"LC2", "T"}
    assert a.obs["sample"].astype(str).tolist() == obs.loc[keep, "sample_id"].astype(str).tolist()
    everything = sources.read_cellxgene(path)
    assert everything.n_obs == len(obs) and set(everything.obs["source"]) == {"milk", "tissue"}


def test_read_cellxgene_counts_in_x_without_raw(cxg_h5ad, tmp_path):
    path, counts, _ = cxg_h5ad
    a = ad.read_h5ad(path)
    b = a.raw.to_adata()
    b.write_h5ad(tmp_path / "noraw.h5ad")
    c = sources.read_cellxgene(tmp_path / "noraw.h5ad")
    np.testing.assert_array_equal(c.X.toarray(), counts[:, :5])
    assert c.uns["milkcells"]["ingest"]["params"]["counts_from"] == "X"
    a.raw = None  # only the normalised matrix left
    a.write_h5ad(tmp_path / "norm.h5ad")
    with pytest.raises(InputError, match="not integers") as e:
        sources.read_cellxgene(tmp_path / "norm.h5ad")
    assert e.value.field == "X" and e.value.expected == "raw integer UMI counts"


def test_read_cellxgene_errors(cxg_h5ad, tmp_path):
    path, _, _ = cxg_h5ad
    with pytest.raises(InputError, match="unknown column 'organ'") as e:
        sources.read_cellxgene(path, obs_filter={"organ": "milk"})
    assert e.value.field == "organ" and e.value.file == str(path)
    msg = r"no cell has tissue in \['blood'\]; values present: \['breast', 'milk'\]"
    with pytest.raises(InputError, match=msg):
        sources.read_cellxgene(path, obs_filter={"tissue": "blood"})
    with pytest.raises(InputError, match="selects no cell"):
        sources.read_cellxgene(path, obs_filter={"tissue": "milk", "cell_type": "macrophage"})
    with pytest.raises(InputError, match="no obs column 'authors'"):
        sources.read_cellxgene(path, label_column="authors")
    with pytest.raises(InputError, match="not found"):
        sources.read_cellxgene(tmp_path / "absent.h5ad")
    broken = tmp_path / "broken.h5ad"
    shutil.copy(SCP_META, broken)
    with pytest.raises(InputError, match="cannot read h5ad"):
        sources.read_cellxgene(broken)
