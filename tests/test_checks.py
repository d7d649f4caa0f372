"""milkcells.checks: gzip streams, Matrix Market files and 10x triplets."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from milkcells import InputError
from milkcells import checks as ck

TINY = Path(__file__).parent / "data" / "archive" / "tiny10x"


def _gz(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


MTX = "%%MatrixMarket matrix coordinate integer general\n% a comment\n3 2 3\n1 1 5\n3 2 1\n2 1 4\n"


@pytest.mark.parametrize("gz", [False, True])
def test_check_mtx_accepts_valid_files(tmp_path, gz):
    path = tmp_path / ("m.mtx.gz" if gz else "m.mtx")
    text = MTX + "\n"  # a trailing blank line is allowed
    path.write_bytes(_gz(text) if gz else text.encode())
    assert ck.check_mtx(path) == {"rows": 3, "cols": 2, "nnz": 3, "field": "integer", "symmetry": "general"}
    assert ck.check_mtx(TINY / "matrix.mtx.gz")["nnz"] == 6


def test_check_mtx_counts_large_files_across_blocks(tmp_path):
    n = 300_000  # > 1 MiB of text: counted over several blocks
    rng = np.random.default_rng(0)
    body = "".join(f"{i} {j} 1\n" for i, j in zip(rng.integers(1, 1000, n), rng.integers(1, 500, n), strict=True))
    path = tmp_path / "big.mtx"
    path.write_text(f"%%MatrixMarket matrix coordinate integer general\n1000 500 {n}\n{body[:-1]}")
    assert ck.check_mtx(path)["nnz"] == n  # no final newline: the last line still counts
    path.write_text(f"%%MatrixMarket matrix coordinate integer general\n1000 500 {n}\n\n{body}\n\n")
    assert ck.check_mtx(path)["nnz"] == n


def test_line_counting_across_block_boundaries(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    pieces = [b"1 1 1", b"", b"  ", b"\r", b"22 3 4\r", b"\t"]
    path = tmp_path / "lines.txt"
    for block in (1, 2, 3, 7, 64):
        monkeypatch.setattr(ck, "_READ_BLOCK", block)
        for _ in range(30):
            lines = [pieces[i] for i in rng.integers(0, len(pieces), rng.integers(0, 25))]
            text = b"\n".join(lines) + [b"", b"\n", b"\n\n"][rng.integers(0, 3)]
            full = [ln.split() for ln in text.split(b"\n") if ln.strip()]
            path.write_bytes(text)
            with open(path, "rb") as f:
                n, first, last = ck._count_lines(f, path)
            assert n == len(full), (block, text)
            if full:
                assert (first.split(), last.split()) == (full[0], full[-1]), (block, text)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("%%MatrixMarket matrix array real general\n2 2\n1\n2\n3\n4\n", "format 'array'"),
        ("%MatrixMarket matrix coordinate real general\n1 1 1\n1 1 1\n", "not a Matrix Market"),
        ("gene\tcount\nA\t1\n", "not a Matrix Market header"),
        ("%%MatrixMarket matrix coordinate float general\n1 1 1\n1 1 1\n", "unknown Matrix Market"),
        (MTX.replace("2 1 4\n", ""), r"announces 3 entries but the file holds 2 \(truncated"),
        (MTX + "1 2 3\n", r"holds 4 \(extra lines"),
        (MTX.replace("3 2 3\n", "3 2\n"), "bad size line"),
        (MTX.replace("2 1 4\n", "2 7 4\n"), "malformed last entry '2 7 4'"),
        (MTX.replace("1 1 5\n", "1 1 five\n"), "malformed first entry"),
    ],
)
def test_check_mtx_rejects_broken_files(tmp_path, text, match):
    path = tmp_path / "m.mtx"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as err:
        ck.check_mtx(path)
    assert str(path) in str(err.value)


def test_check_mtx_and_gzip_reject_truncated_gzip(tmp_path):
    raw = (TINY / "matrix.mtx.gz").read_bytes()
    path = tmp_path / "matrix.mtx.gz"
    path.write_bytes(raw[: len(raw) - 10])
    with pytest.raises(InputError, match="truncated gzip"):
        ck.check_mtx(path)
    with pytest.raises(InputError, match="truncated gzip"):
        ck.check_gzip(path)
    (tmp_path / "plain.gz").write_bytes(b"hello")
    with pytest.raises(InputError, match="not a gzip file"):
        ck.check_gzip(tmp_path / "plain.gz")
    features = (TINY / "features.tsv.gz").read_bytes()
    assert ck.check_gzip(TINY / "features.tsv.gz") == len(gzip.decompress(features))


def test_check_10x_triplet(tmp_path):
    m, f, b = TINY / "matrix.mtx.gz", TINY / "features.tsv.gz", TINY / "barcodes.tsv.gz"
    assert ck.check_10x_triplet(m, f, b) == {"features": 5, "barcodes": 4, "nnz": 6}
    plain = tmp_path / "genes.tsv"
    plain.write_bytes(gzip.decompress(f.read_bytes()))
    assert ck.check_10x_triplet(m, plain, b)["features"] == 5

    short = tmp_path / "features.tsv"
    short.write_text("".join(plain.read_text().splitlines(keepends=True)[:4]))
    with pytest.raises(InputError, match="5 rows but 4 features") as err:
        ck.check_10x_triplet(m, short, b)
    assert str(m) in str(err.value) and "expected 4 rows (features) x 4 columns" in str(err.value)

    extra = tmp_path / "barcodes.tsv.gz"
    extra.write_bytes(_gz(gzip.decompress(b.read_bytes()).decode() + "TTTTAAAA-1\n"))
    with pytest.raises(InputError, match="4 columns but 5 barcodes"):
        ck.check_10x_triplet(m, f, extra)

    swapped = tmp_path / "swapped.tsv"
    swapped.write_text("".join(f"B{i}\n" for i in range(5)))
    genes4 = tmp_path / "genes4.tsv"
    genes4.write_text("".join(f"G{i}\n" for i in range(4)))
    with pytest.raises(InputError, match="looks transposed"):
        ck.check_10x_triplet(m, genes4, swapped)

    with pytest.raises(InputError, match="file not found"):
        ck.check_10x_triplet(m, tmp_path / "nope.tsv", b)
