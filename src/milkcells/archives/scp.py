"""Broad Single Cell Portal: an export (dense raw counts and cell metadata) imported from disk.

For Nyquist et al. 2022 (SCP1671: ``MIT_Milk_Study_Raw_counts.txt.gz`` and
``MIT_milk_study_metadata.csv.gz``), whose download needs a portal login, so
the user downloads the two files and :func:`prepare` imports them:
:func:`read_scp` reads them into one AnnData (the authors' labels in
``obs["author_label"]``), which is split into one h5ad per sample.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import warnings
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._utils import InputError, MilkcellsWarning, record_params
from ..io import not_counts
from ..samplesheet import MISSING
from ._common import counts_anndata, finish, require_columns, split_samples

__all__ = ["NAME", "CARRIES_AUTHOR_LABELS", "prepare", "local_inputs", "read_scp"]

log = logging.getLogger(__name__)

#: The archive's name in the registry and in the config (``dataset.archive``).
NAME = "scp"
#: The portal metadata holds the authors' cell labels (``obs["author_label"]``).
CARRIES_AUTHOR_LABELS = True


def prepare(
    out_dir: str | os.PathLike,
    *,
    counts: str | os.PathLike,
    metadata: str | os.PathLike,
    label_column: str = "General_Celltype",
    mirror: str | os.PathLike | None = None,
    retries: int = 5,
    backoff: float = 0.5,
) -> pd.DataFrame:
    """Import a Single Cell Portal export (Nyquist et al. 2022, SCP1671) as per-sample h5ad files.

    Parameters
    ----------
    out_dir
        Dataset folder (``samples/<sample>.h5ad``, ``manifest.tsv`` (empty), ``samples.tsv``).
    counts, metadata
        The raw-count table and the portal metadata file the user downloaded.
    label_column
        Metadata column with the authors' labels (kept as ``obs["author_label"]``).
    mirror, retries, backoff
        The archives' common options; unused here, since the files are local.

    Returns
    -------
    The sample sheet (one row per portal sample).
    """
    out_dir = Path(out_dir)
    adata = read_scp(counts, metadata, label_column=label_column)
    sheet = split_samples(adata, out_dir, sample_type="milk")
    return finish(sheet, [], out_dir)


def local_inputs(config: Mapping) -> list[str]:
    """The local files :func:`prepare` reads, given its settings ``config``: the count table and the metadata file."""
    return [config["counts"], config["metadata"]]


# --------------------------------------------------------------------------- reading the export


def _open_text(path: Path):
    """Open a plain or gzipped text file (detected from its first bytes)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _delimiter(line: str) -> str:
    """Tab when the line holds a tab, else comma."""
    return "\t" if "\t" in line else ","


