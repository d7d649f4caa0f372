"""Pull a public dataset into a milkcells sample sheet.

Each ``prepare_*`` function puts one dataset in ``out_dir`` and returns (and
writes, as ``out_dir/samples.tsv``) its sample sheet:

* :func:`prepare_biostudies`: ArrayExpress/BioStudies accessions. The SDRF
  (MAGE-TAB) of each accession is downloaded and is the authority for the
  samples and their file names and URLs; each sample's 10x files are
  downloaded into ``out_dir/raw/<sample>/`` under their archive names.
* :func:`prepare_scp`: a Broad Single Cell Portal export (raw-count table and
  metadata) that the user downloaded (the portal needs a login).
* :func:`prepare_cellxgene`: a CELLxGENE Discover dataset by id (h5ad), with
  an ``obs`` filter.
* :func:`prepare_url_list`: any list of URLs with expected checksums.

Raw downloads go through :func:`milkcells.download.fetch` (resumable,
retried, verified, atomic) and are never changed afterwards; a manifest
(``out_dir/manifest.tsv``) records URL, size, sha256 and time. With ``mirror``
(a local folder laid out like the archive below its base URL), files are
copied from there and verified the same way, without the network. A second
run finds every file in place and downloads nothing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import anndata as ad
import pandas as pd

from . import checks, download, io, manifest, sources
from ._utils import InputError, write_h5ad, write_table

__all__ = ["prepare_biostudies", "prepare_scp", "prepare_cellxgene", "prepare_url_list"]

log = logging.getLogger(__name__)

SHEET_COLUMNS = ["sample", "path", "donor", "batch", "source", "days_postpartum"]


def _mirror_dir(url: str, base_url: str, mirror: str | os.PathLike | None) -> Path | None:
    """The mirror folder that holds ``url``'s file (same layout as the archive below ``base_url``)."""
    if mirror is None:
        return None
    base = base_url.rstrip("/") + "/"
    if not url.startswith(base):
        return None
    rel = Path(url[len(base):])
    return Path(mirror) / rel.parent


def _fetch(url: str, dest: Path, *, base_url: str, mirror, expected: Mapping | None = None, **kw) -> dict:
    item = {"url": url, "filename": dest.name, **(expected or {})}
    records = download.fetch_all([item], dest.parent, mirror=_mirror_dir(url, base_url, mirror), **kw)
    return records[0]


def _finish(sheet: pd.DataFrame, records: list[dict], out_dir: Path) -> pd.DataFrame:
    manifest.write_manifest(records, out_dir / "manifest.tsv")
    write_table(sheet, out_dir / "samples.tsv")
    log.info("prepared %d samples in %s", len(sheet), out_dir)
    return sheet


