"""Reading sample sheets and count matrices (10x MTX, 10x HDF5, h5ad).

Every reader returns an :class:`~anndata.AnnData` with raw integer counts in
``X`` (CSR, float32), unique gene symbols as ``var_names``, the Ensembl IDs in
``var["gene_ids"]``, ``var["mt"]`` flagging mitochondrial genes, and
``obs_names`` of the form ``"<sample>_<barcode>"`` with the barcode in
``obs["barcode"]``.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import warnings
from io import StringIO
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from ._utils import InputError

__all__ = [
    "SAMPLE_SHEET_COLUMNS",
    "read_sample_sheet",
    "read_counts",
    "read_sample",
    "find_10x_mtx_files",
    "write_10x_mtx",
    "MilkcellsWarning",
]

log = logging.getLogger(__name__)

#: Required and optional sample-sheet columns; more columns are allowed and
#: carried into ``obs``.
SAMPLE_SHEET_COLUMNS = {
    "required": ("sample", "path"),
    "optional": ("donor", "batch", "source", "days_postpartum", "chemistry", "accession"),
}

_SAMPLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class MilkcellsWarning(UserWarning):
    """A documented warning: the input is unusual but the run can go on."""


def read_sample_sheet(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a sample sheet (TSV).

    Parameters
    ----------
    path
        Tab-separated file with the columns ``sample`` and ``path``, and
        optionally ``donor``, ``batch``, ``source`` (``milk`` or ``tissue``)
        and ``days_postpartum``; further columns are kept.

    Returns
    -------
    The sheet indexed by ``sample``, with ``donor`` and ``batch`` defaulting to
    the sample name, ``source`` to ``"milk"`` and ``days_postpartum`` as float
    (NaN where unknown).

    Raises
    ------
    InputError
        On a missing file, missing columns, an empty or duplicated sample
        name (also names differing only in letter case), an empty path or a
        non-numeric ``days_postpartum``. Only whole lines starting with ``#``
        are comments; a ``#`` inside a field is kept. Two samples pointing at
        one input give a :class:`MilkcellsWarning`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("sample sheet not found", file=path, expected="a tab-separated file")
    # Only whole lines starting with '#' are comments: pandas' comment="#" would
    # also cut "data/run#2/m.h5ad" to "data/run" without a word.
    kept, line_numbers = [], []
    for number, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        kept.append(text)
        line_numbers.append(number)
    if not kept:
        raise InputError("sample sheet is empty", file=path)
    try:
        df = pd.read_csv(StringIO("\n".join(kept) + "\n"), sep="\t", dtype=str,
                         keep_default_na=False)
    except pd.errors.ParserError as e:
        raise InputError(f"cannot parse the sample sheet: {e}", file=path,
                         expected="tab-separated columns, the same number on every line") from None
    # file line of each row, for messages (a quoted field spanning lines breaks the mapping)
    rows_from = line_numbers[1:]
    if len(rows_from) != len(df):
        rows_from = list(range(2, len(df) + 2))
    df.columns = [c.strip() for c in df.columns]
    for col in SAMPLE_SHEET_COLUMNS["required"]:
        if col not in df.columns:
            raise InputError(
                f"missing column {col!r}; columns found: {list(df.columns)}",
                file=path,
                field=col,
                expected="tab-separated columns 'sample' and 'path'",
            )
    if df.empty:
        raise InputError("sample sheet lists no samples", file=path)
    known = SAMPLE_SHEET_COLUMNS["required"] + SAMPLE_SHEET_COLUMNS["optional"]
    for col in df.columns:
        if col in known:
            continue
        near = difflib.get_close_matches(col.lower(), [k for k in known if k not in df.columns], n=1, cutoff=0.75)
        if near:
            raise InputError(
                f"unknown column {col!r}; did you mean {near[0]!r}?",
                file=path,
                field=col,
                expected=f"columns among {list(known)} (other columns are carried into obs)",
            )
    extra = [c for c in df.columns if c not in known]
    if extra:
        warnings.warn(
            f"file {str(path)!r}: columns {extra} are not milkcells columns; they are carried into obs as they are",
            MilkcellsWarning,
            stacklevel=2,
        )
    df = df.apply(lambda s: s.str.strip())
    for i, row in df.iterrows():
        line = rows_from[i]
        name = row["sample"]
        if not name:
            raise InputError(f"empty sample name on line {line}", file=path, field="sample")
        if not _SAMPLE_NAME.match(name):
            raise InputError(
                f"sample name {name!r} on line {line} has unsupported characters",
                file=path,
                sample=name,
                field="sample",
                expected="letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
        if not row["path"]:
            raise InputError(f"empty path on line {line}", file=path, sample=name, field="path")
    dup = df["sample"][df["sample"].duplicated()].unique()
    if len(dup):
        raise InputError(
            f"duplicated sample names: {list(dup)}", file=path, field="sample", expected="unique names"
        )
    folded = df["sample"].str.casefold()
    clash = df.loc[folded.duplicated(keep=False), "sample"]
    if len(clash):
        first = clash[folded[clash.index] == folded[clash.index[0]]]
        raise InputError(
            f"sample names differ only in letter case: {list(first)}; their outputs "
            "(results/samples/<sample>/) would overwrite each other on a case-insensitive "
            "file system",
            file=path,
            sample=first.iloc[0],
            field="sample",
            expected="names that differ in more than letter case",
        )
    _warn_shared_paths(df, path)
    for col in ("donor", "batch"):
        if col not in df.columns:
            df[col] = df["sample"]
        df[col] = df[col].where(df[col] != "", df["sample"])
    if "source" not in df.columns:
        df["source"] = "milk"
    df["source"] = df["source"].replace("", "milk")
    bad_source = set(df["source"]) - {"milk", "tissue"}
    if bad_source:
        raise InputError(
            f"unknown source {sorted(bad_source)}", file=path, field="source", expected="'milk' or 'tissue'"
        )
    if "days_postpartum" not in df.columns:
        df["days_postpartum"] = ""
    days = pd.to_numeric(df["days_postpartum"].mask(df["days_postpartum"] == ""), errors="coerce")
    bad = df.loc[days.isna() & (df["days_postpartum"] != ""), ["sample", "days_postpartum"]]
    if len(bad):
        s, v = bad.iloc[0]
        raise InputError(
            f"days_postpartum {v!r} is not a number",
            file=path,
            sample=s,
            field="days_postpartum",
            expected="a number of days, or empty when unknown",
        )
    if (days < 0).any():
        s = df.loc[days < 0, "sample"].iloc[0]
        raise InputError("days_postpartum is negative", file=path, sample=s, field="days_postpartum")
    df["days_postpartum"] = days.astype(float)
    return df.set_index("sample", drop=False)


def _warn_shared_paths(df: pd.DataFrame, sheet: Path) -> None:
    """Warn when several samples point at one input (after resolving ``./``, ``..`` and links)."""
    where = df["path"].map(lambda p: os.path.normcase(os.path.realpath(os.path.expanduser(p))))
    for _, group in df.groupby(where, sort=False)["sample"]:
        if len(group) > 1:
            paths = sorted(set(df.loc[group.index, "path"]))
            warnings.warn(
                f"file {str(sheet)!r}, field 'path': samples {list(group)} all point at "
                f"{paths[0]!r}"
                + (f" (written {paths})" if len(paths) > 1 else "")
                + "; each will be read from the same input, so its cells are counted "
                "more than once (expected one input per sample)",
                MilkcellsWarning,
                stacklevel=3,
            )


# --------------------------------------------------------------------------- 10x MTX


def find_10x_mtx_files(folder: str | os.PathLike, *, sample: str | None = None) -> dict[str, Path]:
    """Locate the matrix, features (or genes) and barcodes files of a 10x MTX folder.

    Accepts gzipped or plain files, ``features.tsv`` (Cell Ranger >= 3) or
    ``genes.tsv`` (Cell Ranger 2), with or without a common file prefix such as
    ``LMC1_matrix.mtx``.
    """
    folder = Path(folder)
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    found: dict[str, Path] = {}
    for key, stems in (
        ("matrix", ("matrix.mtx",)),
        ("features", ("features.tsv", "genes.tsv")),
        ("barcodes", ("barcodes.tsv",)),
    ):
        hits = [
            p
            for name, p in sorted(files.items())
            for stem in stems
            if name.endswith(stem) or name.endswith(stem + ".gz")
        ]
        if not hits:
            raise InputError(
                f"no {key} file in the 10x folder (found {sorted(files)})",
                file=folder,
                sample=sample,
                expected=" or ".join(f"[prefix]{s}[.gz]" for s in stems),
            )
        if len(hits) > 1:
            raise InputError(
                f"several {key} files: {[h.name for h in hits]}",
                file=folder,
                sample=sample,
                expected="one 10x sample per folder",
            )
        found[key] = hits[0]
    return found


def _read_10x_table(path: Path, sample: str | None, *, field: str, expected: str) -> pd.DataFrame:
    """Read a headerless 10x ``features``/``barcodes`` TSV, with errors that say which and why."""
    try:
        return pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError(f"the {field} file is empty", file=path, sample=sample, field=field,
                         expected=expected) from None
    except Exception as e:  # noqa: BLE001 - reported with context
        raise InputError(f"cannot read the {field} file: {e}", file=path, sample=sample,
                         field=field, expected=expected) from e


def _read_10x_mtx(folder: Path, sample: str | None) -> ad.AnnData:
    files = find_10x_mtx_files(folder, sample=sample)
    try:
        mat = scipy.io.mmread(files["matrix"])
    except Exception as e:  # noqa: BLE001 - reported with context
        raise InputError(
            f"cannot read Matrix Market file: {e}", file=files["matrix"], sample=sample
        ) from e
    mat = sp.csr_matrix(mat.T)  # genes x barcodes -> barcodes x genes
    feats = _read_10x_table(
        files["features"], sample, field="features",
        expected=f"one row per gene (gene ID, symbol, feature type), {mat.shape[1]} rows "
        "to match the matrix",
    )
    bcs = _read_10x_table(
        files["barcodes"], sample, field="barcodes",
        expected=f"one cell barcode per line, {mat.shape[0]} lines to match the matrix",
    )[0]
    if mat.shape[1] != len(feats):
        raise InputError(
            f"matrix has {mat.shape[1]} genes but the features file {len(feats)} rows",
            file=files["matrix"],
            sample=sample,
            expected="matching gene counts",
        )
    if mat.shape[0] != len(bcs):
        raise InputError(
            f"matrix has {mat.shape[0]} barcodes but the barcodes file {len(bcs)} rows",
            file=files["matrix"],
            sample=sample,
            expected="matching barcode counts",
        )
    gene_ids = feats[0].to_numpy()
    symbols = feats[1].to_numpy() if feats.shape[1] > 1 else gene_ids
    ftype = feats[2].to_numpy() if feats.shape[1] > 2 else np.full(len(feats), "Gene Expression")
    with warnings.catch_warnings():
        # duplicated names are checked (barcodes) or made unique (genes) by read_counts
        warnings.filterwarnings("ignore", message=".* names are not unique", category=UserWarning)
        adata = ad.AnnData(
            X=mat,
            obs=pd.DataFrame(index=pd.Index(bcs.to_numpy(), name=None)),
            var=pd.DataFrame({"gene_ids": gene_ids, "feature_types": ftype}, index=symbols),
        )
    adata.uns["milkcells_source_file"] = str(files["matrix"])
    return adata


def write_10x_mtx(adata: ad.AnnData, folder: str | os.PathLike, *, prefix: str = "", gzip: bool = True) -> None:
    """Write counts as a Cell Ranger >= 3 style MTX folder (for fixtures and exports)."""
    import gzip as _gz

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gzip else ""
    opener = _gz.open if gzip else open
    gene_ids = adata.var["gene_ids"] if "gene_ids" in adata.var else adata.var_names
    ftype = adata.var["feature_types"] if "feature_types" in adata.var else "Gene Expression"
    feats = pd.DataFrame({"id": np.asarray(gene_ids), "name": adata.var_names, "type": ftype})
    with opener(folder / f"{prefix}features.tsv{ext}", "wt") as fh:
        feats.to_csv(fh, sep="\t", header=False, index=False)
    barcodes = adata.obs["barcode"] if "barcode" in adata.obs else adata.obs_names
    with opener(folder / f"{prefix}barcodes.tsv{ext}", "wt") as fh:
        fh.write("\n".join(map(str, barcodes)) + "\n")
    X = sp.csr_matrix(adata.X).T.tocoo()
    X.data = np.rint(X.data).astype(np.int64)
    with opener(folder / f"{prefix}matrix.mtx{ext}", "wb") as fh:
        scipy.io.mmwrite(fh, X, field="integer")


# --------------------------------------------------------------------------- generic


def read_counts(path: str | os.PathLike, *, sample: str | None = None) -> ad.AnnData:
    """Read one sample's count matrix, whatever its format.

    Parameters
    ----------
    path
        A 10x MTX folder, a 10x ``.h5`` file or an ``.h5ad`` file (counts in
        ``X``, or in ``layers["counts"]`` when present).
    sample
        Sample name, used in error messages.

    Returns
    -------
    AnnData with raw counts in ``X`` (CSR), the Gene Expression features only,
    and barcodes as ``obs_names``.

    Raises
    ------
    InputError
        On a missing or unreadable input, empty ``barcodes``/``features`` files,
        no Gene Expression features, duplicated barcodes, or values that are
        not raw counts (negative, fractional, or rounded log-normalised).
    """
    path = Path(path)
    if not path.exists():
        raise InputError("input not found", file=path, sample=sample, field="path",
                         expected="a 10x MTX folder, a 10x .h5 or an .h5ad file")
    field = "matrix"
    where = path
    if path.is_dir():
        adata = _read_10x_mtx(path, sample)
        where = Path(adata.uns.get("milkcells_source_file", path))
    elif path.name.endswith(".h5ad"):
        adata = ad.read_h5ad(path)
        field = "X"
        if "counts" in adata.layers:
            adata.X = adata.layers["counts"]
            field = "layers['counts']"
        adata.layers.clear()
        adata.X = sp.csr_matrix(adata.X)
        if "gene_ids" not in adata.var:
            adata.var["gene_ids"] = adata.var_names.to_numpy()
    elif path.name.endswith(".h5"):
        import scanpy as sc

        try:
            # all features: the Gene Expression filter below is shared by every format
            adata = sc.read_10x_h5(path, gex_only=False)
        except Exception as e:  # noqa: BLE001 - reported with context
            raise InputError(f"cannot read 10x HDF5: {e}", file=path, sample=sample) from e
        adata.X = sp.csr_matrix(adata.X)
    else:
        raise InputError(
            "unrecognised input format",
            file=path,
            sample=sample,
            field="path",
            expected="a 10x MTX folder, a 10x .h5 or an .h5ad file",
        )
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(
            f"matrix is empty ({adata.n_obs} barcodes x {adata.n_vars} genes)",
            file=where,
            sample=sample,
            field=field,
            expected="at least one barcode and one gene",
        )
    if "feature_types" in adata.var:
        types = adata.var["feature_types"].astype(str).str.strip()
        gex = types.isin(_GEX_TYPES)
        if not gex.any():
            found = types.value_counts()
            raise InputError(
                f"no Gene Expression features among {adata.n_vars} features (feature types: "
                + ", ".join(f"{t!r} x{n}" for t, n in found.items())
                + ")",
                file=where,
                sample=sample,
                field="feature_types",
                expected="at least one feature of type 'Gene Expression' (an RNA count matrix, "
                "not antibody, CRISPR or multiplexing features alone)",
            )
        if not gex.all():
            adata = adata[:, gex.to_numpy()].copy()
    _check_counts(adata, where, sample, field=field)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".* names are not unique", category=UserWarning)
        adata.var_names = adata.var_names.astype(str)
        adata.var_names_make_unique()
    adata.obs_names = adata.obs_names.astype(str)
    adata.X = adata.X.astype(np.float32)
    return adata


#: ``feature_types`` values read as RNA (empty or missing: files without the column)
_GEX_TYPES = ("Gene Expression", "nan", "")


def _check_counts(adata: ad.AnnData, path: Path, sample: str | None, *, field: str = "X") -> None:
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(
            f"matrix is empty ({adata.n_obs} barcodes x {adata.n_vars} genes)",
            file=path,
            sample=sample,
            field=field,
            expected="at least one barcode and one gene",
        )
    dup = adata.obs_names[adata.obs_names.duplicated()]
    if len(dup):
        raise InputError(
            f"{len(dup)} duplicated barcodes, first {dup[0]!r}",
            file=path,
            sample=sample,
            field="barcodes",
            expected="unique barcodes",
        )
    X = adata.X
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if data.size and (not np.all(np.isfinite(data)) or np.any(data < 0)):
        raise InputError(
            "counts contain negative or non-finite values",
            file=path,
            sample=sample,
            field=field,
            expected="raw non-negative integer UMI counts",
        )
    if data.size and np.any(data != np.round(data)):
        frac = float(np.mean(data != np.round(data)))
        raise InputError(
            f"counts are not integers ({frac:.1%} of stored values have a fraction); "
            "this looks like normalised data",
            file=path,
            sample=sample,
            field=field,
            expected="raw integer UMI counts",
        )
    if float(data.sum()) == 0:
        raise InputError("matrix holds no counts", file=path, sample=sample, field=field,
                         expected="raw UMI counts")
    looks_log = _rounded_log_normalised(X)
    if looks_log is not None:
        raise InputError(
            f"values look like rounded log-normalised data, not counts: {looks_log}",
            file=path,
            sample=sample,
            field=field,
            expected="raw integer UMI counts (for an h5ad with normalised X, put the raw counts "
            "in layers['counts'])",
        )


#: Largest value rounded log-normalised data can hold: log1p(1e6) = 13.8 (CPM),
#: log2(1 + 1e6) = 19.9; natural-log CP10k stays <= 9.2.
_LOG_MAX = 20
#: At least this many non-empty barcodes are needed to judge.
_LOG_MIN_CELLS = 10
#: 90th / 10th percentile of the per-cell back-transformed totals below which
#: the totals are "the same in every cell", i.e. normalised.
_LOG_SPREAD = 4.0


def _rounded_log_normalised(X) -> str | None:
    """Why integer ``X`` looks like rounded ``log(1 + normalised counts)``, or None.

    Normalisation makes every cell's total the same target (1e4, 1e6 or the
    median library size); ``log1p`` then keeps every value small. Rounding
    (or truncating) the logs moves each value by at most 0.5 (1), i.e. each
    back-transformed value by a factor of e**0.5 ~ 1.65 (2.7), and over a
    cell's genes these errors largely average out. So rounded log data show

    1. a small largest value (<= 9 for log1p CP10k, <= 14 for log1p CPM,
       <= 20 for log2(1 + CPM)),
    2. back-transformed totals ``S = sum(base**x - 1)`` over a cell's genes,
       in the right base (e or 2), about the same in every cell: on simulated
       milk their 90th/10th percentile ratio is 1.1-1.9 in base e for CP10k,
       CPM or median targets, rounded or floored, on called cells and on whole
       raw matrices (droplets holding a few genes are the noisiest), and
    3. ``S`` more uniform than the plain per-cell sums ``sum(x)``, which still
       grow with depth because deeper cells have more detected genes.

    Counts fail 2 and 3. Under counts ``sum(x)`` is the library size, and
    ``S`` is a convex, increasing function of depth (``E[e**c - 1]`` grows
    exponentially with a gene's mean), so ``S`` always varies more than the
    library sizes do: its ratio is > 700 on the same simulated samples thinned
    to 0.5-30 % of their UMIs or kept with all their empty droplets (> 1e5 on
    called cells), and still above the library-size ratio on synthetic counts
    with no depth variation at all (homogeneous Poisson matrices, where ``S``
    alone can look flat). Values alone do not separate the two: deep log
    data contain 1s, shallow counts stay below 20. What passes: log data with
    no depth variation to begin with (synthetic), and data normalised to a
    tiny target (values 0-2), which cannot be told from sparse counts.
    """
    X = sp.csr_matrix(X)
    if X.nnz == 0 or X.max() > _LOG_MAX:
        return None
    nonempty = np.diff(X.indptr) > 0
    if int(nonempty.sum()) < _LOG_MIN_CELLS:
        return None
    data = X.data.astype(np.float64)

    def spread(values: np.ndarray) -> tuple[float, float]:
        q10, q50, q90 = np.quantile(values, [0.1, 0.5, 0.9])
        return (q90 / q10 if q10 > 0 else np.inf), q50

    sums, _ = spread(np.asarray(X.sum(axis=1), dtype=np.float64).ravel()[nonempty])
    for base, name in ((np.e, "expm1(x)"), (2.0, "2**x - 1")):
        back = sp.csr_matrix((np.power(base, data) - 1.0, X.indices, X.indptr), shape=X.shape)
        ratio, median = spread(np.asarray(back.sum(axis=1)).ravel()[nonempty])
        if ratio < min(_LOG_SPREAD, sums):
            return (
                f"largest value {X.max():g}, and every barcode's sum of {name} is about "
                f"{median:.3g} (90th/10th percentile ratio {ratio:.2f}, against {sums:.2f} for the "
                "values' own sums), as after normalising each cell to a fixed total; the totals of "
                "raw counts follow sequencing depth"
            )
    return None


def read_sample(
    path: str | os.PathLike,
    *,
    sample: str,
    metadata: dict | None = None,
) -> ad.AnnData:
    """Read one sample and attach its sample-sheet metadata to ``obs``.

    Parameters
    ----------
    path
        Passed to :func:`read_counts`.
    sample
        Sample name; ``obs_names`` become ``"<sample>_<barcode>"``.
    metadata
        Sample-sheet fields (``donor``, ``batch``, ``source``,
        ``days_postpartum``, ...) written as constant ``obs`` columns; columns
        already present in an h5ad's ``obs`` (for example author labels) are
        kept.

    Returns
    -------
    AnnData with ``obs["sample"]``, ``obs["barcode"]``, the metadata columns,
    ``var["mt"]`` and ``var["ribo"]``; ``uns["milkcells"]["ingest"]`` records
    the source file.
    """
    adata = read_counts(path, sample=sample)
    adata.obs["barcode"] = adata.obs_names.to_numpy()
    adata.obs_names = [f"{sample}_{b}" for b in adata.obs["barcode"]]
    adata.obs["sample"] = sample
    for key, value in (metadata or {}).items():
        if key in ("sample", "path"):
            continue
        adata.obs[key] = np.nan if value is None else value
    for col in ("sample", "donor", "batch", "source"):
        if col in adata.obs:
            adata.obs[col] = adata.obs[col].astype(str).astype("category")
    from .genes import is_mitochondrial, is_ribosomal  # the one definition of these flags
    adata.var["mt"] = is_mitochondrial(adata.var_names)
    adata.var["ribo"] = is_ribosomal(adata.var_names)
    if not adata.var["mt"].any():
        warnings.warn(
            f"sample {sample!r}, file {str(path)!r}: no mitochondrial genes (symbols starting "
            "with 'MT-'); the mitochondrial QC filter is skipped for this sample",
            MilkcellsWarning,
            stacklevel=2,
        )
    adata.uns["milkcells"] = {"ingest": {"params": {"path": str(path), "sample": sample}}}
    log.info("%s: read %d barcodes x %d genes from %s", sample, adata.n_obs, adata.n_vars, path)
    return adata
