"""milkcells.archives.biostudies: BioStudies URLs, the SDRF, sample sheet and downloads (no network)."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from milkcells import InputError, MilkcellsWarning, io
from milkcells.archives import biostudies
from milkcells.samplesheet import read_sample_sheet
from milkcells.storage import write_table

DATA = Path(__file__).parent / "data" / "sources"
B1 = DATA / "twigger_batch1_like.sdrf.txt"
B2 = DATA / "twigger_batch2_like.sdrf.txt"
B3 = DATA / "twigger_batch3_like.sdrf.txt"
BASE = "https://ftp.ebi.ac.uk/biostudies/fire/"
FILES_9841 = BASE + "E-MTAB-/841/E-MTAB-9841/Files/"


def write_sdrf(path: Path, header: list[str], rows: list[list[str]], *, bom: bool = False) -> Path:
    text = "\n".join("\t".join(r) for r in [header, *rows]) + "\n"
    path.write_text(text, encoding="utf-8-sig" if bom else "utf-8")
    return path


# --------------------------------------------------------------------------- BioStudies URLs


@pytest.mark.parametrize(
    ("base", "acc", "expected"),
    [
        (BASE, "E-MTAB-9841", FILES_9841),
        ("https://ftp.ebi.ac.uk/biostudies/fire", "E-MTAB-10855", BASE + "E-MTAB-/855/E-MTAB-10855/Files/"),
        (
            "https://mirror.example.org/fire///",
            " e-mtab-10885 ",
            "https://mirror.example.org/fire/E-MTAB-/885/E-MTAB-10885/Files/",
        ),
        (BASE, "E-MTAB-12", BASE + "E-MTAB-/012/E-MTAB-12/Files/"),
    ],
)
def test_biostudies_files_url(base, acc, expected):
    assert biostudies.biostudies_files_url(acc, base_url=base) == expected


def test_sdrf_url():
    assert biostudies.sdrf_url("E-MTAB-9841") == FILES_9841 + "E-MTAB-9841.sdrf.txt"


@pytest.mark.parametrize("acc", ["MTAB-9841", "E-MTAB-", "E-MTA-9841", "GSE123456", "E-MTAB-98a1", ""])
def test_bad_accession(acc):
    with pytest.raises(InputError, match="accession") as e:
        biostudies.biostudies_files_url(acc)
    assert e.value.field == "accession" and "E-MTAB-9841" in e.value.expected


def test_bad_base_url():
    with pytest.raises(InputError, match="not a URL") as e:
        biostudies.sdrf_url("E-MTAB-9841", base_url="ftp.ebi.ac.uk/biostudies")
    assert e.value.field == "base_url"


# --------------------------------------------------------------------------- read_sdrf


def test_read_sdrf_bom_repeated_headers_and_comments():
    assert B1.read_bytes().startswith(b"\xef\xbb\xbf")
    df = biostudies.read_sdrf(B1)
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
    kept = biostudies.read_sdrf(B1).iloc[0]["Derived Array Data File"].tolist()
    assert "LMC1_matrix.mtx" in kept and "LMC1_features.tsv" in kept


def test_read_sdrf_pads_short_rows_and_trailing_tabs(tmp_path):
    f = tmp_path / "x.sdrf.txt"
    f.write_text(
        "Source Name\tCharacteristics[individual]\tDerived Array Data File\t\nS1\tD1\n\nS2\tD2\tS2.h5\t\t\n",
        encoding="utf-8",
    )
    df = biostudies.read_sdrf(f)
    assert list(df.columns) == ["Source Name", "Characteristics[individual]", "Derived Array Data File"]
    assert df.loc[2].tolist() == ["S1", "D1", ""]
    assert df.loc[4].tolist() == ["S2", "D2", "S2.h5"]


def test_read_sdrf_errors(tmp_path):
    with pytest.raises(InputError, match="not found") as e:
        biostudies.read_sdrf(tmp_path / "missing.sdrf.txt")
    assert "SDRF" in e.value.expected
    html = tmp_path / "page.sdrf.txt"
    html.write_text("<html><body>Not found</body></html>\n")
    with pytest.raises(InputError, match="no 'Source Name' column") as e:
        biostudies.read_sdrf(html)
    assert e.value.file == str(html) and e.value.field == "Source Name"
    wide = write_sdrf(tmp_path / "wide.sdrf.txt", ["Source Name", "Assay Name"], [["S1", "A1", "oops"]])
    with pytest.raises(InputError, match="line 2 has 3 cells but the header 2"):
        biostudies.read_sdrf(wide)
    header_only = write_sdrf(tmp_path / "h.sdrf.txt", ["Source Name"], [])
    with pytest.raises(InputError, match="lists no samples"):
        biostudies.read_sdrf(header_only)
    latin = tmp_path / "latin.sdrf.txt"
    latin.write_bytes("Source Name\nS\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        biostudies.read_sdrf(latin)


# --------------------------------------------------------------------------- sdrf_samples


def test_sdrf_samples_milk_default_dedup_and_legacy_rewrite():
    s = biostudies.sdrf_samples(B1, accession="E-MTAB-9841")
    assert list(s["sample"]) == ["LMC1", "LMC2"]  # one row per sample; NMC1 (tissue) left out
    assert list(s.index) == ["LMC1", "LMC2"]
    assert list(s["donor"]) == ["MD1", "MD2"]
    assert set(s["sample_type"]) == {"milk"}
    assert set(s["batch"]) == set(s["accession"]) == {"E-MTAB-9841"}
    assert set(s["chemistry"]) == {"10xV3"}
    assert s["days_postpartum"].tolist() == [28.0, 10.0]  # "4" week, "10" day
    files = s.loc["LMC1", "files"]
    assert [f["name"] for f in files] == ["LMC1_matrix.mtx", "LMC1_features.tsv", "LMC1_barcodes.tsv"]
    assert [f["url"] for f in files] == [FILES_9841 + f["name"] for f in files]
    assert {f["url_origin"] for f in files} == {"legacy"}


def test_sdrf_samples_legacy_rewrite_follows_base_url():
    s = biostudies.sdrf_samples(B1, accession="E-MTAB-9841", base_url="https://mirror.example.org/fire")
    url = s.loc["LMC2", "files"][0]["url"]
    assert url == "https://mirror.example.org/fire/E-MTAB-/841/E-MTAB-9841/Files/LMC2_matrix.mtx"


def test_sdrf_samples_include_tissue():
    s = biostudies.sdrf_samples(biostudies.read_sdrf(B1), accession="E-MTAB-9841", include_tissue=True)
    assert list(s["sample"]) == ["LMC1", "LMC2", "NMC1"]
    assert s.loc["NMC1", "sample_type"] == "tissue"
    assert np.isnan(s.loc["NMC1", "days_postpartum"])  # "not applicable"


def test_sdrf_samples_loose_headers_and_biostudies_urls():
    s = biostudies.sdrf_samples(B2, accession="E-MTAB-10855", include_tissue=True)
    # "Characteristics [Individual]" and "Comment[Derived ArrayExpress FTP file]" matched loosely
    assert s["donor"].tolist() == ["TD5", "MD2", "MD5"]
    # index names say nothing: the organism part decides
    assert s["sample_type"].tolist() == ["tissue", "milk", "milk"]
    assert s["days_postpartum"].isna().all()
    # AD4's second row has empty file cells: the files come from its first row, once
    files = s.loc["AD4", "files"]
    assert [f["name"] for f in files] == ["AD4_matrix.mtx.gz", "AD4_features.tsv.gz", "AD4_barcodes.tsv.gz"]
    # ftp:// in the SDRF -> https:// under the base URL
    assert files[0]["url"] == BASE + "E-MTAB-/855/E-MTAB-10855/Files/AD4_matrix.mtx.gz"
    assert files[0]["url_origin"] == "biostudies"
    milk = biostudies.sdrf_samples(B2, accession="E-MTAB-10855")
    assert milk["sample"].tolist() == ["AD4", "AE4"]


def test_sdrf_samples_fallback_urls_without_url_column():
    s = biostudies.sdrf_samples(B3, accession="E-MTAB-10885", include_tissue=True)
    folder = BASE + "E-MTAB-/885/E-MTAB-10885/Files/"
    assert s.loc["LMC9", "files"] == [
        {"name": "LMC9_molecule_info.h5", "url": folder + "LMC9_molecule_info.h5", "url_origin": "fallback"}
    ]
    assert [f["url"] for f in s.loc["NMC1B", "files"]] == [
        folder + n for n in ("NMC1B_matrix.mtx", "NMC1B_genes.tsv", "NMC1B_barcodes.tsv")
    ]
    assert set(s["chemistry"]) == {"10xV2"}


def test_sdrf_samples_other_urls_kept_and_names_sanitised(tmp_path):
    f = write_sdrf(
        tmp_path / "x.sdrf.txt",
        [
            "Source Name",
            "Characteristics[organism part]",
            "Characteristics[days postpartum]",
            "Derived Array Data File",
            "Comment [Derived ArrayExpress FTP file]",
        ],
        [
            ["milk sample 1", "milk", "3 weeks", "m1.h5", "https://example.org/m1.h5"],
            ["milk sample 2", "milk", "12", "m2.h5", ""],
        ],
    )
    s = biostudies.sdrf_samples(f, accession="E-MTAB-1234")
    assert s["sample"].tolist() == ["milk_sample_1", "milk_sample_2"]
    assert s["source_name"].tolist() == ["milk sample 1", "milk sample 2"]
    assert s["donor"].tolist() == s["sample"].tolist()  # no individual column
    assert s["days_postpartum"].tolist() == [21.0, 12.0]
    assert s.loc["milk_sample_1", "files"][0] == {
        "name": "m1.h5",
        "url": "https://example.org/m1.h5",
        "url_origin": "sdrf",
    }
    assert s.loc["milk_sample_2", "files"][0]["url_origin"] == "fallback"


def test_sdrf_samples_legacy_zip_bundle_maps_to_the_file(tmp_path):
    legacy = "ftp://ftp.ebi.ac.uk/pub/databases/microarray/data/experiment/MTAB/E-MTAB-5338/"
    f = write_sdrf(
        tmp_path / "x.sdrf.txt",
        [
            "Source Name",
            "Characteristics[organism part]",
            "Derived Array Data File",
            "Comment [Derived ArrayExpress FTP file]",
        ],
        [["LMC1", "breast milk", "counts.txt", legacy + "E-MTAB-5338.processed.1.zip"]],
    )
    url = biostudies.sdrf_samples(f, accession="E-MTAB-5338").loc["LMC1", "files"][0]["url"]
    assert url == BASE + "E-MTAB-/338/E-MTAB-5338/Files/counts.txt"


def test_sdrf_samples_conflicting_rows(tmp_path):
    f = write_sdrf(
        tmp_path / "x.sdrf.txt",
        ["Source Name", "Characteristics [Individual]", "Characteristics[organism part]"],
        [["LMC1", "D1", "breast milk"], ["LMC1", "D2", "breast milk"]],
        bom=True,
    )
    with pytest.raises(InputError, match="rows disagree") as e:
        biostudies.sdrf_samples(f, accession="E-MTAB-9841")
    assert e.value.sample == "LMC1" and e.value.field == "Characteristics [Individual]"
    assert e.value.file == str(f) and "lines [2, 3]" in str(e.value)


def test_sdrf_samples_unknown_source_and_bad_days(tmp_path):
    f = write_sdrf(tmp_path / "x.sdrf.txt", ["Source Name", "Characteristics[organism part]"], [["S1", "blood"]])
    with pytest.raises(InputError, match="cannot tell milk from tissue") as e:
        biostudies.sdrf_samples(f, accession="E-MTAB-9841")
    assert e.value.sample == "S1" and e.value.field == "Characteristics[organism part]"
    g = write_sdrf(
        tmp_path / "y.sdrf.txt",
        ["Source Name", "Characteristics[organism part]", "Characteristics[time post partum]"],
        [["LMC1", "milk", "early"]],
    )
    with pytest.raises(InputError, match="not a number of days") as e:
        biostudies.sdrf_samples(g, accession="E-MTAB-9841")
    assert e.value.field == "Characteristics[time post partum]" and e.value.sample == "LMC1"


def test_sdrf_samples_no_milk_and_no_source_name(tmp_path):
    f = write_sdrf(tmp_path / "x.sdrf.txt", ["Source Name", "Characteristics[organism part]"], [["NMC1", "breast"]])
    msg = r"no milk sample left \(1 tissue sample\(s\) skipped\)"
    with pytest.raises(InputError, match=msg) as e:
        biostudies.sdrf_samples(f, accession="E-MTAB-9841")
    assert "include_tissue=True" in e.value.expected
    with pytest.raises(InputError, match="no 'Source Name' column"):
        biostudies.sdrf_samples(pd.DataFrame({"Assay Name": ["A"]}), accession="E-MTAB-9841")
    with pytest.raises(InputError, match="accession"):
        biostudies.sdrf_samples(B1, accession="9841")


# --------------------------------------------------------------------------- sheet + downloads


def test_sample_sheet_from_sdrf_reads_back(tmp_path):
    s = biostudies.sdrf_samples(B1, accession="E-MTAB-9841", include_tissue=True)
    sheet = biostudies.sample_sheet_from_sdrf(s, tmp_path / "raw")
    assert list(sheet.columns) == [
        "sample",
        "path",
        "donor",
        "batch",
        "sample_type",
        "days_postpartum",
        "chemistry",
        "accession",
    ]
    assert sheet["path"].tolist() == [str(tmp_path / "raw" / n) for n in ("LMC1", "LMC2", "NMC1")]
    write_table(sheet, tmp_path / "samples.tsv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = read_sample_sheet(tmp_path / "samples.tsv")
    # io may flag the extra columns (chemistry, accession) as carried into obs as they are
    assert all(issubclass(w.category, MilkcellsWarning) and "chemistry" in str(w.message) for w in caught)
    assert back["sample_type"].tolist() == ["milk", "milk", "tissue"]
    assert back["donor"].tolist() == ["MD1", "MD2", "TD1"]
    assert back["days_postpartum"].iloc[:2].tolist() == [28.0, 10.0]
    assert np.isnan(back["days_postpartum"].iloc[2])
    assert back["chemistry"].tolist() == ["10xV3"] * 3


def test_downloads_land_where_io_reads_them(tmp_path, rng):
    """The planned file layout is what milkcells.io.read_counts expects."""
    s = biostudies.sdrf_samples(B2, accession="E-MTAB-10855")
    root = tmp_path / "raw"
    plan = biostudies.sdrf_downloads(s, root)
    assert plan["sample"].tolist() == ["AD4"] * 3 + ["AE4"] * 3
    assert plan["role"].tolist() == ["matrix", "features", "barcodes"] * 2
    assert plan.loc[0, "url"] == BASE + "E-MTAB-/855/E-MTAB-10855/Files/AD4_matrix.mtx.gz"
    assert plan.loc[0, "dest"] == str(root / "AD4" / "AD4_matrix.mtx.gz")
    # stand-in for the downloader: write a small MTX set under the planned names
    counts = sp.random(20, 5, density=0.4, format="csr", random_state=0, dtype=np.float32)
    counts.data = np.ceil(counts.data * 9)
    var = pd.DataFrame(
        {"gene_ids": [f"ENSG{i}" for i in range(5)]}, index=["CSN2", "LALBA", "EPCAM", "PTPRC", "MT-CO1"]
    )
    sample = ad.AnnData(counts, var=var)
    io.write_10x_mtx(sample, root / "AD4", prefix="AD4_", gzip=True)
    assert sorted(p.name for p in (root / "AD4").iterdir()) == sorted(plan["name"][:3])
    sheet = biostudies.sample_sheet_from_sdrf(s, root)
    adata = io.read_counts(sheet.loc[0, "path"], sample="AD4")
    assert adata.shape == (20, 5)
    np.testing.assert_array_equal(adata.X.toarray(), counts.toarray())


def test_sample_sheet_unusable_samples(tmp_path):
    s = biostudies.sdrf_samples(B3, accession="E-MTAB-10885", include_tissue=True)
    with pytest.raises(InputError, match="only a molecule_info.h5") as e:
        biostudies.sample_sheet_from_sdrf(s, tmp_path)
    assert e.value.sample == "LMC9"
    sheet = biostudies.sample_sheet_from_sdrf(s, tmp_path, skip_unusable=True)
    assert sheet["sample"].tolist() == ["NMC1B"] and sheet.loc[0, "sample_type"] == "tissue"
    assert biostudies.sdrf_downloads(s, tmp_path, skip_unusable=True)["name"].tolist() == [
        "NMC1B_matrix.mtx",
        "NMC1B_genes.tsv",
        "NMC1B_barcodes.tsv",
    ]
    milk_only = biostudies.sdrf_samples(B3, accession="E-MTAB-10885")
    with pytest.raises(InputError, match="no sample has usable 10x files"):
        biostudies.sample_sheet_from_sdrf(milk_only, tmp_path, skip_unusable=True)
    with pytest.raises(InputError, match="missing column 'files'"):
        biostudies.sample_sheet_from_sdrf(pd.DataFrame({"sample": ["x"]}), tmp_path)


def test_sample_sheet_h5_path(tmp_path):
    s = pd.DataFrame(
        {
            "sample": ["LMC5"],
            "files": [[{"name": "LMC5_raw_feature_bc_matrix.h5", "url": "u"}]],
            "donor": ["D5"],
            "sample_type": ["milk"],
            "accession": ["E-MTAB-10855"],
            "batch": ["E-MTAB-10855"],
            "days_postpartum": [np.nan],
            "chemistry": ["10xV3"],
        }
    )
    sheet = biostudies.sample_sheet_from_sdrf(s, tmp_path)
    assert sheet.loc[0, "path"] == str(tmp_path / "LMC5" / "LMC5_raw_feature_bc_matrix.h5")
    plan = biostudies.sdrf_downloads(s, tmp_path)
    assert plan[["role", "url"]].values.tolist() == [["h5", "u"]]
