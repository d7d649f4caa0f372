"""milkcells.archives.cellxgene: the curation API, reading the h5ad, and the archive end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from milkcells import InputError, io
from milkcells.archives import cellxgene
from milkcells.samplesheet import read_sample_sheet

from .archive_server import serve

DATA = Path(__file__).parent / "data" / "sources"
SCP_META = DATA / "scp_metadata.csv"
DID = "0b4c3c8e-1234-4cde-9f00-abcdefabcdef"
CID = "fedcba98-7654-3210-fedc-ba9876543210"


def test_cellxgene_dataset_url():
    assert cellxgene.cellxgene_dataset_url(DID) == (
        f"https://api.cellxgene.cziscience.com/curation/v1/datasets/{DID}/versions"
    )
    assert cellxgene.cellxgene_dataset_url(
        DID.upper(), api_url="https://api.example.org/curation/", collection_id=CID
    ) == (f"https://api.example.org/curation/v1/collections/{CID}/datasets/{DID}")
    with pytest.raises(InputError, match="not a UUID") as e:
        cellxgene.cellxgene_dataset_url("lactocytes")
    assert e.value.field == "dataset_id"
    with pytest.raises(InputError, match="not a URL"):
        cellxgene.cellxgene_dataset_url(DID, api_url="api.cellxgene.cziscience.com")


def _asset(filetype, url):
    return {"filetype": filetype, "url": url, "filesize": 123}


def test_cellxgene_h5ad_url_shapes():
    h5ad = f"https://datasets.cellxgene.cziscience.com/{DID}.h5ad"
    dataset = {"dataset_id": DID, "assets": [_asset("RDS", h5ad[:-4] + "rds"), _asset("H5AD", h5ad)]}
    assert cellxgene.cellxgene_h5ad_url(dataset) == h5ad
    older = {"dataset_id": DID, "assets": [_asset("H5AD", "https://old/x.h5ad")]}
    versions = [dict(dataset), older]
    assert cellxgene.cellxgene_h5ad_url(versions) == h5ad  # newest first
    other = "11111111-2222-3333-4444-555555555555"
    collection = {
        "collection_id": CID,
        "datasets": [{"dataset_id": other, "assets": [_asset("H5AD", "https://x/other.h5ad")]}, dataset],
    }
    assert cellxgene.cellxgene_h5ad_url(collection, dataset_id=DID) == h5ad
    with pytest.raises(InputError, match="2 datasets in the document") as e:
        cellxgene.cellxgene_h5ad_url(collection)
    assert e.value.field == "dataset_id"
    with pytest.raises(InputError, match="no dataset 99999999"):
        cellxgene.cellxgene_h5ad_url(collection, dataset_id="99999999-2222-3333-4444-555555555555")
    msg = r"no H5AD asset with a URL \(asset types: \['RDS'\]\)"
    with pytest.raises(InputError, match=msg) as e:
        cellxgene.cellxgene_h5ad_url({"dataset_id": DID, "assets": [_asset("RDS", "https://x.rds")]})
    assert e.value.field == "assets"
    with pytest.raises(InputError, match="no 'assets'"):
        cellxgene.cellxgene_h5ad_url({"detail": "Not found", "status": 404})
    with pytest.raises(InputError, match="lists no dataset"):
        cellxgene.cellxgene_h5ad_url([])


@pytest.fixture
def cxg_h5ad(tmp_path):
    """:func:`write_cxg_h5ad` in the test's folder."""
    return write_cxg_h5ad(tmp_path)


