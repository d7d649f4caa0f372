"""milkcells.download against a real local HTTP server (tests/archive_server.py)."""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import shutil
import socket
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import requests

from milkcells import InputError, _http
from milkcells import download as dl
from milkcells import manifest as mf
from milkcells.archives import urls
from tests.archive_server import Fault, serve

DATA = Path(__file__).parent / "data" / "archive"
TINY = DATA / "tiny10x"
FAST = {"backoff": 0.01, "timeout": 5, "progress": False}


@pytest.fixture(autouse=True)
def _offline(no_network):
    """Every test in this module may reach 127.0.0.1 only."""


def _bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _gz(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


@pytest.fixture
def site(tmp_path):
    """A served folder with a binary file, a gzip file and a tiny 10x triplet."""
    root = tmp_path / "site"
    (root / "data").mkdir(parents=True)
    (root / "data" / "blob.bin").write_bytes(_bytes(50_000))
    (root / "data" / "table.tsv.gz").write_bytes(_gz("gene\tcount\n" * 400))
    shutil.copytree(TINY, root / "tiny10x")
    return root


def _leftovers(dest: Path) -> list[Path]:
    return [p for p in (dest, dest.with_name(dest.name + ".part")) if p.exists()]


# --------------------------------------------------------------------------- basics


def test_user_agent_is_fixed_and_sent(archive, site, tmp_path):
    assert re.fullmatch(r"milkcells/\S+ \(\+https://github\.com/milkcells/milkcells\)", dl.USER_AGENT)
    base, server = archive(site)
    dl.fetch(base + "data/blob.bin", tmp_path / "out" / "blob.bin", **FAST)
    (req,) = server.requests_for("data/blob.bin")
    assert req.headers["User-Agent"] == dl.USER_AGENT
    assert req.headers["Accept-Encoding"] == "identity"


def test_plain_download_and_manifest(archive, site, tmp_path):
    base, server = archive(site)
    data = (site / "data" / "blob.bin").read_bytes()
    dest = tmp_path / "out" / "blob.bin"
    rec = dl.fetch(
        base + "data/blob.bin",
        dest,
        sha256=_sha(data).upper(),
        md5=hashlib.md5(data).hexdigest(),
        size=len(data),
        **FAST,
    )
    assert dest.read_bytes() == data
    assert not dest.with_name("blob.bin.part").exists()
    assert rec["downloaded"] is True and rec["origin"] == "network"
    assert rec["url"] == base + "data/blob.bin" and rec["path"] == str(dest)
    assert (rec["size"], rec["sha256"], rec["md5"]) == (len(data), _sha(data), hashlib.md5(data).hexdigest())
    assert datetime.fromisoformat(rec["time"]).utcoffset().total_seconds() == 0
    assert server.count("data/blob.bin") == 1

    manifest = tmp_path / "out" / "manifest.tsv"
    mf.write_manifest([rec], manifest)
    assert manifest.read_text().splitlines()[0].split("\t") == list(mf.MANIFEST_COLUMNS)
    (back,) = mf.read_manifest(manifest)
    assert back == {k: rec[k] for k in mf.MANIFEST_COLUMNS}
    assert not list(manifest.parent.glob(".*tmp*"))  # atomic write left no temporary file


def test_second_fetch_and_fetch_all_download_nothing(archive, site, tmp_path):
    base, server = archive(site)
    items = [
        {"url": base + "data/blob.bin"},
        {"url": base + "data/table.tsv.gz"},
        {"url": base + "tiny10x/matrix.mtx.gz", "filename": "E-MTAB-9841/matrix.mtx.gz"},
    ]
    out, manifest = tmp_path / "out", tmp_path / "out" / "manifest.tsv"
    first = dl.fetch_all(items, out, manifest=manifest, **FAST)
    assert [r["downloaded"] for r in first] == [True] * 3
    got = (out / "E-MTAB-9841" / "matrix.mtx.gz").read_bytes()
    assert got == (TINY / "matrix.mtx.gz").read_bytes()
    seen, text = server.count(method=None), manifest.read_text()
    assert seen == 3

    again = dl.fetch_all(items, out, manifest=manifest, **FAST)
    assert [(r["downloaded"], r["origin"]) for r in again] == [(False, "existing")] * 3
    single = dl.fetch(base + "data/blob.bin", out / "blob.bin", sha256=first[0]["sha256"], **FAST)
    assert single["downloaded"] is False
    assert server.count(method=None) == seen  # no request at all
    assert manifest.read_text() == text  # the manifest of a finished dataset is stable


# --------------------------------------------------------------------------- HTTP failures


def test_404_fails_at_once_without_partial_file(archive, site, tmp_path):
    base, server = archive(site)
    dest = tmp_path / "missing.bin"
    start = time.monotonic()
    with pytest.raises(dl.DownloadError, match=r"HTTP 404.*not retried") as err:
        dl.fetch(base + "data/missing.bin", dest, retries=5, backoff=1, timeout=5)
    assert time.monotonic() - start < 1  # no backoff pauses
    assert base + "data/missing.bin" in str(err.value) and str(dest) in str(err.value)
    assert isinstance(err.value, OSError) and err.value.attempts == 1
    assert server.count("data/missing.bin") == 1
    assert _leftovers(dest) == []


def test_injected_404_for_existing_file(archive, site, tmp_path):
    base, server = archive(site, faults={"data/blob.bin": Fault.not_found()})
    with pytest.raises(dl.DownloadError, match="404"):
        dl.fetch(base + "data/blob.bin", tmp_path / "blob.bin", **FAST)
    assert server.count("data/blob.bin") == 1


def test_500_twice_then_success(archive, site, tmp_path):
    base, server = archive(site, faults={"data/blob.bin": Fault.error(500, times=2)})
    dest = tmp_path / "blob.bin"
    rec = dl.fetch(base + "data/blob.bin", dest, **FAST)
    assert rec["downloaded"] and dest.read_bytes() == (site / "data" / "blob.bin").read_bytes()
    assert [r.status for r in server.requests_for("data/blob.bin")] == [500, 500, 200]


def test_retries_exhausted_names_url_and_last_failure(archive, site, tmp_path):
    base, server = archive(site, faults={"data/blob.bin": Fault.error(503)})
    url, dest = base + "data/blob.bin", tmp_path / "blob.bin"
    with pytest.raises(dl.DownloadError) as err:
        dl.fetch(url, dest, retries=2, **FAST)
    msg = str(err.value)
    assert url in msg and "3 attempts" in msg and "HTTP 503" in msg
    assert err.value.url == url and err.value.attempts == 3
    assert server.count("data/blob.bin") == 3
    assert _leftovers(dest) == []


def test_connection_refused_is_retried_then_fails(tmp_path):
    with socket.socket() as s:  # a free loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.bin"
    with pytest.raises(dl.DownloadError, match=r"after 3 attempts.*ConnectionError") as err:
        dl.fetch(url, tmp_path / "x.bin", retries=2, **FAST)
    assert url in str(err.value)
    assert _leftovers(tmp_path / "x.bin") == []


def test_timeout_is_retried(archive, site, tmp_path):
    base, server = archive(site, faults={"data/blob.bin": Fault(delay=0.6, times=1)})
    dest = tmp_path / "blob.bin"
    dl.fetch(base + "data/blob.bin", dest, backoff=0.01, timeout=0.2, progress=False)
    assert dest.read_bytes() == (site / "data" / "blob.bin").read_bytes()
    assert server.count("data/blob.bin") == 2


# --------------------------------------------------------------------------- resuming


def test_dropped_connection_resumes_with_range(archive, site, tmp_path):
    data = (site / "data" / "blob.bin").read_bytes()
    base, server = archive(site, faults={"data/blob.bin": Fault.drop(after=10_000, times=2)})
    dest = tmp_path / "blob.bin"
    rec = dl.fetch(base + "data/blob.bin", dest, sha256=_sha(data), chunk_size=4096, **FAST)
    assert dest.read_bytes() == data and rec["sha256"] == _sha(data)
    reqs = server.requests_for("data/blob.bin")
    # each dropped response delivered 10 000 bytes; each retry resumed where the last stopped
    assert [r.range for r in reqs] == [None, "bytes=10000-", "bytes=20000-"]
    assert [r.status for r in reqs] == [200, 206, 206]
    assert _leftovers(dest) == [dest]


def test_part_file_from_an_earlier_run_is_resumed(archive, site, tmp_path):
    data = (site / "data" / "blob.bin").read_bytes()
    base, server = archive(site)
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(data[:12_345])
    rec = dl.fetch(base + "data/blob.bin", dest, size=len(data), **FAST)
    assert dest.read_bytes() == data and rec["size"] == len(data)
    assert [r.range for r in server.requests_for("data/blob.bin")] == ["bytes=12345-"]


def test_server_ignoring_range_restarts_from_zero(archive, site, tmp_path):
    data = (site / "data" / "blob.bin").read_bytes()
    base, server = archive(site, faults={"data/blob.bin": Fault(ignore_range=True)})
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"x" * 1000)  # garbage: must not survive
    dl.fetch(base + "data/blob.bin", dest, **FAST)
    assert dest.read_bytes() == data
    (req,) = server.requests_for("data/blob.bin")
    assert (req.range, req.status) == ("bytes=1000-", 200)


