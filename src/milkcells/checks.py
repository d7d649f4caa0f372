"""File-format checks of downloaded files: gzip streams, Matrix Market files, 10x triplets.

:mod:`milkcells.download` runs :func:`check_format` on every file before it is
put in place (a ``.gz`` file must be one complete gzip stream, a ``.mtx`` /
``.mtx.gz`` file a valid Matrix Market file); :mod:`milkcells.archives`
checks that a sample's 10x matrix, features and barcodes belong together
(:func:`check_10x_triplet`). What a 10x file set *is* (which names make one)
is :func:`milkcells.io.classify_10x_files`'s business; these functions check
the contents. Every failure raises :class:`milkcells.InputError` naming the
file and what was expected.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import zlib
from pathlib import Path
from typing import Any

from ._utils import InputError

__all__ = ["check_format", "check_gzip", "check_mtx", "check_10x_triplet"]

_READ_BLOCK = 1 << 20
_MAX_LINE = 1 << 16


def _open_text_source(path: Path, gzipped: bool):
    if not path.is_file():
        raise InputError("file not found", file=path)
    if gzipped:
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                raise InputError(
                    "not a gzip file (no gzip magic bytes)",
                    file=path,
                    expected="a gzip-compressed file, as its .gz name says",
                )
        return gzip.open(path, "rb")
    return open(path, "rb")


@contextlib.contextmanager
def _gzip_errors(path: Path):
    """Turn the errors of a damaged gzip stream into an :class:`InputError`."""
    try:
        yield
    except EOFError as exc:
        raise InputError(f"truncated gzip stream ({exc})", file=path, expected="a complete gzip stream") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"corrupt gzip stream ({exc})", file=path, expected="a complete gzip stream") from None


def check_gzip(path: str | os.PathLike) -> int:
    """Check that a file is one complete, uncorrupted gzip stream.

    The file is decompressed fully, block by block (constant memory), so a
    truncated file or a CRC error is found.

    Parameters
    ----------
    path
        The gzip file (its name does not matter).

    Returns
    -------
    int
        The number of uncompressed bytes.

    Raises
    ------
    InputError
        When the file is missing, not gzip, truncated or corrupt.
    """
    path = Path(path)
    total = 0
    with _gzip_errors(path), _open_text_source(path, gzipped=True) as f:
        while block := f.read(_READ_BLOCK):
            total += len(block)
    return total


_MTX_FIELDS = {"real": 3, "integer": 3, "complex": 4, "pattern": 2}
_MTX_SYMMETRIES = ("general", "symmetric", "skew-symmetric", "hermitian")
_MTX_HEADER = (
    "'%%MatrixMarket matrix coordinate <real|integer|complex|pattern> <general|symmetric|skew-symmetric|hermitian>'"
)
_BLANK_AFTER_NEWLINE = re.compile(rb"\n[ \t\r\f\v]*(?=\n)")
_BLANK_AT_START = re.compile(rb"[ \t\r\f\v]*\n")


def _count_lines(f, path: Path) -> tuple[int, bytes | None, bytes | None]:
    """Count the non-blank lines left in ``f``; also return the first and the last.

    Works on blocks (C speed), not line by line, so a 10x matrix with hundreds
    of millions of entries is counted in seconds.
    """
    count, first, last, rest = 0, None, None, b""
    while True:
        block = f.read(_READ_BLOCK)
        buf = rest + block
        if not block:
            if buf.strip():
                count += 1
                last = buf
                first = buf if first is None else first
            return count, first, last
        cut = buf.rfind(b"\n")
        if cut < 0:
            if len(buf) > _MAX_LINE:
                raise InputError("a line is longer than 64 KiB", file=path, expected="a text file with short lines")
            rest = buf
            continue
        seg, rest = buf[: cut + 1], buf[cut + 1 :]
        blank = len(_BLANK_AFTER_NEWLINE.findall(seg)) + (1 if _BLANK_AT_START.match(seg) else 0)
        n = seg.count(b"\n") - blank
        if n:
            tail = seg.rstrip()
            last = tail[tail.rfind(b"\n") + 1 :]
            if first is None:
                head = seg.lstrip()
                first = head[: head.find(b"\n")]
            count += n


def _check_entry(line: bytes, *, rows: int, cols: int, field: str, path: Path, which: str) -> None:
    tokens = line.split()
    ok = len(tokens) == _MTX_FIELDS[field]
    try:
        i, j = int(tokens[0]), int(tokens[1])
        ok = ok and 1 <= i <= rows and 1 <= j <= cols
        parse = int if field == "integer" else float
        for t in tokens[2:]:
            parse(t)
    except (ValueError, IndexError):
        ok = False
    if not ok:
        shown = line.decode("ascii", errors="replace").strip()[:80]
        raise InputError(
            f"malformed {which} entry {shown!r}",
            file=path,
            expected=f"'row col{'' if field == 'pattern' else ' value'}' with "
            f"1 <= row <= {rows} and 1 <= col <= {cols}",
        )


def _check_mtx(path: Path, *, gzipped: bool) -> dict[str, Any]:
    with _gzip_errors(path), _open_text_source(path, gzipped) as f:
        header = f.readline(_MAX_LINE)
        tokens = header.decode("ascii", errors="replace").split()
        banner = [t.lower() for t in tokens[:2]]
        if len(tokens) != 5 or banner != ["%%matrixmarket", "matrix"]:
            shown = header[:80].decode("ascii", errors="replace").strip()
            raise InputError(f"not a Matrix Market header: {shown!r}", file=path, expected=_MTX_HEADER)
        fmt, field, symmetry = (t.lower() for t in tokens[2:])
        if fmt != "coordinate":
            raise InputError(
                f"Matrix Market format {fmt!r} is not supported",
                file=path,
                expected="'coordinate' (sparse), as written by Cell Ranger and scipy",
            )
        if field not in _MTX_FIELDS or symmetry not in _MTX_SYMMETRIES:
            raise InputError(
                f"unknown Matrix Market field/symmetry {field!r} {symmetry!r}", file=path, expected=_MTX_HEADER
            )
        line = f.readline(_MAX_LINE)
        while line.startswith(b"%") or (line and not line.strip()):
            line = f.readline(_MAX_LINE)
        try:
            rows, cols, nnz = (int(t) for t in line.split())
            if min(rows, cols, nnz) < 0 or nnz > rows * cols:
                raise ValueError
        except ValueError:
            shown = line[:80].decode("ascii", errors="replace").strip()
            raise InputError(
                f"bad size line {shown!r}",
                file=path,
                expected="'rows columns entries': three whole numbers, entries <= rows * columns",
            ) from None
        n, first, last = _count_lines(f, path)
    if n != nnz:
        hint = "truncated, or lines missing?" if n < nnz else "extra lines?"
        raise InputError(
            f"the header announces {nnz} entries but the file holds {n} ({hint})",
            file=path,
            expected=f"{nnz} entry lines",
        )
    if nnz:
        for which, entry in (("first", first), ("last", last)):
            _check_entry(entry, rows=rows, cols=cols, field=field, path=path, which=which)
    return {"rows": rows, "cols": cols, "nnz": nnz, "field": field, "symmetry": symmetry}


def check_mtx(path: str | os.PathLike) -> dict[str, Any]:
    """Check a Matrix Market file (``.mtx`` or gzipped ``.mtx.gz``).

    Checks the header (``%%MatrixMarket matrix coordinate <field>
    <symmetry>``), the size line (rows, columns, entries) and that the number
    of entry lines equals the announced number of entries (a truncated or
    damaged file fails). The first and the last entry are parsed and their
    indices checked against the dimensions; the entries in between are
    counted, not parsed, so that large matrices are checked quickly. Comment
    lines (``%``) and blank lines are allowed. A ``.gz`` file must also be a
    complete gzip stream.

    Parameters
    ----------
    path
        The matrix file; it is read as gzip when its name ends with ``.gz``.

    Returns
    -------
    dict
        ``{"rows", "cols", "nnz", "field", "symmetry"}``.

    Raises
    ------
    InputError
        When the file is missing or any check fails; the message names the
        file and what was expected.
    """
    path = Path(path)
    return _check_mtx(path, gzipped=path.name.endswith(".gz"))


def _count_rows(path: Path) -> int:
    with _gzip_errors(path), _open_text_source(path, path.name.endswith(".gz")) as f:
        return _count_lines(f, path)[0]


def check_10x_triplet(
    matrix: str | os.PathLike,
    features: str | os.PathLike,
    barcodes: str | os.PathLike,
) -> dict[str, int]:
    """Check that a 10x matrix, its features and its barcodes belong together.

    The matrix is checked with :func:`check_mtx`; then its rows must equal the
    number of lines of ``features`` (``features.tsv`` or ``genes.tsv``) and
    its columns the number of lines of ``barcodes``. Each file may be gzipped
    (``.gz`` name) or not.

    Parameters
    ----------
    matrix
        ``matrix.mtx(.gz)``: features x barcodes.
    features
        ``features.tsv(.gz)`` or ``genes.tsv(.gz)``, one feature per line.
    barcodes
        ``barcodes.tsv(.gz)``, one barcode per line.

    Returns
    -------
    dict
        ``{"features", "barcodes", "nnz"}``.

    Raises
    ------
    InputError
        When a file is missing or malformed, or the dimensions disagree.
    """
    matrix, features, barcodes = Path(matrix), Path(features), Path(barcodes)
    info = check_mtx(matrix)
    n_features, n_barcodes = _count_rows(features), _count_rows(barcodes)
    problems = []
    if info["rows"] != n_features:
        problems.append(f"{info['rows']} rows but {n_features} features in {str(features)!r}")
    if info["cols"] != n_barcodes:
        problems.append(f"{info['cols']} columns but {n_barcodes} barcodes in {str(barcodes)!r}")
    if problems:
        if (info["rows"], info["cols"]) == (n_barcodes, n_features):
            problems.append("the matrix looks transposed (barcodes x features)")
        raise InputError(
            "; ".join(problems), file=matrix, expected=f"{n_features} rows (features) x {n_barcodes} columns (barcodes)"
        )
    return {"features": n_features, "barcodes": n_barcodes, "nnz": info["nnz"]}


def check_format(path: str | os.PathLike, name: str | None = None) -> None:
    """Check a file's format as its name says: Matrix Market for ``.mtx(.gz)``, gzip for ``.gz``.

    Parameters
    ----------
    path
        The file.
    name
        The name that decides the check (default: ``path``'s name); a
        download's ``.part`` file is checked under its final name.

    Raises
    ------
    InputError
        When the check fails; other files are not checked.
    """
    path = Path(path)
    name = path.name if name is None else name
    if name.endswith((".mtx", ".mtx.gz")):
        _check_mtx(path, gzipped=name.endswith(".gz"))
    elif name.endswith(".gz"):
        check_gzip(path)
