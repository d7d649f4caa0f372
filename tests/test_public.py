"""milkcells.public: the SCP import and the URL-list source, on small fixtures and a local server."""

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from milkcells import InputError, datasets, io, public
from milkcells.download import DownloadError

from .archive_server import serve

FIXTURES = Path(__file__).parent / "data" / "sources"


def test_prepare_scp_splits_samples_with_author_labels(tmp_path):
    sheet = public.prepare_scp(FIXTURES / "scp_raw_counts.txt.gz", FIXTURES / "scp_metadata.csv", tmp_path)
    back = io.read_sample_sheet(tmp_path / "samples.tsv")
    assert list(back.index) == list(sheet["sample"]) and len(back) >= 2
    assert back.loc["BM01_5dpp_r1", "days_postpartum"] == 5
    assert back.loc["BM02_6wkpp_r1", "days_postpartum"] == 42
    for sample, row in back.iterrows():
        a = io.read_sample(row["path"], sample=sample)
        assert (a.obs["sample"] == sample).all() and "author_label" in a.obs
        assert a.obs["author_label"].notna().all()


def test_prepare_url_list_downloads_and_verifies(tmp_path):
    site = tmp_path / "site"
    raw = datasets.simulate_milk_sample("U1", donor="D1", days_postpartum=7, n_cells=50, n_empty=100, n_genes=400)
    io.write_10x_mtx(raw, site / "U1", prefix="U1_")
    rows = []
    with serve(site) as (base, server):
        for f in sorted((site / "U1").iterdir()):
            sha = hashlib.sha256(f.read_bytes()).hexdigest()
            rows.append({"url": f"{base}U1/{f.name}", "sample": "U1", "sha256": sha, "days_postpartum": "7"})
        pd.DataFrame(rows).to_csv(tmp_path / "urls.tsv", sep="\t", index=False)
        sheet = public.prepare_url_list(tmp_path / "urls.tsv", tmp_path / "ds", backoff=0.01)
        n = server.count()
        public.prepare_url_list(tmp_path / "urls.tsv", tmp_path / "ds", backoff=0.01)
        assert server.count() == n  # nothing downloaded again
    assert sheet.loc[0, "sample"] == "U1" and sheet.loc[0, "days_postpartum"] == 7
    a = io.read_sample(sheet.loc[0, "path"], sample="U1")
    assert a.shape == raw.shape
    manifest = pd.read_csv(tmp_path / "ds" / "manifest.tsv", sep="\t")
    assert len(manifest) == 3 and set(manifest["sha256"]) == {r["sha256"] for r in rows}


def test_prepare_url_list_checksum_mismatch_leaves_nothing(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "x.h5ad").write_bytes(b"not what the list promised")
    with serve(site) as (base, _server):
        pd.DataFrame([{"url": f"{base}x.h5ad", "sample": "X", "sha256": "0" * 64}]).to_csv(
            tmp_path / "urls.tsv", sep="\t", index=False)
        with pytest.raises(DownloadError, match="sha256"):
            public.prepare_url_list(tmp_path / "urls.tsv", tmp_path / "ds", backoff=0.01, retries=0)
    assert not (tmp_path / "ds" / "raw" / "X" / "x.h5ad").exists()
    assert not (tmp_path / "ds" / "samples.tsv").exists()


def test_prepare_url_list_needs_sample_column(tmp_path):
    pd.DataFrame([{"url": "http://127.0.0.1:9/a.h5ad"}]).to_csv(tmp_path / "urls.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="missing column 'sample'"):
        public.prepare_url_list(tmp_path / "urls.tsv", tmp_path / "ds")
