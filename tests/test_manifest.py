"""milkcells.manifest: manifests (the URL lists are tested with milkcells.archives.urls)."""

from __future__ import annotations

import pytest

from milkcells import InputError
from milkcells import manifest as mf


def test_read_manifest_rejects_other_files(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match="unexpected header"):
        mf.read_manifest(path)
