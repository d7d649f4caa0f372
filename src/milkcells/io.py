"""Reading count matrices (10x MTX, 10x HDF5, h5ad); what a 10x file set is; what raw counts are.

(The sample sheet is read by :mod:`milkcells.samplesheet`.)

Every reader returns an :class:`~anndata.AnnData` with raw integer counts in
``X`` (CSR, float32), unique gene symbols as ``var_names``, the Ensembl IDs in
``var["gene_ids"]``, ``var["mt"]`` flagging mitochondrial genes, and
``obs_names`` of the form ``"<sample>_<barcode>"`` with the barcode in
``obs["barcode"]``.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from ._utils import InputError, MilkcellsWarning
from .genes import flag_genes

__all__ = [
    "read_counts",
    "read_sample",
    "find_10x_mtx_files",
    "classify_10x_files",
    "check_integer_counts",
    "not_counts",
    "write_10x_mtx",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- 10x file sets

_MTX_FILE = re.compile(
    r"^(?P<prefix>.*?)(?P<stem>matrix\.mtx|features\.tsv|genes\.tsv|barcodes\.tsv)(?:\.gz)?$",
    re.IGNORECASE,
)
_MTX_ROLES = ("matrix", "features", "barcodes")
_RAW_TOKEN = re.compile(r"(?:^|[._-])raw(?:[._-]|$)", re.IGNORECASE)


def _mtx_role(name: str) -> tuple[str, str] | None:
    """``(role, prefix)`` of a 10x MTX file name (role ``matrix``, ``features`` or ``barcodes``), else None."""
    m = _MTX_FILE.match(name)
    if not m:
        return None
    stem = m.group("stem").lower()
    return {"matrix.mtx": "matrix", "barcodes.tsv": "barcodes"}.get(stem, "features"), m.group("prefix")


def _file_name(item) -> str:
    if isinstance(item, Mapping):
        if "name" not in item:
            raise InputError(
                f"file entry {dict(item)!r} has no 'name'",
                field="files",
                expected="file names or {'name': ..., 'url': ...} dicts",
            )
        item = item["name"]
    return Path(str(item)).name if "/" in str(item) or "\\" in str(item) else str(item)


def _prefer_raw(candidates: list[str], *, key=lambda c: c) -> list[str]:
    raw = [c for c in candidates if _RAW_TOKEN.search(key(c))]
    return raw if len(raw) == 1 else candidates


def classify_10x_files(filenames: Iterable, *, sample: str | None = None) -> dict[str, str]:
    """Recognise one sample's 10x Genomics files among its processed files.

    A 10x MTX set is ``[prefix]matrix.mtx``, ``[prefix]features.tsv`` (Cell
    Ranger >= 3) or ``[prefix]genes.tsv`` (Cell Ranger 2) and
    ``[prefix]barcodes.tsv``, each optionally gzipped; the prefix is any text
    such as ``LMC1_`` (the names :func:`find_10x_mtx_files` finds in a folder).
    Rules, in order:

    1. exactly one file of each MTX role -> that set (prefixes may differ);
    2. else the files are grouped by prefix: one complete group -> it;
       several -> the one whose prefix has a ``raw`` token (``raw_``,
       ``_raw.``) if exactly one does, because milkcells calls cells itself
       from the unfiltered droplets; else an error;
    3. else a 10x feature-barcode ``.h5`` (one, or the single ``raw`` one);
    4. else a ``molecule_info.h5``, reported as format ``molecule_info``:
       it holds per-molecule data, not a count matrix, and milkcells cannot
       read it without first running Cell Ranger (``aggr``/``reanalyze``).

    Parameters
    ----------
    filenames
        File names (paths and URLs are reduced to their last component) or
        the ``{"name": ...}`` dicts of :func:`sdrf_samples`.
    sample
        Sample name for error messages.

    Returns
    -------
    ``{"format": "mtx", "matrix": ..., "features": ..., "barcodes": ...}``,
    ``{"format": "h5", "h5": ...}`` or
    ``{"format": "molecule_info", "molecule_info": ...}`` with the original
    file names.

    Raises
    ------
    InputError
        When no usable set is found: no file, an incomplete MTX set (the
        message names the missing role), or several candidate sets.
    """
    names = list(dict.fromkeys(_file_name(f) for f in filenames))
    expected = (
        "a 10x MTX set ([prefix]matrix.mtx[.gz], [prefix]features.tsv[.gz] or "
        "genes.tsv[.gz], [prefix]barcodes.tsv[.gz]) or a 10x feature-barcode .h5"
    )
    if not names:
        raise InputError("no processed data file listed", sample=sample, field="files", expected=expected)
    by_role: dict[str, list[str]] = defaultdict(list)
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    h5, molinfo = [], []
    for name in names:
        found = _mtx_role(name)
        if found:
            role, prefix = found
            by_role[role].append(name)
            groups[prefix][role].append(name)
        elif name.lower().endswith("molecule_info.h5"):
            molinfo.append(name)
        elif name.lower().endswith(".h5"):
            h5.append(name)

    if all(len(by_role.get(r, [])) == 1 for r in _MTX_ROLES):
        return {"format": "mtx", **{r: by_role[r][0] for r in _MTX_ROLES}}
    complete = [p for p, g in groups.items() if all(g.get(r) for r in _MTX_ROLES)]
    if complete:
        chosen = _prefer_raw(complete)
        if len(chosen) > 1:
            raise InputError(
                f"several 10x MTX sets (prefixes {chosen}) among {names}",
                sample=sample,
                field="files",
                expected="one MTX set per sample, or one marked 'raw'",
            )
        g = groups[chosen[0]]
        for r in _MTX_ROLES:
            if len(g[r]) > 1:
                raise InputError(
                    f"several {r} files with prefix {chosen[0]!r}: {g[r]}",
                    sample=sample,
                    field="files",
                    expected=expected,
                )
        if len(complete) > 1:
            log.info("sample %r: using the raw MTX set %r among %s", sample, chosen[0], complete)
        return {"format": "mtx", **{r: g[r][0] for r in _MTX_ROLES}}
    if h5:
        chosen = _prefer_raw(h5)
        if len(chosen) > 1:
            raise InputError(
                f"several 10x .h5 files: {h5}",
                sample=sample,
                field="files",
                expected="one .h5 per sample, or one marked 'raw'",
            )
        return {"format": "h5", "h5": chosen[0]}
    if molinfo:
        if len(molinfo) > 1:
            raise InputError(
                f"several molecule_info.h5 files: {molinfo}", sample=sample, field="files", expected="one per sample"
            )
        return {"format": "molecule_info", "molecule_info": molinfo[0]}
    if any(by_role.get(r) for r in _MTX_ROLES):
        missing = [r for r in _MTX_ROLES if not by_role.get(r)]
        have = sorted(n for r in _MTX_ROLES for n in by_role[r])
        raise InputError(
            f"incomplete 10x MTX set: no {' / '.join(missing) or 'consistent'} file (found {have})",
            sample=sample,
            field="files",
            expected=expected,
        )
    raise InputError(f"no 10x count files among {names}", sample=sample, field="files", expected=expected)


def find_10x_mtx_files(folder: str | os.PathLike, *, sample: str | None = None) -> dict[str, Path]:
    """Locate the matrix, features (or genes) and barcodes files of a 10x MTX folder.

    Accepts gzipped or plain files, ``features.tsv`` (Cell Ranger >= 3) or
    ``genes.tsv`` (Cell Ranger 2), with or without a common file prefix such as
    ``LMC1_matrix.mtx``: the file names of :func:`classify_10x_files`.
    """
    folder = Path(folder)
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    by_role: dict[str, list[Path]] = defaultdict(list)
    for name, p in sorted(files.items()):
        found = _mtx_role(name)
        if found:
            by_role[found[0]].append(p)
    found_files: dict[str, Path] = {}
    for key, stems in (
        ("matrix", ("matrix.mtx",)),
        ("features", ("features.tsv", "genes.tsv")),
        ("barcodes", ("barcodes.tsv",)),
    ):
        hits = by_role[key]
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
        found_files[key] = hits[0]
    return found_files


def _read_10x_table(path: Path, sample: str | None, *, field: str, expected: str) -> pd.DataFrame:
    """Read a headerless 10x ``features``/``barcodes`` TSV, with errors that say which and why."""
    try:
        return pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError(
            f"the {field} file is empty", file=path, sample=sample, field=field, expected=expected
        ) from None
    except Exception as e:  # noqa: BLE001 - reported with context
        raise InputError(
            f"cannot read the {field} file: {e}", file=path, sample=sample, field=field, expected=expected
        ) from e


def _read_10x_mtx(folder: Path, sample: str | None) -> ad.AnnData:
    files = find_10x_mtx_files(folder, sample=sample)
    try:
        mat = scipy.io.mmread(files["matrix"])
    except Exception as e:  # noqa: BLE001 - reported with context
        raise InputError(f"cannot read Matrix Market file: {e}", file=files["matrix"], sample=sample) from e
    mat = sp.csr_matrix(mat.T)  # genes x barcodes -> barcodes x genes
    feats = _read_10x_table(
        files["features"],
        sample,
        field="features",
        expected=f"one row per gene (gene ID, symbol, feature type), {mat.shape[1]} rows to match the matrix",
    )
    bcs = _read_10x_table(
        files["barcodes"],
        sample,
        field="barcodes",
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
        raise InputError(
            "input not found",
            file=path,
            sample=sample,
            field="path",
            expected="a 10x MTX folder, a 10x .h5 or an .h5ad file",
        )
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


def not_counts(values) -> np.ndarray:
    """Which values cannot be raw counts: non-finite, negative or fractional (a boolean array)."""
    values = np.asarray(values)
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(values) | (values < 0) | (values != np.round(values))


def check_integer_counts(X, *, file, sample: str | None = None, field: str = "X") -> None:
    """Check that a matrix holds raw counts: finite, non-negative, whole numbers, not all zero.

    Parameters
    ----------
    X
        Dense or sparse matrix (only its stored values are looked at).
    file, sample, field
        Where the matrix comes from, for the message.

    Raises
    ------
    InputError
        Naming the file, sample and field, on negative or non-finite values,
        fractions (normalised data) or a matrix without counts.
    """
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    bad = not_counts(data)
    if bad.any() and (not np.all(np.isfinite(data)) or np.any(data < 0)):
        raise InputError(
            "counts contain negative or non-finite values",
            file=file,
            sample=sample,
            field=field,
            expected="raw non-negative integer UMI counts",
        )
    if bad.any():
        frac = float(np.mean(bad))
        raise InputError(
            f"counts are not integers ({frac:.1%} of stored values have a fraction); this looks like normalised data",
            file=file,
            sample=sample,
            field=field,
            expected="raw integer UMI counts",
        )
    if float(data.sum()) == 0:
        raise InputError("matrix holds no counts", file=file, sample=sample, field=field, expected="raw UMI counts")


def _check_counts(adata: ad.AnnData, path: Path, sample: str | None, *, field: str = "X") -> None:
    """Unique barcodes and raw counts (the matrix is known not to be empty)."""
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
    check_integer_counts(X, file=path, sample=sample, field=field)
    looks_log = _rounded_log_normalised(X)
    if looks_log is not None:
        raise InputError(
            f"values look like rounded log-normalised data, not counts: {looks_log}",
            file=path,
            sample=sample,
            field=field,
            expected="raw integer UMI counts (for an h5ad with normalised X, put the raw counts in layers['counts'])",
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
        Sample-sheet fields (``donor``, ``batch``, ``sample_type``,
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
    for col in ("sample", "donor", "batch", "sample_type"):
        if col in adata.obs:
            adata.obs[col] = adata.obs[col].astype(str).astype("category")
    flag_genes(adata.var)
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
