"""milkcells.manifest: URL lists and manifests."""

from __future__ import annotations

import pytest

from milkcells import InputError
from milkcells import manifest as mf


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
        mf.read_url_list(path)
    assert str(path) in str(err.value)


def test_read_url_list_missing_file(tmp_path):
    with pytest.raises(InputError, match="URL list not found"):
        mf.read_url_list(tmp_path / "nope.tsv")


def test_read_manifest_rejects_other_files(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match="unexpected header"):
        mf.read_manifest(path)
