"""benchmarks/scale.py runs end to end at a small size and writes its tables and plot (not timed)."""

import subprocess
import sys

import pandas as pd
import pytest

from .conftest import REPO

pytestmark = pytest.mark.workflow


def test_scale_benchmark_small(tmp_path):
    # the CI size: the benchmark's smallest, 10,000 cells in 12 samples, 20,000 genes (a few minutes)
    cmd = [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--sizes", "10000", "--cores", "2",
           "--workdir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    table = pd.read_csv(tmp_path / "scale.tsv", sep="\t")
    assert len(table) == 1 and table["cells"].iloc[0] == 10_000
    for col in ("milkcells_wall_s", "milkcells_peak_gb", "plain_wall_s", "plain_peak_gb", "ratio",
                "compartment_accuracy", "cell_type_macro_f1"):
        assert col in table and table[col].notna().all(), col
    rules = pd.read_csv(tmp_path / "scale_rules.tsv", sep="\t")
    assert {"doublets", "cluster", "subcluster"} <= set(rules["rule"])
    assert (tmp_path / "scale.png").stat().st_size > 0
    assert "ratio" in proc.stdout
