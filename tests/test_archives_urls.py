"""milkcells.archives.urls: URL lists, and downloading one through a server on 127.0.0.1."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from milkcells import InputError, MilkcellsWarning, demo, io
from milkcells.archives import urls
from milkcells.download import DownloadError

from .archive_server import serve


def test_prepare_url_list_downloads_and_verifies(tmp_path):
    site = tmp_path / "site"
    raw = demo.simulate_milk_sample("U1", donor="D1", days_postpartum=7, n_cells=50, n_empty=100, n_genes=400)
    io.write_10x_mtx(raw, site / "U1", prefix="U1_")
    rows = []
    with serve(site) as (base, server):
        for f in sorted((site / "U1").iterdir()):
            sha = hashlib.sha256(f.read_bytes()).hexdigest()
            row = {"url": f"{base}U1/{f.name}", "sample": "U1", "sha256": sha, "days_postpartum": "7"}
            rows.append(row | {"source": "tissue"})  # the former name of sample_type
        pd.DataFrame(rows).to_csv(tmp_path / "urls.tsv", sep="\t", index=False)
        with pytest.warns(MilkcellsWarning, match="column 'source' is now called 'sample_type'"):
            sheet = urls.prepare(tmp_path / "ds", url_list=tmp_path / "urls.tsv", backoff=0.01)
        n = server.count()
        with pytest.warns(MilkcellsWarning, match="'source'"):
            urls.prepare(tmp_path / "ds", url_list=tmp_path / "urls.tsv", backoff=0.01)
        assert server.count() == n  # nothing downloaded again
    assert sheet.loc[0, "sample"] == "U1" and sheet.loc[0, "days_postpartum"] == 7
    assert sheet.loc[0, "sample_type"] == "tissue"
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
            tmp_path / "urls.tsv", sep="\t", index=False
        )
        with pytest.raises(DownloadError, match="sha256"):
            urls.prepare(tmp_path / "ds", url_list=tmp_path / "urls.tsv", backoff=0.01, retries=0)
    assert not (tmp_path / "ds" / "raw" / "X" / "x.h5ad").exists()
    assert not (tmp_path / "ds" / "samples.tsv").exists()


def test_prepare_url_list_needs_sample_column(tmp_path):
    pd.DataFrame([{"url": "http://127.0.0.1:9/a.h5ad"}]).to_csv(tmp_path / "urls.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="missing column 'sample'"):
        urls.prepare(tmp_path / "ds", url_list=tmp_path / "urls.tsv")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("link\tsha256\nhttp://127.0.0.1/a\t\n", "missing column 'url'"),
        ("url\tsha256\nhttp://127.0.0.1/a\tabc123\n", r"malformed sha256 'abc123' on line 2"),
        ("url\tmd5\nhttp://127.0.0.1/a\t" + "g" * 32 + "\n", "malformed md5"),
        ("url\tsize\nhttp://127.0.0.1/a\t12kb\n", r"malformed size '12kb' on line 2"),
        ("url\nnot-a-url\n", "malformed URL 'not-a-url'"),
        ("url\tfilename\nhttp://127.0.0.1/a\t../etc/passwd\n", "unsafe file name"),
        ("url\nhttp://127.0.0.1/x/a\nhttp://127.0.0.1/y/a\n", "same file 'a'"),
        ("url\nhttp://127.0.0.1/folder/\n", "no file name in the URL"),
        ("url\tsha256\nhttp://127.0.0.1/a\n", "line 2 has 1 fields"),
        ("", "empty"),
    ],
)
def test_read_url_list_errors(tmp_path, text, match):
    path = tmp_path / "urls.tsv"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as err:
        urls.read_url_list(path)
    assert str(path) in str(err.value)


def test_read_url_list_missing_file(tmp_path):
    with pytest.raises(InputError, match="URL list not found"):
        urls.read_url_list(tmp_path / "nope.tsv")