def write_cxg_h5ad(folder: Path) -> tuple[Path, np.ndarray, pd.DataFrame]:
    """A tiny CELLxGENE-schema h5ad: raw counts in raw.X, normalised X, Ensembl var index."""
    rng = np.random.default_rng(7)
    n_cells = 16
    counts = rng.poisson(2.0, size=(n_cells, 6)).astype(np.float32)
    counts[:, 0] += 1  # no empty cell
    var = pd.DataFrame(
        {
            "feature_name": pd.Categorical(
                ["CSN2", "LALBA", "PTPRC", "MT-CO1", "CSN2", "ERCC-00002 (spike-in control)"]
            ),
            "feature_biotype": pd.Categorical(["gene"] * 5 + ["spike-in"]),
        },
        index=[
            "ENSG00000135222",
            "ENSG00000167531",
            "ENSG00000081237",
            "ENSG00000198804",
            "ENSG99999999999",
            "ERCC-00002",
        ],
    )
    obs = pd.DataFrame(
        {
            "tissue": pd.Categorical(["milk", "breast"] * 8),
            "cell_type": pd.Categorical(
                ["luminal epithelial cell of mammary gland", "macrophage", "T cell", "fibroblast"] * 4
            ),
            "author_cell_type": pd.Categorical(["LC2", "Macro", "T", "FB"] * 4),
            "donor_id": pd.Categorical([f"D{i % 3}" for i in range(n_cells)]),
            "sample_id": pd.Categorical([f"S{i % 4}" for i in range(n_cells)]),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    a = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=var)
    a.raw = a.copy()
    norm = counts / counts.sum(axis=1, keepdims=True) * 1e4
    a.X = sp.csr_matrix(np.log1p(norm).astype(np.float32))
    path = folder / "cxg.h5ad"
    a.write_h5ad(path)
    return path, counts, obs


def test_read_cellxgene_filter_raw_and_labels(cxg_h5ad):
    path, counts, obs = cxg_h5ad
    a = cellxgene.read_cellxgene(path, obs_filter={"tissue": "milk"})
    milk = (obs["tissue"] == "milk").to_numpy()
    assert a.obs_names.tolist() == obs.index[milk].tolist()
    # raw counts (not the normalised X), spike-in dropped
    np.testing.assert_array_equal(a.X.toarray(), counts[milk][:, :5])
    assert a.X.format == "csr" and a.X.dtype == np.float32
    assert a.var_names.tolist() == ["CSN2", "LALBA", "PTPRC", "MT-CO1", "CSN2-1"]
    assert a.var["gene_ids"].tolist()[:2] == ["ENSG00000135222", "ENSG00000167531"]
    assert a.var.loc["MT-CO1", "mt"]
    labels = obs.loc[milk, "cell_type"].astype(str).tolist()
    assert a.obs["author_label"].astype(str).tolist() == labels
    assert a.obs["donor"].astype(str).tolist() == obs.loc[milk, "donor_id"].astype(str).tolist()
    assert (a.obs["sample"] == a.obs["donor"]).all() and set(a.obs["sample_type"]) == {"milk"}
    assert list(a.obs["tissue"].cat.categories) == ["milk"]
    assert a.obs["days_postpartum"].isna().all()
    assert a.uns["milkcells"]["ingest"]["params"]["counts_from"] == "raw.X"


def test_read_cellxgene_list_filter_label_and_sample_columns(cxg_h5ad):
    path, counts, obs = cxg_h5ad
    a = cellxgene.read_cellxgene(
        path,
        obs_filter={"tissue": ["milk", "breast milk"], "donor_id": ["D0", "D1"]},
        label_column="author_cell_type",
        sample_column="sample_id",
    )
    keep = ((obs["tissue"] == "milk") & obs["donor_id"].isin(["D0", "D1"])).to_numpy()
    assert a.n_obs == keep.sum()
    assert set(a.obs["author_label"].astype(str)) <= {"LC2", "T"}
    assert a.obs["sample"].astype(str).tolist() == obs.loc[keep, "sample_id"].astype(str).tolist()
    everything = cellxgene.read_cellxgene(path)
    assert everything.n_obs == len(obs) and set(everything.obs["sample_type"]) == {"milk", "tissue"}


def test_read_cellxgene_counts_in_x_without_raw(cxg_h5ad, tmp_path):
    path, counts, _ = cxg_h5ad
    a = ad.read_h5ad(path)
    b = a.raw.to_adata()
    b.write_h5ad(tmp_path / "noraw.h5ad")
    c = cellxgene.read_cellxgene(tmp_path / "noraw.h5ad")
    np.testing.assert_array_equal(c.X.toarray(), counts[:, :5])
    assert c.uns["milkcells"]["ingest"]["params"]["counts_from"] == "X"
    a.raw = None  # only the normalised matrix left
    a.write_h5ad(tmp_path / "norm.h5ad")
    with pytest.raises(InputError, match="not integers") as e:
        cellxgene.read_cellxgene(tmp_path / "norm.h5ad")
    assert e.value.field == "X" and e.value.expected == "raw integer UMI counts"


def test_read_cellxgene_errors(cxg_h5ad, tmp_path):
    path, _, _ = cxg_h5ad
    with pytest.raises(InputError, match="unknown column 'organ'") as e:
        cellxgene.read_cellxgene(path, obs_filter={"organ": "milk"})
    assert e.value.field == "organ" and e.value.file == str(path)
    msg = r"no cell has tissue in \['blood'\]; values present: \['breast', 'milk'\]"
    with pytest.raises(InputError, match=msg):
        cellxgene.read_cellxgene(path, obs_filter={"tissue": "blood"})
    with pytest.raises(InputError, match="selects no cell"):
        cellxgene.read_cellxgene(path, obs_filter={"tissue": "milk", "cell_type": "macrophage"})
    with pytest.raises(InputError, match="no obs column 'authors'"):
        cellxgene.read_cellxgene(path, label_column="authors")
    with pytest.raises(InputError, match="not found"):
        cellxgene.read_cellxgene(tmp_path / "absent.h5ad")
    broken = tmp_path / "broken.h5ad"
    shutil.copy(SCP_META, broken)
    with pytest.raises(InputError, match="cannot read h5ad"):
        cellxgene.read_cellxgene(broken)


def serve_curation_api(site, h5ad, base):
    """Lay out ``site`` like the curation API (a dataset's versions) and the asset store, below ``base``."""
    (site / "assets").mkdir(parents=True, exist_ok=True)
    shutil.copy(h5ad, site / "assets" / f"{DID}.h5ad")
    doc = site / "curation" / "v1" / "datasets" / DID / "versions"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(
        json.dumps(
            [
                {
                    "dataset_id": DID,
                    "assets": [_asset("RDS", f"{base}assets/{DID}.rds"), _asset("H5AD", f"{base}assets/{DID}.h5ad")],
                },
                {"dataset_id": DID, "assets": [_asset("H5AD", f"{base}assets/older.h5ad")]},
            ]
        )
    )
    return base + "curation"


def test_prepare_end_to_end_through_a_local_curation_api(cxg_h5ad, tmp_path):
    path, counts, obs = cxg_h5ad
    site, ds = tmp_path / "site", tmp_path / "ds"
    site.mkdir()
    with serve(site) as (base, server):
        api_url = serve_curation_api(site, path, base)
        kw = {
            "dataset_id": DID,
            "api_url": api_url,
            "obs_filter": {"tissue": "milk"},
            "label_column": "author_cell_type",
            "sample_column": "sample_id",
            "backoff": 0.01,
        }
        sheet = cellxgene.prepare(ds, **kw)
        assert server.count(f"curation/v1/datasets/{DID}/versions") == 1
        assert server.count(f"assets/{DID}.h5ad") == 1 and server.count() == 2
        cellxgene.prepare(ds, **kw)
        assert server.count() == 2  # a second run downloads nothing
    assert (ds / "raw" / f"{DID}.h5ad").read_bytes() == path.read_bytes()
    back = read_sample_sheet(ds / "samples.tsv")
    milk = (obs["tissue"] == "milk").to_numpy()
    assert list(back.index) == sorted(set(obs.loc[milk, "sample_id"])) == list(sheet["sample"])
    assert (back["sample_type"] == "milk").all() and back["days_postpartum"].isna().all()
    for sample, row in back.iterrows():
        a = io.read_sample(row["path"], sample=sample)
        cells = milk & (obs["sample_id"] == sample).to_numpy()
        np.testing.assert_array_equal(a.X.toarray(), counts[cells][:, :5])  # raw counts, spike-in dropped
        assert a.obs["author_label"].astype(str).tolist() == obs.loc[cells, "author_cell_type"].astype(str).tolist()
        assert row["donor"] == str(a.obs["donor"].iloc[0])
    manifest = pd.read_csv(ds / "manifest.tsv", sep="\t")
    assert manifest["url"].tolist() == [f"{api_url}/v1/datasets/{DID}/versions", f"{base}assets/{DID}.h5ad"]
    assert manifest["path"].tolist() == [str(ds / "raw" / f"{DID}.json"), str(ds / "raw" / f"{DID}.h5ad")]
    assert manifest["size"].iloc[1] == path.stat().st_size