def _read_scp_metadata(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read the portal metadata: (typed table indexed by cell name, {column: type}).

    The file holds a header row (``NAME`` first), a type row (``TYPE``, then
    ``group``/``numeric``) and one row per cell.
    """
    if not path.is_file():
        raise InputError("metadata file not found", file=path, expected="the portal metadata file")
    try:
        with _open_text(path) as fh:
            first_line = fh.readline()
            fh.seek(0)
            rows = csv.reader(fh, delimiter=_delimiter(first_line))
            header = [h.strip() for h in next(rows, [])]
            types = [t.strip() for t in next(rows, [])]
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise InputError(f"cannot read: {e}", file=path, expected="a UTF-8 text file, gzipped or not") from None
    sep = _delimiter(first_line)
    if not header or header[0].upper() != "NAME":
        raise InputError(
            f"first header cell is {header[:1]}",
            file=path,
            field="NAME",
            expected="the portal format: a header row starting with NAME",
        )
    if not types or types[0].upper() != "TYPE":
        raise InputError(
            f"second row starts with {types[:1]}",
            file=path,
            field="TYPE",
            expected="the portal format: a second row 'TYPE' then group/numeric per column",
        )
    if len(types) != len(header):
        raise InputError(
            f"{len(header)} column headers but {len(types)} TYPE entries",
            file=path,
            field="TYPE",
            expected="one type per column",
        )
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise InputError(f"duplicated column names {dup}", file=path, field=dup[0], expected="unique names")
    col_types = {}
    for h, t in zip(header[1:], types[1:], strict=True):
        if t.lower() not in ("group", "numeric"):
            raise InputError(f"column type {t!r}", file=path, field=h, expected="'group' or 'numeric'")
        col_types[h] = t.lower()
    try:
        raw = pd.read_csv(
            path,
            sep=sep,
            header=None,
            skiprows=2,
            names=header,
            dtype=str,
            keep_default_na=False,
            compression="gzip" if _is_gzip(path) else None,
        )
    except (pd.errors.ParserError, ValueError) as e:
        raise InputError(f"cannot parse: {e}", file=path, expected="one row per cell") from None
    names = raw[header[0]].str.strip()
    empty = (names.isna() | (names == "")).to_numpy()
    if empty.any():
        raise InputError(
            f"empty cell name on data row {int(np.flatnonzero(empty)[0]) + 1}",
            file=path,
            field="NAME",
            expected="a name for every cell",
        )
    dupn = names[names.duplicated()]
    if len(dupn):
        raise InputError(
            f"{len(dupn)} duplicated cell names, first {dupn.iloc[0]!r}",
            file=path,
            field="NAME",
            expected="unique cell names",
        )
    meta = pd.DataFrame(index=pd.Index(names.to_numpy(), name=None))
    for h, t in col_types.items():
        col = raw[h].to_numpy()
        if t == "numeric":
            text = pd.Series(col, dtype=object).str.strip()
            missing = text.isna() | text.str.lower().isin(MISSING)
            num = pd.to_numeric(text.mask(missing), errors="coerce")
            bad = num.isna() & ~missing
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise InputError(
                    f"value {col[i]!r} of cell {names.iloc[i]!r} is not a number",
                    file=path,
                    field=h,
                    expected="numbers (or NA) in a 'numeric' column",
                )
            meta[h] = num.to_numpy(dtype=float)
        else:
            meta[h] = pd.Categorical(col)
    return meta, col_types


def _read_dense_counts(path: Path, chunk_genes: int) -> tuple[sp.csr_matrix, list[str], list[str]]:
    """Genes x cells text table -> (cells x genes CSR float32, genes, cells), chunk by chunk."""
    if not path.is_file():
        raise InputError("counts file not found", file=path, expected="the dense genes x cells count table")
    try:
        with _open_text(path) as fh:
            first_line = fh.readline()
            second_line = fh.readline()
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise InputError(f"cannot read: {e}", file=path, expected="a UTF-8 text table, gzipped or not") from None
    sep = _delimiter(first_line)
    header = [c.strip() for c in next(csv.reader([first_line], delimiter=sep), [])]
    first_row = next(csv.reader([second_line], delimiter=sep), []) if second_line.strip() else []
    if not first_row:
        raise InputError("no gene row under the header", file=path, expected="one row per gene")
    if len(first_row) == len(header) + 1:  # R's write.table: no header cell above the gene names
        cells = header
    elif len(first_row) == len(header):
        cells = header[1:]
    else:
        raise InputError(
            f"header has {len(header)} cells but the first gene row {len(first_row)}",
            file=path,
            expected="a header of cell names (with or without a first 'GENE' cell)",
        )
    if not cells:
        raise InputError("no cell column", file=path, expected="one column per cell")
    seen: set[str] = set()
    dups = [c for c in cells if c in seen or seen.add(c)]
    if dups:
        raise InputError(
            f"{len(dups)} duplicated cell names in the header, first {dups[0]!r}",
            file=path,
            field="header",
            expected="unique cell names",
        )
    gene_col = "\x00gene"
    dtypes = defaultdict(lambda: np.float32, {gene_col: str})
    blocks, genes = [], []
    try:
        reader = pd.read_csv(
            path,
            sep=sep,
            header=None,
            skiprows=1,
            names=[gene_col, *cells],
            index_col=0,
            dtype=dtypes,
            chunksize=chunk_genes,
            keep_default_na=False,
            na_values=[""],
            compression="gzip" if _is_gzip(path) else None,
        )
        with reader:
            for chunk in reader:
                arr = chunk.to_numpy(dtype=np.float32)
                if not np.all(np.isfinite(arr)):
                    r, c = np.argwhere(~np.isfinite(arr))[0]
                    raise InputError(
                        f"missing or non-finite value for gene {chunk.index[r]!r}, cell {cells[c]!r}",
                        file=path,
                        field="counts",
                        expected="a count in every cell",
                    )
                bad = not_counts(arr)
                if bad.any():
                    r, c = np.argwhere(bad)[0]
                    raise InputError(
                        f"value {arr[r, c]!r} for gene {chunk.index[r]!r}, cell {cells[c]!r} "
                        "is not a non-negative integer; this looks like normalised data",
                        file=path,
                        field="counts",
                        expected="raw integer counts",
                    )
                blocks.append(sp.csr_matrix(arr))
                genes.extend(str(g) for g in chunk.index)
    except InputError:
        raise
    except (ValueError, pd.errors.ParserError) as e:
        raise InputError(
            f"cannot parse the count table: {e}",
            file=path,
            field="counts",
            expected="gene names then one integer per cell on every row",
        ) from None
    if not genes:
        raise InputError("count table has no gene row", file=path, expected="one row per gene")
    X = sp.vstack(blocks, format="csr").T.tocsr().astype(np.float32)
    return X, genes, list(cells)


def read_scp(
    counts_path: str | os.PathLike,
    metadata_path: str | os.PathLike,
    *,
    label_column: str = "General_Celltype",
    sample_column: str = "biosample_id",
    donor_column: str | None = "donor_id",
    days_column: str | None = "time_post_partum_days",
    sample_type: str = "milk",
    max_unmatched: float = 0.01,
    chunk_genes: int = 1000,
) -> ad.AnnData:
    """Read a Broad Single Cell Portal export: dense raw counts plus cell metadata.

    Made for Nyquist et al. 2022 (SCP1671: ``MIT_Milk_Study_Raw_counts.txt.gz``
    and ``MIT_milk_study_metadata.csv.gz``), whose download needs a portal
    login, so the files are imported from disk.

    **Counts**: a genes x cells text table, tab- or comma-separated (detected
    from the header line), gzipped or not (detected from the first bytes);
    the first column holds gene names and the header the cell names (with
    or without a first cell such as ``GENE`` above the gene names). It is
    read ``chunk_genes`` rows at a time and each chunk is stored sparse, so
    the dense matrix is never held whole. Values must be non-negative
    integers.

    **Metadata**: the portal's metadata format, comma- or tab-separated: a
    header row starting with ``NAME`` (cell names), then a row starting with
    ``TYPE`` giving ``group`` (categorical) or ``numeric`` for each column.
    The type row is dropped and used to type the columns: ``numeric``
    columns become floats (``NA``/empty -> NaN; any other non-number is an
    error), ``group`` columns categoricals.

    **Cells** present in one file but not the other: when they are at most
    ``max_unmatched`` of all cells named in either file, they are dropped
    with a :class:`~milkcells.MilkcellsWarning`; more is an error.

    Parameters
    ----------
    counts_path, metadata_path
        The two portal files.
    label_column
        Metadata column with the authors' cell labels -> ``obs["author_label"]``
        (Nyquist et al. label some cells ``removed``; they are kept).
    sample_column
        Metadata column naming each cell's sample -> ``obs["sample"]``.
    donor_column
        Metadata column naming the donor -> ``obs["donor"]`` (missing values
        fall back to the sample name); ``None`` to use the sample name.
    days_column
        Metadata column with days postpartum -> ``obs["days_postpartum"]``;
        ``None`` for none (NaN).
    sample_type
        ``"milk"`` or ``"tissue"``, written to ``obs["sample_type"]``.
    max_unmatched
        Largest tolerated fraction of unmatched cells (0 for strict).
    chunk_genes
        Gene rows parsed at a time.

    Returns
    -------
    AnnData (cells in count-file order x genes) with CSR float32 integer
    counts; ``obs``: every metadata column (typed), plus ``sample``,
    ``donor``, ``batch`` (= sample), ``sample_type``, ``days_postpartum``,
    ``barcode`` (the cell name without a leading ``<sample>_``) and
    ``author_label``; ``var``: unique symbols as names, the original symbol
    in ``gene_ids`` (the portal file has no Ensembl IDs), ``mt``, ``ribo``;
    ``uns["milkcells"]["ingest"]`` records the files.

    Raises
    ------
    InputError
        On a malformed file (see above), missing named columns, missing
        sample names, negative days, or too many unmatched cells.
    """
    counts_path, metadata_path = Path(counts_path), Path(metadata_path)
    if sample_type not in ("milk", "tissue"):
        raise InputError(f"sample_type {sample_type!r}", field="sample_type", expected="'milk' or 'tissue'")
    if not 0 <= max_unmatched < 1:
        raise InputError(f"max_unmatched {max_unmatched!r}", field="max_unmatched", expected="a fraction in [0, 1)")
    if int(chunk_genes) < 1:
        raise InputError(f"chunk_genes {chunk_genes!r}", field="chunk_genes", expected="a positive integer")
    meta, col_types = _read_scp_metadata(metadata_path)
    given = {
        "label_column": label_column,
        "sample_column": sample_column,
        "donor_column": donor_column,
        "days_column": days_column,
    }
    require_columns(meta.columns, given, file=metadata_path, kind="metadata")
    X, genes, cells = _read_dense_counts(counts_path, int(chunk_genes))

    cell_index = pd.Index(cells)
    in_meta = cell_index.isin(meta.index)
    only_counts = cell_index[~in_meta]
    only_meta = meta.index[~meta.index.isin(cell_index)]
    n_union = len(cell_index) + len(only_meta)
    n_bad = len(only_counts) + len(only_meta)
    if not in_meta.any():
        raise InputError(
            f"no cell of the count table is in the metadata (e.g. {cells[:2]} vs {list(meta.index[:2])})",
            file=metadata_path,
            field="NAME",
            expected="the same cell names in both files",
        )
    if n_bad:
        msg = (
            f"{len(only_counts)} cell(s) only in the counts (e.g. {list(only_counts[:3])}), "
            f"{len(only_meta)} only in the metadata (e.g. {list(only_meta[:3])})"
        )
        if n_bad / n_union > max_unmatched:
            raise InputError(
                f"{msg}: {n_bad / n_union:.1%} of {n_union} cells unmatched",
                file=metadata_path,
                field="NAME",
                expected=f"the same cells in both files (at most {max_unmatched:.1%} unmatched)",
            )
        warnings.warn(f"file {str(metadata_path)!r}: {msg}; dropping them", MilkcellsWarning, stacklevel=2)
        X = X[np.flatnonzero(in_meta)]
        cell_index = cell_index[in_meta]

    obs = meta.loc[cell_index].copy()
    for col in obs.columns:
        if col_types.get(col) == "group":
            obs[col] = obs[col].cat.remove_unused_categories()
    samples = obs[sample_column].astype(str).str.strip()
    bad = samples.str.lower().isin(MISSING)
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} cell(s) without a sample, first {samples.index[bad][0]!r}",
            file=metadata_path,
            field=sample_column,
            expected="a sample name for every cell",
        )
    if donor_column is not None:
        donors = obs[donor_column].astype(str).str.strip()
        no_donor = donors.str.lower().isin(MISSING)
        if no_donor.any():
            log.info("%s: %d cell(s) without a donor; using their sample name", metadata_path, int(no_donor.sum()))
        donors = donors.where(~no_donor, samples)
    else:
        donors = samples
    if days_column is not None:
        days_raw = obs[days_column]
        if col_types[days_column] == "numeric":
            days = days_raw.astype(float)
        else:
            text = days_raw.astype(str).str.strip()
            missing = text.str.lower().isin(MISSING)
            days = pd.to_numeric(text.mask(missing), errors="coerce")
            badd = days.isna() & ~missing
            if badd.any():
                raise InputError(
                    f"days {text[badd].iloc[0]!r} is not a number",
                    file=metadata_path,
                    sample=samples[badd].iloc[0],
                    field=days_column,
                    expected="a number of days, or NA",
                )
        if (days < 0).any():
            raise InputError(
                "negative days postpartum",
                file=metadata_path,
                sample=samples[days < 0].iloc[0],
                field=days_column,
                expected="days >= 0",
            )
    else:
        days = pd.Series(np.nan, index=obs.index)
    barcodes = [
        c[len(s) + 1 :] if c.startswith(s + "_") and len(c) > len(s) + 1 else c
        for c, s in zip(cell_index, samples, strict=True)
    ]
    obs["sample"] = pd.Categorical(samples.to_numpy())
    obs["donor"] = pd.Categorical(donors.to_numpy())
    obs["batch"] = obs["sample"]
    obs["sample_type"] = pd.Categorical([sample_type] * len(obs))
    obs["days_postpartum"] = days.to_numpy(dtype=float)
    obs["barcode"] = barcodes
    obs["author_label"] = pd.Categorical(obs[label_column].astype(object).to_numpy())
    obs.index = pd.Index([str(c) for c in cell_index])

    adata = counts_anndata(X, obs, genes, genes, file=counts_path)
    record_params(
        adata,
        "ingest",
        {
            "reader": "read_scp",
            "counts_path": str(counts_path),
            "metadata_path": str(metadata_path),
            "label_column": label_column,
            "sample_column": sample_column,
            "donor_column": donor_column,
            "days_column": days_column,
            "n_unmatched_dropped": n_bad,
        },
    )
    log.info("read SCP export: %d cells x %d genes, %d sample(s)", adata.n_obs, adata.n_vars, obs["sample"].nunique())
    return adata