def prepare_biostudies(
    accessions: Iterable[str],
    out_dir: str | os.PathLike,
    *,
    base_url: str = sources.BIOSTUDIES_BASE_URL,
    include_tissue: bool = False,
    mirror: str | os.PathLike | None = None,
    retries: int = 5,
    backoff: float = 0.5,
) -> pd.DataFrame:
    """Download ArrayExpress/BioStudies accessions and build their sample sheet.

    Parameters
    ----------
    accessions
        For example ``["E-MTAB-9841", "E-MTAB-10855", "E-MTAB-10885"]`` (Twigger et al. 2022).
    out_dir
        Dataset folder: ``raw/<accession>/<accession>.sdrf.txt``,
        ``raw/<sample>/<files>``, ``manifest.tsv``, ``samples.tsv``.
    base_url
        Root of the BioStudies file tree (or a mirror or test server standing in).
    include_tissue
        Also take the tissue (NMC) samples; milk (LMC) only by default.
    mirror
        A local folder laid out like the archive below ``base_url``.
    retries, backoff
        Passed to :func:`milkcells.download.fetch`.

    Returns
    -------
    The sample sheet (also written to ``out_dir/samples.tsv``). Samples without
    a usable 10x matrix (for example only a ``molecule_info.h5``) are left out
    with a logged warning.
    """
    out_dir = Path(out_dir)
    accessions = list(accessions)
    if not accessions:
        raise InputError("no accession given", field="accessions", expected="one or more ArrayExpress accessions")
    records, tables = [], []
    for acc in accessions:
        url = sources.sdrf_url(acc, base_url=base_url)
        dest = out_dir / "raw" / acc / f"{acc}.sdrf.txt"
        records.append(_fetch(url, dest, base_url=base_url, mirror=mirror, retries=retries, backoff=backoff))
        try:
            tables.append(sources.sdrf_samples(dest, accession=acc, include_tissue=include_tissue,
                                               base_url=base_url))
        except InputError as e:
            if e.field != "source":  # only "no milk sample left" is not fatal
                raise
            log.warning("%s: %s", acc, e)
    if not tables:
        raise InputError("no usable sample in the SDRFs", field="accessions", expected="milk samples")
    samples = pd.concat(tables)
    samples.index.name = None
    dup = samples["sample"][samples["sample"].duplicated()].tolist()
    if dup:
        raise InputError(f"sample names occur in several accessions: {dup}", field="sample")
    raw = out_dir / "raw"
    sheet = sources.sample_sheet_from_sdrf(samples, raw, skip_unusable=True)
    plan = sources.sdrf_downloads(samples, raw, skip_unusable=True)
    for _, row in plan.iterrows():
        records.append(_fetch(row["url"], Path(row["dest"]), base_url=base_url, mirror=mirror,
                              retries=retries, backoff=backoff))
    for sample, files in plan.groupby("sample"):
        roles = dict(zip(files["role"], files["dest"], strict=True))
        if {"matrix", "features", "barcodes"} <= set(roles):
            try:
                checks.check_10x_triplet(roles["matrix"], roles["features"], roles["barcodes"])
            except InputError as e:
                raise InputError(str(e), sample=str(sample), field="files",
                                 expected="a consistent 10x matrix/features/barcodes set") from None
    return _finish(sheet, records, out_dir)


def _split_samples(adata: ad.AnnData, out_dir: Path, *, source: str) -> pd.DataFrame:
    rows = []
    for sample, idx in adata.obs.groupby("sample", observed=True).indices.items():
        part = adata[idx].copy()
        path = out_dir / "samples" / f"{sample}.h5ad"
        write_h5ad(part, path)
        first = part.obs.iloc[0]
        rows.append({
            "sample": str(sample),
            "path": str(path),
            "donor": str(first.get("donor", sample)),
            "batch": str(first.get("batch", sample)),
            "source": str(first.get("source", source)) if str(first.get("source", "")) in ("milk", "tissue") else source,
            "days_postpartum": float(first.get("days_postpartum", float("nan"))),
        })
    return pd.DataFrame(rows, columns=SHEET_COLUMNS)


def prepare_scp(
    counts: str | os.PathLike,
    metadata: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    label_column: str = "General_Celltype",
) -> pd.DataFrame:
    """Import a Single Cell Portal export (Nyquist et al. 2022, SCP1671) as per-sample h5ad files.

    Parameters
    ----------
    counts, metadata
        The raw-count table and the portal metadata file the user downloaded.
    out_dir
        Dataset folder (``samples/<sample>.h5ad``, ``samples.tsv``).
    label_column
        Metadata column with the authors' labels (kept as ``obs["author_label"]``).

    Returns
    -------
    The sample sheet (one row per portal sample).
    """
    out_dir = Path(out_dir)
    adata = sources.read_scp(counts, metadata, label_column=label_column)
    sheet = _split_samples(adata, out_dir, source="milk")
    return _finish(sheet, [], out_dir)


