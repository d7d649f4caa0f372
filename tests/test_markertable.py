import pytest

from milkcells import InputError, markertable


def test_shipped_marker_table():
    t = markertable.load_marker_table()
    assert set(t["level"]) == {"compartment", "cell_type"}
    assert set(t.loc[t["level"] == "compartment", "compartment"]) == set(markertable.COMPARTMENTS)
    assert t["ontology_id"].str.match(r"^CL:\d{7}$").all()
    assert (t["citation"].str.len() > 0).all()
    ambient = set(markertable.curated_ambient_genes())
    comp_genes = {g for row in t.loc[t["level"] == "compartment", "positive"] for e in row for g in e.split("|")}
    assert not comp_genes & ambient, "ambient milk transcripts must not be compartment markers"
    expected = {
        "LC1",
        "LC2",
        "luminal progenitor",
        "basal",
        "macrophage",
        "T cell",
        "B cell",
        "neutrophil",
        "dendritic cell",
        "fibroblast",
        "endothelial",
    }
    assert expected <= set(t["cell_type"])


def test_user_marker_table_errors(tmp_path):
    p = tmp_path / "m.tsv"
    p.write_text("level\tcompartment\tcell_type\nclusterish\tepithelial\tX\n")
    with pytest.raises(InputError, match="missing columns \\['positive'\\]"):
        markertable.load_marker_table(p)
    p.write_text("level\tcompartment\tcell_type\tpositive\ncell_type\tglia\tX\tA,B\n")
    with pytest.raises(InputError, match="unknown compartment"):
        markertable.load_marker_table(p)
    p.write_text("level\tcompartment\tcell_type\tpositive\ncell_type\timmune\tX\t\n")
    with pytest.raises(InputError, match="no positive markers"):
        markertable.load_marker_table(p)
    with pytest.raises(InputError, match="not found"):
        markertable.load_marker_table(tmp_path / "absent.tsv")


def test_alias_resolution():
    assert markertable._resolve(["CXCL8|IL8", "X|Y"], {"IL8", "Y"}, set()) == ["IL8", "Y"]
    assert markertable._resolve(["CXCL8|IL8"], {"CXCL8", "IL8"}, set()) == ["CXCL8"]


def test_former_citation_column_is_read(tmp_path):
    # a user's table written before the rename (column `source`) gives the same rows
    path = tmp_path / "old.tsv"
    path.write_text(
        "level\tcompartment\tcell_type\tpositive\tsource\n"
        "compartment\timmune\t\tPTPRC,CD53\tmy lab\n"
        "cell_type\timmune\tT cell\tCD3E,CD3D\tDoe 2020\n"
    )
    t = markertable.load_marker_table(path)
    assert t["citation"].tolist() == ["my lab", "Doe 2020"] and "source" not in t.columns