def test_416_with_complete_part_file_finishes_it(archive, site, tmp_path):
    data = (site / "data" / "blob.bin").read_bytes()
    base, server = archive(site)
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(data)  # an earlier run stopped before the rename
    rec = dl.fetch(base + "data/blob.bin", dest, sha256=_sha(data), **FAST)
    assert rec["downloaded"] and dest.read_bytes() == data
    assert [r.status for r in server.requests_for("data/blob.bin")] == [416]


def test_416_with_oversized_part_file_starts_again(archive, site, tmp_path):
    data = (site / "data" / "blob.bin").read_bytes()
    base, server = archive(site)
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(_bytes(60_000, seed=1))  # a different, larger file
    dl.fetch(base + "data/blob.bin", dest, **FAST)
    assert dest.read_bytes() == data
    reqs = server.requests_for("data/blob.bin")
    assert [(r.range, r.status) for r in reqs] == [("bytes=60000-", 416), (None, 200)]


def test_resumed_file_failing_checksum_is_downloaded_again(archive, site, tmp_path):
    """A .part from an older version of the file: resumed, mismatch, then one clean download."""
    data = (site / "data" / "blob.bin").read_bytes()
    base, server = archive(site)
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(_bytes(20_000, seed=7))
    dl.fetch(base + "data/blob.bin", dest, sha256=_sha(data), **FAST)
    assert dest.read_bytes() == data
    assert [r.range for r in server.requests_for("data/blob.bin")] == ["bytes=20000-", None]


