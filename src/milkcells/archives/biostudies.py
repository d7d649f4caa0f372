"""BioStudies / ArrayExpress: a study's SDRF is the authority for its samples and their files.

For Twigger et al. 2022 (E-MTAB-9841, E-MTAB-10855, E-MTAB-10885).
:func:`prepare` downloads each accession's SDRF (MAGE-TAB), reads its samples
(:func:`read_sdrf`, :func:`sdrf_samples`), recognises each sample's 10x files
(:func:`milkcells.io.classify_10x_files`), writes the sample sheet
(:func:`sample_sheet_from_sdrf`) and downloads the files it lists
(:func:`sdrf_downloads`) into ``out_dir/raw/<sample>/`` under their archive
names. :func:`biostudies_files_url` and :func:`sdrf_url` give the archive's
URLs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .._utils import InputError
from ..checks import check_10x_triplet
from ..io import classify_10x_files
from ..samplesheet import is_missing
from ._common import fetch, finish
from ._sdrf import BIOSTUDIES_BASE_URL, biostudies_files_url, read_sdrf, sdrf_samples, sdrf_url

__all__ = [
    "NAME",
    "CARRIES_AUTHOR_LABELS",
    "BIOSTUDIES_BASE_URL",
    "prepare",
    "local_inputs",
    "biostudies_files_url",
    "sdrf_url",
    "read_sdrf",
    "sdrf_samples",
    "sample_sheet_from_sdrf",
    "sdrf_downloads",
]

log = logging.getLogger(__name__)

#: The archive's name in the registry and in the config (``dataset.archive``).
NAME = "biostudies"
#: The SDRF carries no cell labels.
CARRIES_AUTHOR_LABELS = False


def prepare(
    out_dir: str | os.PathLike,
    *,
    accessions: Iterable[str],
    include_tissue: bool = False,
    base_url: str = BIOSTUDIES_BASE_URL,
    mirror: str | os.PathLike | None = None,
    retries: int = 5,
    backoff: float = 0.5,
) -> pd.DataFrame:
    """Download ArrayExpress/BioStudies accessions and build their sample sheet.

    Parameters
    ----------
    out_dir
        Dataset folder: ``raw/<accession>/<accession>.sdrf.txt``,
        ``raw/<sample>/<files>``, ``manifest.tsv``, ``samples.tsv``.
    accessions
        For example ``["E-MTAB-9841", "E-MTAB-10855", "E-MTAB-10885"]`` (Twigger et al. 2022).
    include_tissue
        Also take the tissue (NMC) samples; milk (LMC) only by default.
    base_url
        Root of the BioStudies file tree (or a mirror or test server standing in).
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
        url = sdrf_url(acc, base_url=base_url)
        dest = out_dir / "raw" / acc / f"{acc}.sdrf.txt"
        records.append(fetch(url, dest, base_url=base_url, mirror=mirror, retries=retries, backoff=backoff))
        try:
            tables.append(sdrf_samples(dest, accession=acc, include_tissue=include_tissue, base_url=base_url))
        except InputError as e:
            if e.field != "sample_type":  # only "no milk sample left" is not fatal
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
    sheet = sample_sheet_from_sdrf(samples, raw, skip_unusable=True)
    plan = sdrf_downloads(samples, raw, skip_unusable=True)
    for _, row in plan.iterrows():
        records.append(
            fetch(row["url"], Path(row["dest"]), base_url=base_url, mirror=mirror, retries=retries, backoff=backoff)
        )
    for sample, files in plan.groupby("sample"):
        roles = dict(zip(files["role"], files["dest"], strict=True))
        if {"matrix", "features", "barcodes"} <= set(roles):
            try:
                check_10x_triplet(roles["matrix"], roles["features"], roles["barcodes"])
            except InputError as e:
                raise InputError(
                    str(e), sample=str(sample), field="files", expected="a consistent 10x matrix/features/barcodes set"
                ) from None
    return finish(sheet, records, out_dir)


def local_inputs(config: Mapping) -> list[str]:
    """The local files :func:`prepare` reads, given its settings ``config``: none (every file is downloaded)."""
    return []


# --------------------------------------------------------------------------- sample sheet


