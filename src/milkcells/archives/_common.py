"""Code the archive modules share (private): base URLs, the mirror, one fetch, the dataset's files.

Every archive writes the same dataset folder: ``samples.tsv`` (the sample
sheet, :data:`SHEET_COLUMNS` first), ``manifest.tsv`` (what was downloaded,
:func:`milkcells.manifest.write_manifest`) and its files below ``raw/`` (as
downloaded, never changed) or ``samples/`` (one h5ad per sample, for archives
that deliver one matrix for all samples).
"""

from __future__ import annotations

import logging
import os
import urllib.parse
import warnings
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import anndata as ad
import pandas as pd

from .. import download
from .._utils import InputError
from ..genes import flag_genes
from ..manifest import write_manifest
from ..storage import write_h5ad, write_table

log = logging.getLogger(__name__)

#: The sample-sheet columns every archive writes (BioStudies adds ``chemistry`` and ``accession``).
SHEET_COLUMNS = ["sample", "path", "donor", "batch", "sample_type", "days_postpartum"]

_URL_SCHEMES = ("http", "https", "ftp", "file")


def checked_base(url: str, *, field: str) -> str:
    """``url`` with exactly one trailing slash, after checking its scheme."""
    url = str(url).strip()
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _URL_SCHEMES or len(url) <= len(scheme) + 3:
        raise InputError(
            f"not a URL: {url!r}",
            field=field,
            expected=f"a URL starting with {'/'.join(_URL_SCHEMES)}://",
        )
    return url.rstrip("/") + "/"


def url_join(base: str, *parts: str) -> str:
    """Join an archive base URL and path parts with exactly one ``/`` between them.

    Trailing slashes on ``base`` and leading/trailing slashes on the parts do
    not matter; a trailing slash on the last part is kept (a folder). Empty
    parts are skipped. Characters that are not allowed in a URL path (such as
    spaces) are percent-encoded; existing ``%xx`` escapes are kept.

    Parameters
    ----------
    base
        Base URL, such as ``"https://ftp.ebi.ac.uk/biostudies/fire/"`` or
        ``"http://127.0.0.1:8000"`` (without a query string).
    *parts
        Path parts, each possibly holding several segments (``"Files/a.mtx.gz"``).

    Returns
    -------
    str
        The joined URL.

    Examples
    --------
    >>> url_join("https://ftp.ebi.ac.uk/biostudies/fire/", "E-MTAB-/841/E-MTAB-9841", "Files/")
    'https://ftp.ebi.ac.uk/biostudies/fire/E-MTAB-/841/E-MTAB-9841/Files/'
    """
    segments = [p.strip("/") for p in parts if p and p.strip("/")]
    if not segments:
        return base
    url = "/".join([base.rstrip("/"), *(quote(s, safe="/%!$&'()*+,;=:@-._~") for s in segments)])
    if parts[-1].endswith("/"):
        url += "/"
    return url


def require_columns(columns, given: Mapping[str, str | None], *, file, kind: str, noun: str = "column") -> None:
    """Raise unless every column named in ``given`` (``{argument: column or None}``) is in ``columns``.

    The message reads ``no <noun> 'x' (argument)``; the expected text ``the <kind> column given as argument``.
    """
    for what, col in given.items():
        if col is not None and col not in columns:
            raise InputError(
                f"no {noun} {col!r} ({what}); columns: {list(columns)}",
                file=file,
                field=col,
                expected=f"the {kind} column given as {what}",
            )


def mirror_dir(url: str, base_url: str, mirror: str | os.PathLike | None) -> Path | None:
    """The mirror folder that holds ``url``'s file (same layout as the archive below ``base_url``)."""
    if mirror is None:
        return None
    base = base_url.rstrip("/") + "/"
    if not url.startswith(base):
        return None
    rel = Path(url[len(base) :])
    return Path(mirror) / rel.parent


def fetch(url: str, dest: Path, *, base_url: str, mirror, expected: Mapping | None = None, **kw) -> dict:
    """Download ``url`` to ``dest`` (or copy it from the mirror) with :func:`milkcells.download.fetch_all`."""
    item = {"url": url, "filename": dest.name, **(expected or {})}
    records = download.fetch_all([item], dest.parent, mirror=mirror_dir(url, base_url, mirror), **kw)
    return records[0]


def finish(sheet: pd.DataFrame, records: list[dict], out_dir: Path) -> pd.DataFrame:
    """Write the dataset's ``manifest.tsv`` and ``samples.tsv``; return the sheet."""
    write_manifest(records, out_dir / "manifest.tsv")
    write_table(sheet, out_dir / "samples.tsv")
    log.info("prepared %d samples in %s", len(sheet), out_dir)
    return sheet


def split_samples(adata: ad.AnnData, out_dir: Path, *, sample_type: str) -> pd.DataFrame:
    """Write one ``samples/<sample>.h5ad`` per ``obs["sample"]``; return their sample-sheet rows."""
    rows = []
    for sample, idx in adata.obs.groupby("sample", observed=True).indices.items():
        part = adata[idx].copy()
        path = out_dir / "samples" / f"{sample}.h5ad"
        write_h5ad(part, path)
        first = part.obs.iloc[0]
        own = str(first.get("sample_type", ""))
        rows.append(
            {
                "sample": str(sample),
                "path": str(path),
                "donor": str(first.get("donor", sample)),
                "batch": str(first.get("batch", sample)),
                "sample_type": own if own in ("milk", "tissue") else sample_type,
                "days_postpartum": float(first.get("days_postpartum", float("nan"))),
            }
        )
    return pd.DataFrame(rows, columns=SHEET_COLUMNS)


def counts_anndata(X, obs: pd.DataFrame, symbols, gene_ids, *, file) -> ad.AnnData:
    """AnnData of raw counts with unique gene symbols (duplicates made unique, as :mod:`milkcells.io` does).

    With ``var["gene_ids"]``, ``var["mt"]`` and ``var["ribo"]`` (:func:`milkcells.genes.flag_genes`).
    """
    index = pd.Index(symbols)
    var = pd.DataFrame({"gene_ids": gene_ids}, index=index)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".* names are not unique", category=UserWarning)
        adata = ad.AnnData(X=X, obs=obs, var=var)
        if index.has_duplicates:
            log.info("%s: %d duplicated gene symbols made unique", file, int(index.duplicated().sum()))
            adata.var_names_make_unique()
    flag_genes(adata.var)
    return adata
