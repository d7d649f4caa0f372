import pandas as pd
import pytest

from milkcells._utils import InputError, atomic_path, write_table


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "table.tsv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_write_table_atomic(tmp_path):
    target = tmp_path / "t.tsv"
    write_table(pd.DataFrame({"a": [1, 2]}), target)
    assert target.read_text().splitlines() == ["a", "1", "2"]
    assert [p.name for p in tmp_path.iterdir()] == ["t.tsv"]


def test_input_error_message():
    e = InputError("bad", file="x.tsv", sample="S1", field="path", expected="a file")
    assert str(e) == "sample 'S1', file 'x.tsv', field 'path': bad (expected a file)"