def _plan(samples: pd.DataFrame, download_dir, skip_unusable: bool) -> list[tuple[pd.Series, dict, Path]]:
    for col in ("sample", "files"):
        if col not in samples.columns:
            raise InputError(f"missing column {col!r}", field=col, expected="the table returned by sdrf_samples()")
    if samples.empty:
        raise InputError("no sample given", field="sample", expected="at least one sample")
    root = Path(download_dir)
    plan = []
    for _, row in samples.iterrows():
        sample = str(row["sample"])
        files = row["files"]
        if isinstance(files, (str, bytes, Mapping)) or not isinstance(files, Iterable):
            raise InputError(
                f"files is {files!r}",
                sample=sample,
                field="files",
                expected="a list of file names or {'name', 'url'} dicts",
            )
        try:
            cls = classify_10x_files(files, sample=sample)
            if cls["format"] == "molecule_info":
                raise InputError(
                    f"only a molecule_info.h5 ({cls['molecule_info']}): per-molecule data, "
                    "not a count matrix that milkcells can read",
                    sample=sample,
                    field="files",
                    expected="a 10x MTX set or feature-barcode .h5 (build one with Cell Ranger first)",
                )
        except InputError as e:
            if not skip_unusable:
                raise
            log.warning("skipping sample %r: %s", sample, e)
            continue
        plan.append((row, cls, root / sample))
    if not plan:
        raise InputError(
            "no sample has usable 10x files", field="files", expected="a 10x MTX set or feature-barcode .h5 per sample"
        )
    return plan


def _text(row: pd.Series, col: str) -> str:
    value = row.get(col, "")
    return "" if is_missing(value) else str(value).strip()


def sample_sheet_from_sdrf(
    samples_df: pd.DataFrame, download_dir: str | os.PathLike, *, skip_unusable: bool = False
) -> pd.DataFrame:
    """Build the milkcells sample sheet for samples listed by :func:`sdrf_samples`.

    Each sample's files go in their own folder ``<download_dir>/<sample>/``
    under their archive names (see :func:`sdrf_downloads`), which
    :func:`milkcells.io.read_counts` reads: the folder itself for an MTX set,
    the file for a 10x ``.h5``.

    Parameters
    ----------
    samples_df
        Output of :func:`sdrf_samples` (needs ``sample`` and ``files``; the
        other sheet columns are filled when absent).
    download_dir
        Where the downloads will be stored.
    skip_unusable
        Leave out (with a logged warning) samples without a usable 10x set,
        such as batch 3's ``molecule_info.h5``-only samples, instead of
        raising.

    Returns
    -------
    Columns ``sample``, ``path``, ``donor``, ``batch``, ``sample_type``,
    ``days_postpartum``, ``chemistry``, ``accession``, in input order; write
    it with :func:`milkcells.storage.write_table` and read it back with
    :func:`milkcells.samplesheet.read_sample_sheet`.

    Raises
    ------
    InputError
        When a sample has no usable 10x files (unless ``skip_unusable``) or
        none has.
    """
    rows = []
    for row, cls, folder in _plan(samples_df, download_dir, skip_unusable):
        path = folder if cls["format"] == "mtx" else folder / cls["h5"]
        sample = str(row["sample"])
        days = row.get("days_postpartum", np.nan)
        rows.append(
            {
                "sample": sample,
                "path": str(path),
                "donor": _text(row, "donor") or sample,
                "batch": _text(row, "batch") or _text(row, "accession") or sample,
                "sample_type": _text(row, "sample_type") or "milk",
                "days_postpartum": np.nan if is_missing(days) else float(days),
                "chemistry": _text(row, "chemistry"),
                "accession": _text(row, "accession"),
            }
        )
    return pd.DataFrame(
        rows, columns=["sample", "path", "donor", "batch", "sample_type", "days_postpartum", "chemistry", "accession"]
    )


def sdrf_downloads(
    samples_df: pd.DataFrame, download_dir: str | os.PathLike, *, skip_unusable: bool = False
) -> pd.DataFrame:
    """List the files to download for :func:`sample_sheet_from_sdrf`'s sheet.

    Only the recognised 10x files are listed (other processed files, such as
    summaries, are left out), so each sample folder ends up holding exactly
    one MTX set or ``.h5`` as :func:`milkcells.io.read_counts` expects.

    Parameters
    ----------
    samples_df
        Output of :func:`sdrf_samples`.
    download_dir
        Root of the per-sample folders.
    skip_unusable
        As in :func:`sample_sheet_from_sdrf`.

    Returns
    -------
    One row per file: ``sample``, ``role`` (``matrix``, ``features``,
    ``barcodes`` or ``h5``), ``name``, ``url`` and ``dest`` (the local path).
    """
    out = []
    for row, cls, folder in _plan(samples_df, download_dir, skip_unusable):
        urls = {f["name"]: f.get("url", "") for f in row["files"] if isinstance(f, Mapping)}
        for role in ("matrix", "features", "barcodes", "h5"):
            if role in cls:
                name = cls[role]
                out.append(
                    {
                        "sample": row["sample"],
                        "role": role,
                        "name": name,
                        "url": urls.get(name, ""),
                        "dest": str(folder / name),
                    }
                )
    return pd.DataFrame(out, columns=["sample", "role", "name", "url", "dest"])
