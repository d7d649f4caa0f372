"""Build .test/archive/mirror: a small folder laid out like the BioStudies file tree.

The SDRFs of three Twigger-style accessions (tests/data/sources) and, for the four milk samples
they name, SIMULATED raw droplets (milkcells.demo) as 10x MTX files in the Twigger naming,
two of them gzipped. ``.test/archive/config.yaml`` runs the workflow offline from it::

    .venv/bin/python .test/archive/make_mirror.py          # once; the files are committed
    .venv/bin/snakemake --cores 2 --configfile .test/archive/config.yaml
"""

import shutil
from pathlib import Path

from milkcells import demo, io

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parents[1] / "tests" / "data" / "sources"
ACCESSIONS = {
    "E-MTAB-9841": "twigger_batch1_like.sdrf.txt",
    "E-MTAB-10855": "twigger_batch2_like.sdrf.txt",
    "E-MTAB-10885": "twigger_batch3_like.sdrf.txt",
}
#: sample: (accession, gzipped, days postpartum)
MILK = {
    "LMC1": ("E-MTAB-9841", False, 28),
    "LMC2": ("E-MTAB-9841", False, 10),
    "AD4": ("E-MTAB-10855", True, 30),
    "AE4": ("E-MTAB-10855", True, 120),
}


def files_dir(root: Path, accession: str) -> Path:
    """An accession's Files folder below the BioStudies base URL."""
    return root / "E-MTAB-" / accession[-3:] / accession / "Files"


def build(root: Path) -> Path:
    """Write the mirror under ``root`` (replacing it)."""
    if root.exists():
        shutil.rmtree(root)
    for acc, sdrf in ACCESSIONS.items():
        d = files_dir(root, acc)
        d.mkdir(parents=True)
        shutil.copy(FIXTURES / sdrf, d / f"{acc}.sdrf.txt")
    for sample, (acc, gz, days) in MILK.items():
        raw = demo.simulate_milk_sample(
            sample, donor=sample, days_postpartum=days, n_cells=200, n_empty=800, n_genes=700
        )
        io.write_10x_mtx(raw, files_dir(root, acc), prefix=f"{sample}_", gzip=gz)
    return root


if __name__ == "__main__":
    print(build(HERE / "mirror"))
