"""milkcells.samplesheet: reading a sample sheet, checked against its schema."""

import warnings

import pytest

from milkcells import InputError, MilkcellsWarning
from milkcells.samplesheet import read_sample_sheet


def _sheet(tmp_path, text, name="samples.tsv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_sample_sheet_defaults(tmp_path):
    p = _sheet(tmp_path, "sample\tpath\textra\nA1\ta.h5ad\tx\nB-2\tb.h5ad\ty\n")
    with pytest.warns(MilkcellsWarning, match="'extra'"):
        df = read_sample_sheet(p)
    assert list(df.index) == ["A1", "B-2"]
    assert list(df["donor"]) == ["A1", "B-2"] and list(df["batch"]) == ["A1", "B-2"]
    assert set(df["sample_type"]) == {"milk"}
    assert df["days_postpartum"].isna().all()
    assert list(df["extra"]) == ["x", "y"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("sample\tfile\nA\ta\n", "missing column 'path'"),
        ("sample\tpath\n", "lists no samples"),
        ("sample\tpath\nA\ta\nA\tb\n", "duplicated sample names"),
        ("sample\tpath\n\ta\n", "empty sample name on line 2"),
        ("sample\tpath\nA\t\n", "empty path"),
        ("sample\tpath\tdays_postpartum\nA\ta\tthree\n", "days_postpartum 'three' is not a number"),
        ("sample\tpath\tsample_type\nA\ta\tblood\n", "unknown sample_type 'blood' on line 2"),
        ("sample\tpath\nA B\ta\n", "unsupported characters"),
        ("sample\tpath\tdays_post_partum\nA\ta\t5\n", "did you mean 'days_postpartum'"),
        ("sample\tpath\tDonor\nA\ta\tD1\n", "did you mean 'donor'"),
    ],
)
def test_sample_sheet_errors_name_file_and_field(tmp_path, text, needle):
    p = _sheet(tmp_path, text)
    with pytest.raises(InputError, match=needle) as e:
        read_sample_sheet(p)
    assert str(p) in str(e.value)


def test_sample_sheet_missing_file(tmp_path):
    with pytest.raises(InputError, match="sample sheet not found"):
        read_sample_sheet(tmp_path / "nope.tsv")


def test_sample_sheet_hash_inside_a_path_is_kept(tmp_path):
    p = _sheet(
        tmp_path,
        "# a comment line\n"
        "sample\tpath\tdonor\n"
        "  # an indented comment line\n"
        "A\tdata/run#2/m.h5ad\tD#1\n"
        "\n"
        "B\tdata/run3/m.h5ad\tD2\n",
    )
    df = read_sample_sheet(p)
    assert list(df.index) == ["A", "B"]
    assert df.loc["A", "path"] == "data/run#2/m.h5ad"
    assert df.loc["A", "donor"] == "D#1"


def test_sample_sheet_line_numbers_count_comment_lines(tmp_path):
    p = _sheet(tmp_path, "sample\tpath\n# skipped\nA\ta\nB\t\n")
    with pytest.raises(InputError, match="empty path on line 4") as e:
        read_sample_sheet(p)
    assert e.value.sample == "B" and e.value.field == "path"


def test_sample_names_differing_only_in_case_rejected(tmp_path):
    p = _sheet(tmp_path, "sample\tpath\nLMC1\ta.h5ad\nother\tb.h5ad\nlmc1\tc.h5ad\n")
    with pytest.raises(InputError, match="differ only in letter case") as e:
        read_sample_sheet(p)
    assert e.value.file == str(p) and e.value.field == "sample" and e.value.sample == "LMC1"
    assert "'lmc1'" in str(e.value) and "'other'" not in str(e.value)


def test_two_samples_on_one_file_warn(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.h5ad").write_text("x")
    (tmp_path / "data" / "link.h5ad").symlink_to(tmp_path / "data" / "a.h5ad")
    p = _sheet(tmp_path, "sample\tpath\nA\tdata/a.h5ad\nB\t./data/a.h5ad\nC\tdata/link.h5ad\nD\tdata/d.h5ad\n")
    with pytest.warns(MilkcellsWarning, match="samples \\['A', 'B', 'C'\\] all point at") as rec:
        df = read_sample_sheet(p)
    assert len(df) == 4
    msg = str(rec[0].message)
    assert str(p) in msg and "'path'" in msg and "'D'" not in msg


def test_distinct_paths_do_not_warn(tmp_path):
    p = _sheet(tmp_path, "sample\tpath\nA\tdata/a.h5ad\nB\tdata/b.h5ad\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_sample_sheet(p)


def test_inputs_checked_once_with_the_schema_message(tmp_path):
    (tmp_path / "a.h5ad").write_text("x")
    demo = "resources/demo/simulated_C.h5ad"
    p = _sheet(tmp_path, f"sample\tpath\nA\t{tmp_path / 'a.h5ad'}\nB\tmissing_dir\nC\t{demo}\n")
    assert len(read_sample_sheet(p)) == 3  # not checked unless asked
    with pytest.raises(InputError, match="input not found") as e:
        read_sample_sheet(p, check_paths=True)
    assert (e.value.sample, e.value.file, e.value.field) == ("B", "missing_dir", "path")
    assert "sample 'B'" in str(e.value) and "missing_dir" in str(e.value) and str(p) in e.value.expected
    df = read_sample_sheet(p, check_paths=True, made_later=lambda path: path in ("missing_dir", demo))
    assert list(df.index) == ["A", "B", "C"]


def test_negative_days_and_schema_messages(tmp_path):
    p = _sheet(tmp_path, "sample\tpath\tdays_postpartum\tsample_type\nA\ta\t3.5\ttissue\nB\tb\t-2\t\n")
    with pytest.raises(InputError, match="days_postpartum is negative") as e:
        read_sample_sheet(p)
    assert e.value.sample == "B" and e.value.field == "days_postpartum" and "number of days" in e.value.expected
    p = _sheet(tmp_path, "sample\tpath\tdays_postpartum\tsample_type\nA\ta\t3.5\ttissue\nB\tb\t\t\n")
    df = read_sample_sheet(p)
    assert df["days_postpartum"].iloc[0] == 3.5 and df["sample_type"].tolist() == ["tissue", "milk"]


def test_former_column_name_is_read_with_a_warning(tmp_path):
    # sheets written before the rename (column `source`) still work: read as sample_type, checked as it
    p = _sheet(tmp_path, "sample\tpath\tsource\nA\ta\ttissue\nB\tb\t\n")
    with pytest.warns(MilkcellsWarning, match="column 'source' is now called 'sample_type'"):
        df = read_sample_sheet(p)
    assert df["sample_type"].tolist() == ["tissue", "milk"] and "source" not in df.columns
    p = _sheet(tmp_path, "sample\tpath\tsource\nA\ta\tblood\n")
    with pytest.warns(MilkcellsWarning), pytest.raises(InputError, match="unknown sample_type 'blood' on line 2"):
        read_sample_sheet(p)


def test_every_message_of_the_schema_belongs_to_a_rule_of_its_column():
    from milkcells.samplesheet import SAMPLE_SHEET_COLUMNS, SAMPLES_SCHEMA

    for col, spec in SAMPLES_SCHEMA["properties"].items():
        for rule in spec.get("errors", {}):
            assert rule in spec or rule == "exists", (col, rule)
    assert SAMPLE_SHEET_COLUMNS["required"] == ("sample", "path")