def prepare_cellxgene(
    dataset_id: str,
    out_dir: str | os.PathLike,
    *,
    api_url: str = sources.CELLXGENE_API_URL,
    obs_filter: Mapping | None = None,
    label_column: str = "cell_type",
    sample_column: str | None = None,
    mirror: str | os.PathLike | None = None,
    retries: int = 5,
    backoff: float = 0.5,
) -> pd.DataFrame:
    """Download a CELLxGENE Discover dataset (h5ad), filter its cells and split it by sample.

    Parameters
    ----------
    dataset_id
        The dataset's id (a UUID).
    out_dir
        Dataset folder (``raw/<id>.json``, ``raw/<id>.h5ad``, ``samples/``,
        ``manifest.tsv``, ``samples.tsv``).
    api_url
        Base of the CELLxGENE curation API (or a stand-in).
    obs_filter
        ``{column: value or [values]}``, for example ``{"tissue": "milk"}``.
    label_column
        ``obs`` column of the labels to carry as ``obs["author_label"]``.
    sample_column
        ``obs`` column naming the samples (default: the donor).
    mirror, retries, backoff
        As in :func:`prepare_biostudies` (the mirror is laid out below ``api_url``).

    Returns
    -------
    The sample sheet.
    """
    out_dir = Path(out_dir)
    meta_url = sources.cellxgene_dataset_url(dataset_id, api_url=api_url)
    meta_path = out_dir / "raw" / f"{dataset_id}.json"
    records = [_fetch(meta_url, meta_path, base_url=api_url, mirror=mirror, retries=retries, backoff=backoff)]
    h5ad_url = sources.cellxgene_h5ad_url(json.loads(meta_path.read_text()), dataset_id=dataset_id)
    h5ad_path = out_dir / "raw" / f"{dataset_id}.h5ad"
    records.append(_fetch(h5ad_url, h5ad_path, base_url=api_url, mirror=mirror, retries=retries, backoff=backoff))
    adata = sources.read_cellxgene(h5ad_path, obs_filter=obs_filter, label_column=label_column,
                                   sample_column=sample_column)
    sheet = _split_samples(adata, out_dir, source="milk")
    return _finish(sheet, records, out_dir)


def prepare_url_list(
    url_list: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    mirror: str | os.PathLike | None = None,
    retries: int = 5,
    backoff: float = 0.5,
) -> pd.DataFrame:
    """Download any list of files with expected checksums and build a sample sheet.

    Parameters
    ----------
    url_list
        TSV with ``url`` and ``sample`` and optionally ``filename``,
        ``sha256``, ``md5``, ``size`` (see :func:`milkcells.download.read_url_list`)
        and the sheet fields ``donor``, ``batch``, ``source``, ``days_postpartum``.
        Each sample's files must form one 10x MTX set, one 10x ``.h5`` or one ``.h5ad``.
    out_dir
        Dataset folder (``raw/<sample>/<filename>``, ``manifest.tsv``, ``samples.tsv``).
    mirror
        A folder holding the files as ``<mirror>/<sample>/<filename>``.
    retries, backoff
        Passed to :func:`milkcells.download.fetch`.

    Returns
    -------
    The sample sheet.
    """
    out_dir = Path(out_dir)
    table = pd.read_csv(url_list, sep="\t", dtype=str, keep_default_na=False, comment="#")
    if "sample" not in table.columns:
        raise InputError("missing column 'sample'", file=url_list, field="sample",
                         expected="columns url, sample and optionally filename, sha256, md5, size")
    items = manifest.read_url_list(url_list)
    records, rows = [], []
    for sample, idx in table.groupby("sample", sort=False).indices.items():
        its = [items[i] for i in idx]
        folder = out_dir / "raw" / str(sample)
        records += download.fetch_all(its, folder, mirror=None if mirror is None else Path(mirror) / str(sample),
                                      retries=retries, backoff=backoff)
        names = [it["filename"] for it in its]
        if len(names) == 1 and names[0].endswith(".h5ad"):
            path = folder / names[0]
        else:
            cls = io.classify_10x_files(names, sample=str(sample))
            path = folder if cls["format"] == "mtx" else folder / cls.get("h5", "")
            if cls["format"] == "molecule_info":
                raise InputError("molecule_info.h5 is not a count matrix", file=url_list, sample=str(sample))
        first = table.iloc[idx[0]]
        rows.append({"sample": str(sample), "path": str(path), "donor": first.get("donor", "") or str(sample),
                     "batch": first.get("batch", "") or str(sample), "source": first.get("source", "") or "milk",
                     "days_postpartum": pd.to_numeric(first.get("days_postpartum", ""), errors="coerce")})
    return _finish(pd.DataFrame(rows, columns=SHEET_COLUMNS), records, out_dir)
