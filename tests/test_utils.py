import os
import stat

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from milkcells._utils import InputError, atomic_path
from milkcells.storage import write_h5ad, write_table


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "table.tsv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_input_error_message():
    e = InputError("bad", file="x.tsv", sample="S1", field="path", expected="a file")
    assert str(e) == "sample 'S1', file 'x.tsv', field 'path': bad (expected a file)"


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"])
def test_outputs_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    write_table(pd.DataFrame({"a": [1]}), tmp_path / "results" / "t.tsv")
    write_h5ad(ad.AnnData(np.ones((2, 2), dtype=np.float32)), tmp_path / "results" / "a.h5ad")
    with atomic_path(tmp_path / "results" / "f.txt") as tmp:
        tmp.write_text("x")
    for name in ("t.tsv", "a.h5ad", "f.txt"):
        assert stat.S_IMODE((tmp_path / "results" / name).stat().st_mode) == mode, name


def test_overwritten_output_follows_the_umask(tmp_path, umask):
    target = tmp_path / "t.tsv"
    target.write_text("old")
    target.chmod(0o600)
    umask(0o022)
    write_table(pd.DataFrame({"a": [1]}), target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
