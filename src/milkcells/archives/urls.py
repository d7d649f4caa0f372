"""Any list of URLs with expected checksums, one or more files per sample.

The URL list is a TSV: ``url`` and ``sample``, optionally ``filename``,
``sha256``, ``md5``, ``size`` (:data:`URL_LIST_COLUMNS`, read by
:func:`read_url_list`) and the sample-sheet fields ``donor``, ``batch``,
``sample_type``, ``days_postpartum`` (``source``, its former name, is read as it, with a warning).
:func:`prepare` downloads each sample's files
into ``out_dir/raw/<sample>/`` and writes the sample sheet.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .. import download
from .._utils import InputError
from ..io import classify_10x_files
from ..manifest import normalise_item, unique_filenames
from ..samplesheet import rename_former_columns
from ._common import SHEET_COLUMNS, finish

__all__ = ["NAME", "CARRIES_AUTHOR_LABELS", "URL_LIST_COLUMNS", "prepare", "local_inputs", "read_url_list"]

log = logging.getLogger(__name__)

#: The archive's name in the registry and in the config (``dataset.archive``).
NAME = "urls"
#: A URL list carries no cell labels.
CARRIES_AUTHOR_LABELS = False
#: Columns of a URL list read by :func:`read_url_list` (:func:`prepare` also needs ``sample``).
URL_LIST_COLUMNS = {"required": ("url",), "optional": ("filename", "sha256", "md5", "size")}


def prepare(
    out_dir: str | os.PathLike,
    *,
    url_list: str | os.PathLike,
    mirror: str | os.PathLike | None = None,
    retries: int = 5,
    backoff: float = 0.5,
) -> pd.DataFrame:
    """Download any list of files with expected checksums and build a sample sheet.

    Parameters
    ----------
    out_dir
        Dataset folder (``raw/<sample>/<filename>``, ``manifest.tsv``, ``samples.tsv``).
    url_list
        TSV with ``url`` and ``sample`` and optionally ``filename``,
        ``sha256``, ``md5``, ``size`` (see :func:`read_url_list`)
        and the sheet fields ``donor``, ``batch``, ``sample_type``, ``days_postpartum``.
        Each sample's files must form one 10x MTX set, one 10x ``.h5`` or one ``.h5ad``.
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
    table = rename_former_columns(table, url_list)
    if "sample" not in table.columns:
        raise InputError(
            "missing column 'sample'",
            file=url_list,
            field="sample",
            expected="columns url, sample and optionally filename, sha256, md5, size",
        )
    items = read_url_list(url_list)
    records, rows = [], []
    for sample, idx in table.groupby("sample", sort=False).indices.items():
        its = [items[i] for i in idx]
        folder = out_dir / "raw" / str(sample)
        records += download.fetch_all(
            its, folder, mirror=None if mirror is None else Path(mirror) / str(sample), retries=retries, backoff=backoff
        )
        names = [it["filename"] for it in its]
        if len(names) == 1 and names[0].endswith(".h5ad"):
            path = folder / names[0]
        else:
            cls = classify_10x_files(names, sample=str(sample))
            path = folder if cls["format"] == "mtx" else folder / cls.get("h5", "")
            if cls["format"] == "molecule_info":
                raise InputError("molecule_info.h5 is not a count matrix", file=url_list, sample=str(sample))
        first = table.iloc[idx[0]]
        rows.append(
            {
                "sample": str(sample),
                "path": str(path),
                "donor": first.get("donor", "") or str(sample),
                "batch": first.get("batch", "") or str(sample),
                "sample_type": first.get("sample_type", "") or "milk",
                "days_postpartum": pd.to_numeric(first.get("days_postpartum", ""), errors="coerce"),
            }
        )
    return finish(pd.DataFrame(rows, columns=SHEET_COLUMNS), records, out_dir)


def local_inputs(config: Mapping) -> list[str]:
    """The local files :func:`prepare` reads, given its settings ``config``: the URL list."""
    return [config["url_list"]]


def read_url_list(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a list of URLs with expected checksums from a TSV file.

    The file has a header line naming its columns: ``url`` (required) and,
    optionally, ``filename`` (default: the last segment of the URL; may hold
    sub-folders), ``sha256``, ``md5`` and ``size`` (bytes). Empty cells mean
    "unknown". Blank lines and lines starting with ``#`` are skipped; further
    columns are ignored.

    Parameters
    ----------
    path
        The tab-separated file.

    Returns
    -------
    list of dict
        ``{"url", "filename", "sha256", "md5", "size"}`` per line (checksums
        in lower case, size as int, unknown values ``None``), ready for
        :func:`fetch_all`.

    Raises
    ------
    InputError
        When the file is missing, a column is missing, a line has the wrong
        number of fields, a URL, checksum or size is malformed, or two URLs
        save to the same file name; the message names the file, the line and
        the field.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("URL list not found", file=path, expected="a tab-separated file")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [
            (n, row)
            for n, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1)
            if row and any(c.strip() for c in row) and not row[0].startswith("#")
        ]
    if not rows:
        raise InputError("URL list is empty", file=path, expected="a header line with a 'url' column")
    header = [c.strip() for c in rows[0][1]]
    if "url" not in header:
        raise InputError(
            f"missing column 'url' (columns: {header})",
            file=path,
            field="url",
            expected="a header line with the columns url[, filename, sha256, md5, size]",
        )
    items = []
    for n, row in rows[1:]:
        if len(row) != len(header):
            raise InputError(
                f"line {n} has {len(row)} fields",
                file=path,
                expected=f"{len(header)} tab-separated fields like the header",
            )
        values = dict(zip(header, (c.strip() for c in row), strict=True))
        if not values["url"]:
            raise InputError(f"empty URL on line {n}", file=path, field="url")
        items.append(normalise_item(values, file=path, line=n))
    unique_filenames(items, file=path)
    return items
