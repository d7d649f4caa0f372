"""scripts/compare_outputs.py: the before/after check of a change that should not change results."""

import importlib.util

import anndata as ad
import numpy as np
import pandas as pd

from .conftest import REPO

spec = importlib.util.spec_from_file_location("compare_outputs", REPO / "scripts" / "compare_outputs.py")
compare_outputs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_outputs)


def _outputs(root, *, column="source", extra=None, value=1.0):
    (root / "tables").mkdir(parents=True)
    pd.DataFrame({"sample": ["A", "B"], column: ["milk", "tissue"], "n": [value, 2.0]}).to_csv(
        root / "tables" / "composition.tsv", sep="\t", index=False
    )
    if extra:
        pd.DataFrame({"x": [1]}).to_csv(root / "tables" / extra, sep="\t", index=False)
    obs = pd.DataFrame({column: ["milk", "tissue"]}, index=["c1", "c2"])
    ad.AnnData(np.eye(2, dtype=np.float32), obs=obs).write_h5ad(root / "annotated.h5ad")
    return root


def test_equal_outputs_pass_and_a_changed_number_fails(tmp_path, capsys):
    before = _outputs(tmp_path / "before")
    assert compare_outputs.main([str(before), str(_outputs(tmp_path / "same"))]) == 0
    assert compare_outputs.main([str(before), str(_outputs(tmp_path / "changed", value=1.1))]) == 1
    assert "n: numbers differ" in capsys.readouterr().out


def test_a_declared_rename_and_new_output_pass_and_nothing_else(tmp_path, capsys):
    before = _outputs(tmp_path / "before")
    after = _outputs(tmp_path / "after", column="sample_type", extra="cell_type_calls.tsv")
    args = [str(before), str(after)]
    assert compare_outputs.main(args) == 1  # undeclared: the column and the table differ
    out = capsys.readouterr().out
    assert "columns differ" in out and "in after only" in out
    declared = args + ["--rename", "source=sample_type", "--new", "tables/cell_type_calls.tsv"]
    assert compare_outputs.main(declared) == 0
    assert "new     tables/cell_type_calls.tsv" in capsys.readouterr().out
    # a rename the before does not hold is a difference, not a pass
    assert compare_outputs.main(declared + ["--rename", "donor=donor_id"]) == 1
    assert "no column 'donor' to rename" in capsys.readouterr().out
