"""The workflow pulls a public dataset from a local stand-in of each archive.

A server on 127.0.0.1 serves a fixture mirror laid out like the BioStudies file
tree (the SDRFs of three Twigger-style accessions plus small per-sample MTX
files in the Twigger naming, simulated droplets), with injected faults. The real
workflow runs against it through the config's base URL. The other archives
(CELLxGENE's curation API on the same kind of server, a Single Cell Portal
export on disk, a URL list) are pulled by the workflow's checkpoint alone, and
the rest of the run is planned (dry run).

The BioStudies stand-in is `.test/archive/mirror` (the workflow catalog's test layout; its config
`.test/archive/config.yaml` runs the same data offline).
"""

import gzip
import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from milkcells import demo, io
from milkcells.samplesheet import read_sample_sheet

from .archive_server import Fault, serve
from .conftest import REPO, run_snakemake
from .test_archives_cellxgene import DID, serve_curation_api, write_cxg_h5ad

pytestmark = pytest.mark.workflow

FIXTURES = Path(__file__).parent / "data" / "sources"
TEST_DIR = REPO / ".test" / "archive"
MILK = {
    "LMC1": ("E-MTAB-9841", False, 28),
    "LMC2": ("E-MTAB-9841", False, 10),
    "AD4": ("E-MTAB-10855", True, 30),
    "AE4": ("E-MTAB-10855", True, 120),
}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A copy of .test/archive/mirror (the SDRFs and simulated MTX files of four milk samples)."""
    return shutil.copytree(TEST_DIR / "mirror", tmp_path_factory.mktemp("biostudies") / "mirror")


def files_dir(root: Path, acc: str) -> Path:
    return root / "E-MTAB-" / acc[-3:] / acc / "Files"


def _text(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def test_the_committed_mirror_is_what_its_script_builds(tmp_path):
    spec = importlib.util.spec_from_file_location("make_mirror", TEST_DIR / "make_mirror.py")
    make_mirror = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_mirror)
    assert make_mirror.MILK == MILK
    built = make_mirror.build(tmp_path / "mirror")
    files = sorted(p.relative_to(built) for p in built.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(TEST_DIR / "mirror") for p in (TEST_DIR / "mirror").rglob("*") if p.is_file())
    for rel in files:
        assert _text(built / rel) == _text(TEST_DIR / "mirror" / rel), rel


def write_config(wd: Path, base_url: str, name: str = "twigger") -> Path:
    """.test/archive/config.yaml, downloading from ``base_url`` into ``wd`` instead of reading its mirror."""
    cfg = yaml.safe_load((TEST_DIR / "config.yaml").read_text())
    cfg.update(outdir="out")
    cfg["dataset"].update(name=name, download_dir=str(wd / "resources"), mirror=None, backoff=0.01, retries=3)
    cfg["dataset"]["biostudies"]["base_url"] = base_url
    path = wd / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_pulls_and_analyses_the_archive(tmp_path, mirror):
    lmc1 = "E-MTAB-/841/E-MTAB-9841/Files/LMC1_matrix.mtx"
    ad4 = "E-MTAB-/855/E-MTAB-10855/Files/AD4_matrix.mtx.gz"
    faults = {lmc1: Fault.error(500, times=2), ad4: Fault.drop(after=3000, times=1)}
    with serve(mirror, faults=faults) as (base_url, server):
        cfg = write_config(tmp_path, base_url)
        run_snakemake(tmp_path, "--cores", "2", "--configfile", str(cfg))
        assert server.count(lmc1) == 3  # two 500s, then success
        ranges = [r.range for r in server.requests_for(ad4)]
        assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
        n_get = server.count()

        ds = tmp_path / "resources" / "twigger"
        sheet = read_sample_sheet(ds / "samples.tsv")
        assert sorted(sheet.index) == sorted(MILK)  # tissue skipped; LMC9 (molecule_info only) left out
        assert set(sheet["batch"]) == {"E-MTAB-9841", "E-MTAB-10855"}
        assert sheet.loc["LMC1", "days_postpartum"] == 28
        for sample, (acc, _gz, _d) in MILK.items():
            for f in files_dir(mirror, acc).glob(f"{sample}_*"):
                assert (ds / "raw" / sample / f.name).read_bytes() == f.read_bytes()
        assert not list(ds.rglob("*.part"))
        manifest = pd.read_csv(ds / "manifest.tsv", sep="\t")
        assert len(manifest) == 3 + 4 * 3 and manifest["sha256"].str.len().eq(64).all()
        assert "molecule_info" in (ds / "prepare_dataset.log").read_text()

        out = tmp_path / "out"
        assert (out / "annotated.h5ad").is_file() and (out / "compartments" / "immune.h5ad").is_file()
        qcs = pd.read_csv(out / "tables" / "qc_summary.tsv", sep="\t")
        assert set(qcs["sample"]) == set(MILK) and (qcs["input_type"] == "raw").all()

        # a second run downloads nothing and has nothing to do
        proc = run_snakemake(tmp_path, "--cores", "2", "--configfile", str(cfg))
        assert "Nothing to be done" in proc.stdout + proc.stderr
        assert server.count() == n_get
        # even re-preparing the dataset finds every file in place
        (ds / "samples.tsv").unlink()
        run_snakemake(tmp_path, str(ds / "samples.tsv"), "--cores", "1", "--configfile", str(cfg))
        assert server.count() == n_get


def test_offline_from_a_mirror_folder(tmp_path, mirror):
    cfg = write_config(tmp_path, "http://127.0.0.1:9/")  # nothing listens there
    data = yaml.safe_load(cfg.read_text())
    data["dataset"]["mirror"] = str(mirror)
    cfg.write_text(yaml.safe_dump(data))
    target = tmp_path / "resources" / "twigger" / "samples.tsv"
    run_snakemake(tmp_path, str(target), "--cores", "1", "--configfile", str(cfg))
    assert sorted(read_sample_sheet(target).index) == sorted(MILK)


@pytest.mark.parametrize(
    ("fault", "needle"),
    [(Fault.not_found(), "404"), (Fault.truncated(2000), "gzip")],
    ids=["404", "truncated-gzip"],
)
def test_download_failures_leave_nothing_finished(tmp_path, mirror, fault, needle):
    path = "E-MTAB-/855/E-MTAB-10855/Files/AE4_matrix.mtx.gz"
    with serve(mirror, faults={path: fault}) as (base_url, _server):
        cfg = write_config(tmp_path, base_url)
        proc = run_snakemake(tmp_path, "--cores", "1", "--configfile", str(cfg), check=False)
    assert proc.returncode != 0
    ds = tmp_path / "resources" / "twigger"
    log = (ds / "prepare_dataset.log").read_text()
    assert "AE4_matrix.mtx.gz" in log and needle in log
    assert not (ds / "samples.tsv").exists()
    assert not (ds / "raw" / "AE4" / "AE4_matrix.mtx.gz").exists()
    assert not list(ds.rglob("*.part"))
    assert not (tmp_path / "out").exists() or not (tmp_path / "out" / "annotated.h5ad").exists()


def write_archive_config(wd: Path, archive: str, settings: dict) -> Path:
    cfg = {
        "outdir": "out",
        "dataset": {
            "archive": archive,
            "name": archive,
            "download_dir": str(wd / "resources"),
            "backoff": 0.01,
            "retries": 1,
            archive: settings,
        },
    }
    path = wd / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def prepare_through_the_workflow(wd: Path, cfg: Path, archive: str) -> tuple[pd.DataFrame, str]:
    """Run the checkpoint prepare_dataset alone, then dry-run the rest: (the sheet, the dry run's output)."""
    target = wd / "resources" / archive / "samples.tsv"
    run_snakemake(wd, str(target), "--cores", "1", "--configfile", str(cfg))
    dry = run_snakemake(wd, "-n", "--cores", "1", "--configfile", str(cfg))
    return read_sample_sheet(target), dry.stdout + dry.stderr


def test_cellxgene_through_the_workflow(tmp_path):
    path, _counts, obs = write_cxg_h5ad(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    with serve(site) as (base, server):
        api_url = serve_curation_api(site, path, base)
        cfg = write_archive_config(
            tmp_path, "cellxgene", {"dataset_id": DID, "api_url": api_url, "obs_filter": {"tissue": "milk"}}
        )
        sheet, dry = prepare_through_the_workflow(tmp_path, cfg, "cellxgene")
        assert server.count() == 2
    milk = obs["tissue"] == "milk"
    assert sorted(sheet.index) == sorted(set(obs.loc[milk, "donor_id"]))  # samples: the donors by default
    assert "agreement" in dry  # CELLxGENE carries the authors' labels: compared with the calls


def test_scp_through_the_workflow(tmp_path):
    cfg = write_archive_config(
        tmp_path,
        "scp",
        {"counts": str(FIXTURES / "scp_raw_counts.txt.gz"), "metadata": str(FIXTURES / "scp_metadata.csv")},
    )
    sheet, dry = prepare_through_the_workflow(tmp_path, cfg, "scp")
    assert sheet.loc["BM02_6wkpp_r1", "days_postpartum"] == 42 and len(sheet) >= 2
    assert "agreement" in dry


def test_url_list_through_the_workflow(tmp_path):
    site = tmp_path / "site"
    raw = demo.simulate_milk_sample("U1", donor="D1", days_postpartum=7, n_cells=50, n_empty=100, n_genes=400)
    io.write_10x_mtx(raw, site / "U1", prefix="U1_")
    with serve(site) as (base, server):
        rows = [{"url": f"{base}U1/{f.name}", "sample": "U1", "donor": "D1"} for f in sorted((site / "U1").iterdir())]
        pd.DataFrame(rows).to_csv(tmp_path / "urls.tsv", sep="\t", index=False)
        cfg = write_archive_config(tmp_path, "urls", {"url_list": str(tmp_path / "urls.tsv")})
        sheet, dry = prepare_through_the_workflow(tmp_path, cfg, "urls")
        assert server.count() == 3
    assert list(sheet.index) == ["U1"] and sheet.loc["U1", "donor"] == "D1"
    assert "agreement" not in dry  # a URL list carries no labels
