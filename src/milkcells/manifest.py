"""Download items and manifests: what a file must match, and the record of what was fetched.

An *item* is ``{"url", "filename", "sha256", "md5", "size"}`` (:func:`normalise_item`
checks one; :func:`milkcells.archives.urls.read_url_list` reads a list of them
from a TSV) and :func:`milkcells.download.fetch_all` downloads a list of items.
A *manifest* (:func:`write_manifest`, :func:`read_manifest`) records, per file,
the URL, the local path, size, sha256, md5 and when it was finished.
Malformed items and manifests raise :class:`milkcells.InputError` naming the
file, the line and the field.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from ._utils import InputError, atomic_path

__all__ = [
    "MANIFEST_COLUMNS",
    "Expected",
    "normalise_item",
    "unique_filenames",
    "write_manifest",
    "read_manifest",
]

#: Columns of a manifest written by :func:`write_manifest`, in order.
MANIFEST_COLUMNS = ("url", "path", "size", "sha256", "md5", "time")

_HEX = {"sha256": re.compile(r"^[0-9a-f]{64}$"), "md5": re.compile(r"^[0-9a-f]{32}$")}


@dataclass(frozen=True)
class Expected:
    """What a file must match (sha256, md5, size); ``None`` means "not checked"."""

    sha256: str | None = None
    md5: str | None = None
    size: int | None = None

    @classmethod
    def checked(cls, *, sha256=None, md5=None, size=None, file=None, line=None) -> Expected:
        """Validate and normalise user-given expectations (``InputError`` if malformed)."""
        where = "" if line is None else f" on line {line}"
        sums = {}
        for name, value in (("sha256", sha256), ("md5", md5)):
            if value is None or (isinstance(value, str) and not value.strip()):
                sums[name] = None
                continue
            text = str(value).strip().lower()
            if not _HEX[name].match(text):
                n = 64 if name == "sha256" else 32
                raise InputError(
                    f"malformed {name} {value!r}{where}", file=file, field=name, expected=f"{n} hexadecimal digits"
                )
            sums[name] = text
        if size is not None and not (isinstance(size, str) and not size.strip()):
            try:
                if isinstance(size, bool) or (isinstance(size, float) and not size.is_integer()):
                    raise ValueError(size)
                size = int(size)
            except (TypeError, ValueError):
                raise InputError(
                    f"malformed size {size!r}{where}", file=file, field="size", expected="a whole number of bytes"
                ) from None
            if size < 0:
                raise InputError(
                    f"negative size {size}{where}", file=file, field="size", expected="a whole number of bytes"
                )
        else:
            size = None
        return cls(sha256=sums["sha256"], md5=sums["md5"], size=size)


def _safe_relative(name: str, *, file=None, line=None) -> str:
    where = "" if line is None else f" on line {line}"
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts or "\\" in name or name.endswith("/"):
        raise InputError(
            f"unsafe file name {name!r}{where}",
            file=file,
            field="filename",
            expected="a relative path inside the download folder, without '..'",
        )
    return str(rel)


def normalise_item(item: Mapping, *, file=None, line=None) -> dict[str, Any]:
    """Check one download item and fill its file name from the URL.

    Parameters
    ----------
    item
        ``{"url"[, "filename", "sha256", "md5", "size"]}``.
    file, line
        Where the item was read, for messages.

    Returns
    -------
    ``{"url", "filename", "sha256", "md5", "size"}``, checksums in lower case,
    size as int, unknown values ``None``.
    """
    where = "" if line is None else f" on line {line}"
    if not isinstance(item, Mapping):
        raise InputError(
            f"item {item!r}{where} is not a mapping",
            file=file,
            expected="a dict with 'url' and optional 'filename', 'sha256', 'md5', 'size'",
        )
    url = str(item.get("url") or "").strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise InputError(f"malformed URL {url!r}{where}", file=file, field="url", expected="an http:// or https:// URL")
    filename = str(item.get("filename") or "").strip() or unquote(parts.path.rsplit("/", 1)[-1])
    if not filename:
        raise InputError(
            f"no file name in the URL {url!r}{where}",
            file=file,
            field="filename",
            expected="a URL ending in a file name, or a 'filename'",
        )
    filename = _safe_relative(filename, file=file, line=line)
    expect = Expected.checked(
        sha256=item.get("sha256"), md5=item.get("md5"), size=item.get("size"), file=file, line=line
    )
    return {"url": url, "filename": filename, "sha256": expect.sha256, "md5": expect.md5, "size": expect.size}


def unique_filenames(items: list[dict], file=None) -> None:
    """Raise :class:`~milkcells.InputError` when two URLs of ``items`` save to one file name."""
    seen: dict[str, str] = {}
    for item in items:
        other = seen.setdefault(item["filename"], item["url"])
        if other != item["url"]:
            raise InputError(
                f"two URLs save to the same file {item['filename']!r}: {other!r} and {item['url']!r}",
                file=file,
                field="filename",
                expected="unique file names",
            )


def write_manifest(records: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Write a download manifest: a TSV with the columns :data:`MANIFEST_COLUMNS`.

    One line per file: ``url``, ``path`` (as recorded), ``size`` (bytes),
    ``sha256``, ``md5`` and ``time`` (ISO 8601, UTC, when the file was
    finished). The file is written atomically (a temporary file renamed into
    place). Run-specific fields of the records (``downloaded``, ``origin``)
    are not written, so re-running a finished download writes the same
    manifest.

    Parameters
    ----------
    records
        Records returned by :func:`fetch` / :func:`fetch_all` (or read by
        :func:`read_manifest`).
    path
        The manifest file, conventionally ``<dataset>/manifest.tsv``.

    Raises
    ------
    InputError
        When a record lacks a column or a value holds a tab or a newline.
    """
    lines = ["\t".join(MANIFEST_COLUMNS)]
    for i, rec in enumerate(records):
        values = []
        for col in MANIFEST_COLUMNS:
            if col not in rec and col != "md5":
                raise InputError(f"record {i} has no {col!r}", file=path, field=col)
            value = "" if rec.get(col) is None else str(rec[col])
            if re.search(r"[\t\r\n]", value):
                raise InputError(f"record {i}: {col} {value!r} holds a tab or a newline", file=path, field=col)
            values.append(value)
        lines.append("\t".join(values))
    with atomic_path(path, suffix=".tsv") as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a manifest written by :func:`write_manifest`.

    Parameters
    ----------
    path
        The manifest TSV.

    Returns
    -------
    list of dict
        One ``{"url", "path", "size", "sha256", "md5", "time"}`` per file,
        ``size`` as int and an empty ``md5`` as ``None``.

    Raises
    ------
    InputError
        When the file is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("manifest not found", file=path, expected="a TSV written by write_manifest")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or tuple(rows[0]) != MANIFEST_COLUMNS:
        raise InputError(
            f"unexpected header {rows[0] if rows else []}", file=path, expected=f"the columns {list(MANIFEST_COLUMNS)}"
        )
    out = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(MANIFEST_COLUMNS):
            raise InputError(f"line {n} has {len(row)} fields", file=path, expected=f"{len(MANIFEST_COLUMNS)} fields")
        rec: dict[str, Any] = dict(zip(MANIFEST_COLUMNS, row, strict=True))
        expect = Expected.checked(sha256=rec["sha256"], md5=rec["md5"], size=rec["size"], file=path, line=n)
        rec.update(size=expect.size, sha256=expect.sha256, md5=expect.md5)
        out.append(rec)
    return out
