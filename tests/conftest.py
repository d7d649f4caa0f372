from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from milkcells import demo
from milkcells.genes import is_mitochondrial

REPO = Path(__file__).resolve().parents[1]

# the local archive's fixtures (`archive`, `no_network`) for every test module
pytest_plugins = ["tests.archive_server"]
# the project's shared reference data sit beside the clone; MILKCELLS_SHARED_DATA overrides
SHARED = Path(os.environ.get("MILKCELLS_SHARED_DATA", REPO.parent / "shared" / "data"))
TUMOUR = SHARED / "breast_tumour_copykat_302"


@pytest.fixture(scope="session")
def raw_sample():
    """One simulated raw-droplet sample (seeded)."""
    a = demo.simulate_milk_sample("T1_d005", donor="D1", days_postpartum=5, n_cells=400, n_empty=2000, n_genes=800)
    a.var["mt"] = is_mitochondrial(a.var_names)
    a.obs["sample"] = "T1_d005"
    return a


@pytest.fixture(scope="session")
def called_sample(raw_sample):
    from milkcells import cellcalling

    return cellcalling.call_cells(raw_sample)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def needs_shared(path: Path = TUMOUR):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is absent (no ../shared)")


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1500) -> subprocess.CompletedProcess:
    """Run the repository's workflow in ``workdir`` with the interpreter running the tests."""
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))
    env.setdefault("MPLCONFIGDIR", str(REPO / ".cache" / "matplotlib"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The workflow run end to end on the tiny simulated demo (.test/)."""
    wd = tmp_path_factory.mktemp("tiny_run")
    shutil.copy(REPO / ".test" / "samples.tsv", wd / "samples.tsv")
    proc = run_snakemake(
        wd,
        "--cores",
        "2",
        "--configfile",
        str(REPO / ".test" / "config.yaml"),
        "--config",
        "samples=samples.tsv",
        "outdir=out",
    )
    return wd, proc