def test_content_encoding_header_does_not_alter_bytes(archive, site, tmp_path):
    raw = (site / "data" / "table.tsv.gz").read_bytes()
    faults = {"data/table.tsv.gz": Fault(headers={"Content-Encoding": "gzip"})}
    base, _ = archive(site, faults=faults)
    dest = tmp_path / "table.tsv.gz"
    dl.fetch(base + "data/table.tsv.gz", dest, sha256=_sha(raw), **FAST)
    assert dest.read_bytes() == raw  # stored as served, not transparently decompressed


# --------------------------------------------------------------------------- verification


def test_truncated_gzip_leaves_nothing(archive, site, tmp_path):
    raw = (site / "data" / "table.tsv.gz").read_bytes()
    base, server = archive(site, faults={"data/table.tsv.gz": Fault.truncated(len(raw) // 2)})
    dest = tmp_path / "table.tsv.gz"
    with pytest.raises(dl.DownloadError, match="truncated gzip") as err:
        dl.fetch(base + "data/table.tsv.gz", dest, **FAST)
    assert base + "data/table.tsv.gz" in str(err.value) and "complete gzip stream" in str(err.value)
    assert _leftovers(dest) == []
    assert server.count("data/table.tsv.gz") == 1  # a verification failure is not retried


@pytest.mark.parametrize("algo", ["sha256", "md5"])
def test_checksum_mismatch_leaves_nothing(archive, site, tmp_path, algo):
    data = (site / "data" / "blob.bin").read_bytes()
    want = hashlib.new(algo, data).hexdigest()
    base, _ = archive(site, faults={"data/blob.bin": Fault.wrong_content(b"not the file\n")})
    dest = tmp_path / "blob.bin"
    with pytest.raises(dl.DownloadError, match=f"{algo} mismatch") as err:
        dl.fetch(base + "data/blob.bin", dest, **{algo: want}, **FAST)
    assert want in str(err.value) and base + "data/blob.bin" in str(err.value)
    assert _leftovers(dest) == []


def test_size_mismatch_announced_by_server_fails_at_once(archive, site, tmp_path):
    base, server = archive(site)
    dest = tmp_path / "blob.bin"
    with pytest.raises(dl.DownloadError, match=r"server reports 50000 bytes.*expected 123 bytes"):
        dl.fetch(base + "data/blob.bin", dest, size=123, **FAST)
    assert server.count("data/blob.bin") == 1
    assert _leftovers(dest) == []


def test_broken_matrix_download_is_rejected(archive, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    text = gzip.decompress((TINY / "matrix.mtx.gz").read_bytes()).decode()
    text = text.splitlines(keepends=True)
    (site / "matrix.mtx.gz").write_bytes(_gz("".join(text[:-1])))  # a complete gzip, a line short
    base, _ = archive(site)
    dest = tmp_path / "out" / "matrix.mtx.gz"
    with pytest.raises(dl.DownloadError, match="announces 6 entries but the file holds 5"):
        dl.fetch(base + "matrix.mtx.gz", dest, **FAST)
    assert _leftovers(dest) == []


def test_existing_file_that_does_not_verify_is_left_untouched(archive, site, tmp_path):
    base, server = archive(site)
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"old content")
    with pytest.raises(dl.DownloadError, match="does not verify.*sha256 mismatch.*remove it"):
        dl.fetch(base + "data/blob.bin", dest, sha256="0" * 64, **FAST)
    assert dest.read_bytes() == b"old content"
    assert server.count(method=None) == 0


def test_bad_arguments_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="sha256"):
        dl.fetch("http://127.0.0.1:9/x", tmp_path / "x", sha256="abc")
    with pytest.raises(InputError, match="md5"):
        dl.fetch("http://127.0.0.1:9/x", tmp_path / "x", md5="z" * 32)
    with pytest.raises(InputError, match="size"):
        dl.fetch("http://127.0.0.1:9/x", tmp_path / "x", size=-1)
    with pytest.raises(InputError, match="http"):
        dl.fetch("ftp://127.0.0.1/x", tmp_path / "x")
    with pytest.raises(TypeError, match="sha256"):
        dl.fetch_all([], tmp_path, sha256="0" * 64)


# --------------------------------------------------------------------------- lists and mirror


def test_fetch_all_from_url_list_with_manifest(archive, site, tmp_path):
    base, server = archive(site)
    blob = (site / "data" / "blob.bin").read_bytes()
    lst = tmp_path / "urls.tsv"
    lst.write_text(
        "# files of a tiny dataset\n"
        "url\tfilename\tsha256\tmd5\tsize\tnote\n"
        f"{base}data/blob.bin\t\t{_sha(blob)}\t\t{len(blob)}\tbinary\n"
        f"{base}tiny10x/matrix.mtx.gz\tm/matrix.mtx.gz\t\t"
        f"{hashlib.md5((TINY / 'matrix.mtx.gz').read_bytes()).hexdigest()}\t\t\n"
        "\n"
    )
    items = urls.read_url_list(lst)
    assert [i["filename"] for i in items] == ["blob.bin", "m/matrix.mtx.gz"]
    assert items[0]["size"] == len(blob) and items[1]["size"] is None and items[1]["sha256"] is None
    out = tmp_path / "out"
    records = dl.fetch_all(items, out, manifest=out / "manifest.tsv", **FAST)
    assert (out / "blob.bin").read_bytes() == blob
    assert (out / "m" / "matrix.mtx.gz").is_file()
    assert [(m["path"], m["size"]) for m in mf.read_manifest(out / "manifest.tsv")] == [
        (r["path"], r["size"]) for r in records
    ]
    assert server.count() == 2


def test_mirror_is_used_without_network(archive, site, tmp_path):
    base, server = archive(site)
    mirror = tmp_path / "mirror"
    shutil.copytree(site, mirror)
    items = [
        {
            "url": base + "data/blob.bin",
            "filename": "data/blob.bin",
            "sha256": _sha((site / "data" / "blob.bin").read_bytes()),
        },
        {"url": base + "tiny10x/matrix.mtx.gz", "filename": "tiny10x/matrix.mtx.gz"},
    ]
    out = tmp_path / "out"
    records = dl.fetch_all(items, out, mirror=mirror, manifest=out / "manifest.tsv", **FAST)
    assert [(r["origin"], r["downloaded"]) for r in records] == [("mirror", True)] * 2
    assert (out / "data" / "blob.bin").read_bytes() == (site / "data" / "blob.bin").read_bytes()
    assert server.count(method=None) == 0
    assert len(mf.read_manifest(out / "manifest.tsv")) == 2


def test_mirror_falls_back_to_network_and_rejects_bad_copies(archive, site, tmp_path):
    base, server = archive(site)
    mirror = tmp_path / "mirror"
    (mirror / "data").mkdir(parents=True)
    (mirror / "data" / "table.tsv.gz").write_bytes(b"\x1f\x8b not really gzip")
    out = tmp_path / "out"
    rec = dl.fetch_all([{"url": base + "data/blob.bin", "filename": "data/blob.bin"}], out, mirror=mirror, **FAST)
    assert rec[0]["origin"] == "network" and server.count("data/blob.bin") == 1
    with pytest.raises(dl.DownloadError, match="corrupt gzip") as err:
        dl.fetch_all([{"url": base + "data/table.tsv.gz", "filename": "data/table.tsv.gz"}], out, mirror=mirror, **FAST)
    assert str(mirror / "data" / "table.tsv.gz") in str(err.value)
    assert _leftovers(out / "data" / "table.tsv.gz") == []
    assert server.count("data/table.tsv.gz") == 0


# --------------------------------------------------------------------------- progress and server


def test_progress_is_logged_for_long_downloads(archive, site, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(_http, "PROGRESS_AFTER", 0.0)  # every download counts as long
    base, _ = archive(site)
    with caplog.at_level(logging.INFO, logger="milkcells.download"):
        dl.fetch(base + "data/blob.bin", tmp_path / "blob.bin", chunk_size=1000, backoff=0.01)
    assert any("(100 %)" in r.getMessage() for r in caplog.records)
    assert any(r.getMessage().startswith("downloaded ") for r in caplog.records)


def test_archive_server_range_head_and_shutdown(site):
    with serve(site) as (base, server), requests.Session() as s:
        assert base.startswith("http://127.0.0.1:") and server.host == "127.0.0.1"
        data = (site / "data" / "blob.bin").read_bytes()
        r = s.get(base + "data/blob.bin", headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == data[10:20]
        assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        r = s.get(base + "data/blob.bin", headers={"Range": "bytes=-5"})
        assert r.content == data[-5:]
        r = s.get(base + "data/blob.bin", headers={"Range": f"bytes={len(data)}-"})
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
        r = s.head(base + "data/blob.bin")
        assert r.status_code == 200 and not r.content
        assert int(r.headers["Content-Length"]) == len(data)
        assert s.get(base + "../../etc/passwd").status_code == 404
        assert server.count("data/blob.bin") == 3
        assert server.count("data/blob.bin", method=None) == 4
        assert server.running
    assert not server.running
    with pytest.raises(requests.ConnectionError):
        requests.get(base + "data/blob.bin", timeout=1)


def test_no_network_guard_blocks_other_hosts():
    with pytest.raises(AssertionError, match="only the loopback"):
        socket.getaddrinfo("example.org", 80)
    with socket.socket() as s, pytest.raises(AssertionError, match="only the loopback"):
        s.connect(("192.0.2.1", 80))
