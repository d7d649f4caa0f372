"""benchmarks/scale.py runs end to end at a small size and writes its tables and plot (not timed)."""

import subprocess
import sys

import pandas as pd
import pytest

from .conftest import REPO

pytestmark = pytest.mark.workflow


def test_scale_benchmark_small(tmp_path):
    # the CI size: the benchmark's smallest, 10,000 cells in 12 samples, 20,000 genes (a few minutes)
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "scale.py"),
        "--sizes",
        "10000",
        "--cores",
        "2",
        "--workdir",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    table = pd.read_csv(tmp_path / "scale.tsv", sep="\t")
    assert len(table) == 1 and table["cells"].iloc[0] == 10_000
    for col in (
        "milkcells_wall_s",
        "milkcells_peak_gb",
        "plain_wall_s",
        "plain_peak_gb",
        "ratio",
        "compartment_accuracy",
        "cell_type_macro_f1",
    ):
        assert col in table and table[col].notna().all(), col
    rules = pd.read_csv(tmp_path / "scale_rules.tsv", sep="\t")
    assert {"qc", "cluster", "subcluster"} <= set(rules["rule"])
    # the inputs of these rules are temp() files, gone at the end: their sizes are those seen during the run
    sizes = rules.set_index("rule")["input_mb"]
    assert (sizes[["qc", "cluster", "subcluster", "preprocess"]] > 0).all(), sizes.to_dict()
    assert (tmp_path / "scale.png").stat().st_size > 0
    assert "ratio" in proc.stdout


def test_memory_cap_stops_the_process_tree(tmp_path):
    """A run passing the cap is killed and reported as capped (how the 250,000-cell plain script is
    stopped before the kernel's OOM killer would choose a victim)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import scale
    finally:
        sys.path.pop(0)
    grow = "import time\nx = []\nfor _ in range(60):\n    x.append(bytearray(50_000_000))\n    time.sleep(0.05)\n"
    m = scale.run_measured(
        [sys.executable, "-c", grow],
        cwd=tmp_path,
        log=tmp_path / "log",
        env=None,
        mem_cap_gb=0.5,
        watch=[tmp_path / "log"],
    )
    assert m["capped"] and m["returncode"] != 0
    assert 0.5 < m["peak_rss_gb"] < 1.5
    assert tmp_path / "log" in m["sizes"]
    ok = scale.run_measured(
        [sys.executable, "-c", "pass"], cwd=tmp_path, log=tmp_path / "log2", env=None, mem_cap_gb=4.0
    )
    assert not ok["capped"] and ok["returncode"] == 0
