"""Public archive metadata -> milkcells sample sheets and AnnData.

Three public sources of human-milk single-cell data are supported. This module
only *builds lists of URLs* and *parses files already on disk*; downloading is
left to :mod:`milkcells.download`.

**BioStudies / ArrayExpress** (Twigger et al. 2022: E-MTAB-9841, E-MTAB-10855,
E-MTAB-10885). :func:`biostudies_files_url` and :func:`sdrf_url` give the
archive's ``Files/`` folder and the study's MAGE-TAB SDRF;
:func:`read_sdrf` reads the SDRF without losing its repeated column headers;
:func:`sdrf_samples` turns it into one row per sample with the sample's
processed files and their URLs; :func:`classify_10x_files` recognises a
sample's 10x files; :func:`sample_sheet_from_sdrf` writes the milkcells
sample sheet and :func:`sdrf_downloads` the list of files to fetch for it.

**Broad Single Cell Portal** (Nyquist et al. 2022, SCP1671; portal login
needed, so a local-file import). :func:`read_scp` reads the dense raw-count
table and the portal metadata file (whose second row gives the column types).

**CELLxGENE Discover**. :func:`cellxgene_dataset_url` builds the curation-API
metadata URL of a dataset, :func:`cellxgene_h5ad_url` picks the H5AD asset URL
out of the JSON document it returns, and :func:`read_cellxgene` reads the
downloaded h5ad (raw counts, gene symbols, an obs filter, author labels).

Every AnnData returned follows :mod:`milkcells.io`'s conventions: raw integer
counts in ``X`` (CSR, float32 holding integers), unique gene symbols as
``var_names``, gene IDs in ``var["gene_ids"]``, ``var["mt"]`` and
``var["ribo"]``, and ``obs`` columns ``sample``, ``donor``, ``batch``,
``source``, ``days_postpartum``, ``barcode`` plus the authors' labels in
``obs["author_label"]``.
"""

from __future__ import annotations

import csv
import gzip
import logging
import math
import os
import re
import urllib.parse
import uuid
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._utils import InputError, record_params
from .io import MilkcellsWarning, check_integer_counts, classify_10x_files

__all__ = [
    "BIOSTUDIES_BASE_URL",
    "CELLXGENE_API_URL",
    "biostudies_files_url",
    "sdrf_url",
    "read_sdrf",
    "sdrf_samples",
    "sample_sheet_from_sdrf",
    "sdrf_downloads",
    "read_scp",
    "cellxgene_dataset_url",
    "cellxgene_h5ad_url",
    "read_cellxgene",
]

log = logging.getLogger(__name__)

#: Root of the BioStudies file store that serves ArrayExpress studies.
BIOSTUDIES_BASE_URL = "https://ftp.ebi.ac.uk/biostudies/fire/"
#: Root of the public CELLxGENE Discover curation API (paths ``/v1/...``).
CELLXGENE_API_URL = "https://api.cellxgene.cziscience.com/curation"

_ACCESSION = re.compile(r"E-([A-Z]{4})-(\d+)")
_URL_SCHEMES = ("http", "https", "ftp", "file")
_SAMPLE_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Cell values that mean "no value" in SDRF characteristics and portal metadata.
_MISSING = frozenset(
    {"", "na", "n/a", "nan", "none", "null", "-", "unknown", "missing",
     "not applicable", "not available", "not collected", "not specified"}
)  # fmt: skip


# --------------------------------------------------------------------------- small helpers


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return str(value).strip().lower() in _MISSING


def _norm_header(header: str) -> str:
    """Loose SDRF header key: case, spaces and underscores ignored.

    ``Comment [Derived ArrayExpress FTP file]`` and
    ``comment[derived arrayexpress ftp file]`` give the same key.
    """
    return re.sub(r"[\s_]+", "", str(header)).lower()


def _checked_base(url: str, *, field: str) -> str:
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


def _parse_accession(accession: str) -> tuple[str, str, str]:
    acc = str(accession).strip().upper()
    m = _ACCESSION.fullmatch(acc)
    if not m:
        raise InputError(
            f"invalid ArrayExpress accession {accession!r}",
            field="accession",
            expected="'E-' + four capital letters + '-' + digits, such as 'E-MTAB-9841'",
        )
    return acc, m.group(1), m.group(2)


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


def _gene_flags(var: pd.DataFrame, symbols: pd.Index) -> None:
    sym = symbols.str.upper()
    var["mt"] = np.asarray(sym.str.startswith("MT-"))
    var["ribo"] = np.asarray(sym.str.startswith(("RPS", "RPL")))


# --------------------------------------------------------------------------- BioStudies URLs


def biostudies_files_url(accession: str, *, base_url: str = BIOSTUDIES_BASE_URL) -> str:
    """URL of an ArrayExpress study's ``Files/`` folder in BioStudies.

    The layout is ``<base_url>/<prefix>-/<last 3 digits>/<accession>/Files/``,
    for example ``https://ftp.ebi.ac.uk/biostudies/fire/E-MTAB-/841/E-MTAB-9841/Files/``
    (checked against public download scripts for E-MTAB studies). Accessions
    with fewer than three digits are zero-padded (``E-MTAB-12`` -> ``012``);
    that case is not verified against the archive.

    Parameters
    ----------
    accession
        ArrayExpress accession such as ``"E-MTAB-9841"`` (surrounding spaces
        and lower case are tolerated).
    base_url
        Root of the BioStudies file store (or of a mirror); trailing slashes
        are optional.

    Returns
    -------
    The folder URL, ending with ``/``.

    Raises
    ------
    InputError
        On a malformed accession or base URL.
    """
    acc, prefix, number = _parse_accession(accession)
    base = _checked_base(base_url, field="base_url")
    return f"{base}E-{prefix}-/{number[-3:].zfill(3)}/{acc}/Files/"


def sdrf_url(accession: str, *, base_url: str = BIOSTUDIES_BASE_URL) -> str:
    """URL of a study's SDRF, ``<accession>.sdrf.txt`` in its ``Files/`` folder.

    Parameters
    ----------
    accession
        ArrayExpress accession such as ``"E-MTAB-9841"``.
    base_url
        Root of the BioStudies file store, as in :func:`biostudies_files_url`.

    Returns
    -------
    The SDRF URL.
    """
    acc = _parse_accession(accession)[0]
    return f"{biostudies_files_url(acc, base_url=base_url)}{acc}.sdrf.txt"


# --------------------------------------------------------------------------- SDRF reading


def read_sdrf(path: str | os.PathLike) -> pd.DataFrame:
    """Read a MAGE-TAB SDRF, keeping repeated column headers.

    A 10x sample lists several processed files, each as a ``Derived Array
    Data File`` column followed by its ``Comment [Derived ArrayExpress FTP
    file]``; a dict-of-columns reader (``csv.DictReader``, R's
    ``read.table``) keeps only the last pair. This reader uses the csv module
    and returns a DataFrame whose columns may repeat, in file order.

    The file is read as UTF-8 with an optional byte-order mark
    (``utf-8-sig``). Cells and headers are stripped of surrounding spaces;
    header spellings are left as written (match them loosely, as
    :func:`sdrf_samples` does). Blank lines and lines starting with ``#``
    are skipped; short rows are padded with empty strings.

    Parameters
    ----------
    path
        The ``<accession>.sdrf.txt`` file (tab-separated).

    Returns
    -------
    All cells as strings (empty where blank), indexed by the file's line
    number (``index.name == "line"``), with the file path in
    ``attrs["sdrf_file"]``.

    Raises
    ------
    InputError
        When the file is missing, not UTF-8, has no ``Source Name`` header (a
        download that returned an HTML page, for example), lists no samples,
        or has a row with more cells than the header.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("SDRF file not found", file=path,
                         expected="a tab-separated MAGE-TAB SDRF (<accession>.sdrf.txt)")
    rows: list[tuple[int, list[str]]] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for line_no, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
                cells = [c.strip() for c in row]
                if not any(cells) or cells[0].startswith("#"):
                    continue
                rows.append((line_no, cells))
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=path,
                         expected="a UTF-8 encoded SDRF") from None
    except csv.Error as e:
        raise InputError(f"cannot parse as tab-separated text: {e}", file=path,
                         expected="a tab-separated SDRF") from None
    if not rows:
        raise InputError("SDRF is empty", file=path, expected="a header row and one row per assay")
    _, header = rows[0]
    while header and not header[-1]:
        header.pop()
    if "sourcename" not in {_norm_header(h) for h in header}:
        raise InputError(
            f"no 'Source Name' column; header starts {header[:4]}",
            file=path, field="Source Name",
            expected="a MAGE-TAB SDRF whose first header is 'Source Name'",
        )
    width = len(header)
    data, index = [], []
    for line_no, cells in rows[1:]:
        if len(cells) > width:
            extra = cells[width:]
            if any(extra):
                raise InputError(
                    f"line {line_no} has {len(cells)} cells but the header {width}",
                    file=path, expected="every row as wide as the header",
                )
            cells = cells[:width]
        data.append(cells + [""] * (width - len(cells)))
        index.append(line_no)
    if not data:
        raise InputError("SDRF lists no samples (header only)", file=path,
                         expected="one row per assay under the header")
    df = pd.DataFrame(data, columns=header, index=pd.Index(index, name="line"), dtype=object)
    df.attrs["sdrf_file"] = str(path)
    log.debug("read SDRF %s: %d rows x %d columns", path, len(df), width)
    return df


# --------------------------------------------------------------------------- SDRF -> samples

_SOURCE_TEXT_FIELDS = re.compile(
    r"^(?:characteristics|factorvalue)\[(organismpart|tissue|samplingsite|sampletype|celltype|"
    r"materialtype|biosourcetype)\]$|^materialtype$"
)
_DAYS_FIELD = re.compile(
    r"^(?:characteristics|factorvalue)\[[^\]]*(partum|sincedelivery|sincebirth|lactationday|"
    r"dayoflactation|daysoflactation|durationoflactation|timeoflactation)[^\]]*\]$"
)
_UNIT_DAYS = {
    "d": 1.0, "day": 1.0, "days": 1.0,
    "w": 7.0, "wk": 7.0, "wks": 7.0, "week": 7.0, "weeks": 7.0,
    "mo": 30.4375, "month": 30.4375, "months": 30.4375,
    "y": 365.25, "yr": 365.25, "year": 365.25, "years": 365.25,
}  # fmt: skip
_LEGACY_URL = re.compile(
    r"^(?:ftp|https?)://ftp\.ebi\.ac\.uk/+pub/databases/microarray/data/experiment/"
    r"[A-Za-z]{4}/+(E-[A-Za-z]{4}-\d+)/+(.+)$",
    re.IGNORECASE,
)
_FIRE_URL = re.compile(r"^(?:ftp|https?)://[^/]*ebi\.ac\.uk/+biostudies/fire/+(.+)$", re.IGNORECASE)


def _source_rule(texts: Iterable[str], name: str) -> str | None:
    """``milk``/``tissue`` from sample-describing text, then from the sample name.

    1. any text mentions ``milk`` -> ``milk``;
    2. the sample name starts with ``LMC`` -> ``milk``, ``NMC`` -> ``tissue``
       (Twigger et al.'s naming: lactation-associated mammary cells from
       milk, non-lactating mammary cells from resting breast tissue);
    3. any text mentions ``breast``, ``mammary``, ``gland`` or ``tissue`` ->
       ``tissue``;
    4. otherwise unknown (``None``).
    """
    low = [t.lower() for t in texts if t]
    if any("milk" in t for t in low):
        return "milk"
    upper = name.upper()
    if upper.startswith("LMC"):
        return "milk"
    if upper.startswith("NMC"):
        return "tissue"
    if any(w in t for t in low for w in ("breast", "mammary", "gland", "tissue")):
        return "tissue"
    return None


def _days_value(value: str, unit: str) -> float:
    """Convert ``"12"``, ``"12 days"``, ``"2 weeks"`` (or a number plus a unit
    column) to days; missing markers give NaN. Raises ValueError otherwise."""
    text = value.strip().lower()
    if text in _MISSING:
        return float("nan")
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\.?", text)
    if not m:
        raise ValueError(value)
    u = m.group(2) or unit.strip().lower() or "day"
    u = u.split()[0] if u else u
    if u not in _UNIT_DAYS:
        raise ValueError(value)
    return float(m.group(1)) * _UNIT_DAYS[u]


def _safe_sample_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return safe


def _resolve_file_url(url: str, name: str, accession: str, base_url: str) -> tuple[str, str]:
    """(URL, how it was obtained) for one processed file; see :func:`sdrf_samples`."""
    if not url:
        folder = biostudies_files_url(accession, base_url=base_url)
        return folder + urllib.parse.quote(name), "fallback"
    m = _LEGACY_URL.match(url)
    if m:
        legacy_acc, rest = m.group(1).upper(), m.group(2)
        if rest.lower().endswith(".zip") and rest != name and not name.lower().endswith(".zip"):
            # an old processed-data bundle: BioStudies serves the files themselves
            rest = urllib.parse.quote(name)
        return biostudies_files_url(legacy_acc, base_url=base_url) + rest, "legacy"
    m = _FIRE_URL.match(url)
    if m:
        return _checked_base(base_url, field="base_url") + m.group(1), "biostudies"
    return url, "sdrf"


def sdrf_samples(
    sdrf: pd.DataFrame | str | os.PathLike,
    *,
    accession: str,
    include_tissue: bool = False,
    base_url: str = BIOSTUDIES_BASE_URL,
) -> pd.DataFrame:
    """One row per sample of an ArrayExpress SDRF, with its processed files.

    Raw-read columns (``Comment[FASTQ_URI]``, ``Comment[ENA_RUN]``, ``Scan
    Name``) put a sample on one row per read file, so rows are grouped by
    ``Source Name``; sample-level fields must agree across a sample's rows.
    Headers are matched loosely (case, spaces and underscores ignored).

    **Fields.** ``donor`` comes from ``Characteristics[individual]`` (else
    ``[donor]`` or ``[donor id]``; else the sample name). ``chemistry`` from
    ``Comment[library construction]`` (for example ``10xV3``). ``days_postpartum``
    from the first ``Characteristics[...]``/``Factor Value[...]`` column whose
    name mentions *partum*, *since delivery*, *since birth* or a day/duration
    of lactation, in days: a bare number is days unless a ``Unit[...]``
    column follows it; ``"2 weeks"`` style values are converted; missing
    markers (``not applicable``, ``NA``...) give NaN.

    **Milk or tissue** (``source``), decided per sample:

    1. ``milk`` when the organism part (or tissue, sampling site, sample
       type, cell type, material type) mentions *milk*;
    2. else from the sample name: ``LMC...`` -> ``milk``, ``NMC...`` ->
       ``tissue`` (Twigger et al.'s naming);
    3. else ``tissue`` when those fields mention *breast*, *mammary*, *gland*
       or *tissue*;
    4. else an error.

    **Files and URLs.** Each ``Derived Array Data File`` column gives a file
    name and the ``Comment [Derived ArrayExpress FTP file]`` column after it
    (before the next file column) its URL. URLs in the legacy tree
    ``.../pub/databases/microarray/data/experiment/<PREFIX>/<accession>/<file>``
    (retired with ArrayExpress' move to BioStudies) are rewritten to
    ``<Files folder of that accession under base_url><file>``; a legacy
    processed-data ``.zip`` bundle is mapped to the named file in that folder
    (BioStudies serves individual files; unverified for every old study).
    URLs already in the BioStudies ``biostudies/fire/`` tree are re-rooted
    at ``base_url`` (which also turns ``ftp://`` into ``https://`` by
    default). Other URLs are kept. When a file has no URL (no such column,
    or an empty cell) the documented fallback is
    ``biostudies_files_url(accession, base_url=base_url) + <file name>``.

    Parameters
    ----------
    sdrf
        The table from :func:`read_sdrf`, or a path to read with it.
    accession
        The study accession (``E-MTAB-9841``); becomes ``batch`` and
        ``accession`` and is used for the fallback URLs.
    include_tissue
        Keep breast-tissue samples too (default: milk samples only).
    base_url
        Root of the BioStudies file store (or a mirror).

    Returns
    -------
    DataFrame indexed by ``sample`` (also a column), with columns
    ``sample`` (the Source Name, with characters other than letters,
    digits, ``._-`` replaced by ``_``), ``source_name``, ``donor``,
    ``source``, ``organism_part``, ``batch``, ``accession``, ``chemistry``,
    ``days_postpartum`` (float, NaN when unknown) and ``files``: a list of
    ``{"name", "url", "url_origin"}`` dicts, ``url_origin`` being ``sdrf``,
    ``legacy`` (rewritten), ``biostudies`` (re-rooted) or ``fallback``.

    Raises
    ------
    InputError
        On a malformed accession, a missing ``Source Name`` column, a sample
        whose rows disagree, an unparseable postpartum time, a sample that
        is neither milk nor tissue by the rule above, clashing sample names,
        or when no sample is left.
    """
    if not isinstance(sdrf, pd.DataFrame):
        sdrf = read_sdrf(sdrf)
    acc = _parse_accession(accession)[0]
    file = sdrf.attrs.get("sdrf_file")
    headers = [str(h) for h in sdrf.columns]
    keys = [_norm_header(h) for h in headers]
    values = sdrf.astype(object).where(sdrf.notna(), "").to_numpy()
    lines = list(sdrf.index)

    def first(*wanted: str) -> int | None:
        for w in wanted:
            if w in keys:
                return keys.index(w)
        return None

    src_col = first("sourcename")
    if src_col is None:
        raise InputError("no 'Source Name' column", file=file, field="Source Name",
                         expected="a MAGE-TAB SDRF")
    donor_col = first("characteristics[individual]", "characteristics[donor]",
                      "characteristics[donorid]")
    part_col = first("characteristics[organismpart]", "factorvalue[organismpart]",
                     "characteristics[tissue]")
    chem_col = first("comment[libraryconstruction]")
    days_col = next((i for i, k in enumerate(keys) if _DAYS_FIELD.match(k)), None)
    days_unit_col = None
    if days_col is not None and days_col + 1 < len(keys) and keys[days_col + 1].startswith("unit["):
        days_unit_col = days_col + 1
    text_cols = [i for i, k in enumerate(keys) if _SOURCE_TEXT_FIELDS.match(k)]
    file_cols = [i for i, k in enumerate(keys) if k in ("derivedarraydatafile", "deriveddatafile")]
    pairs: list[tuple[int, int | None]] = []
    for n, fc in enumerate(file_cols):
        stop = file_cols[n + 1] if n + 1 < len(file_cols) else len(keys)
        url_col = next(
            (j for j in range(fc + 1, stop)
             if keys[j].startswith("comment[derived")
             and any(t in keys[j] for t in ("ftp", "url", "uri"))),
            None,
        )
        pairs.append((fc, url_col))
    if not pairs:
        log.warning("%s: no 'Derived Array Data File' column; samples will list no files", file)

    groups: dict[str, list[int]] = {}
    for r in range(len(values)):
        name = str(values[r, src_col]).strip()
        if not name:
            raise InputError(f"empty Source Name on line {lines[r]}", file=file,
                             field=headers[src_col])
        groups.setdefault(name, []).append(r)

    def one_value(name: str, rows: list[int], col: int | None) -> str:
        if col is None:
            return ""
        found = [v for v in dict.fromkeys(str(values[r, col]).strip() for r in rows) if v]
        if len(found) > 1:
            raise InputError(
                f"rows disagree: {found} on lines {[lines[r] for r in rows]}",
                file=file, sample=name, field=headers[col],
                expected="one value per sample across its rows",
            )
        return found[0] if found else ""

    records = []
    used: dict[str, str] = {}
    for name, rows in groups.items():
        sample = _safe_sample_name(name)
        if not sample or not _SAMPLE_OK.match(sample):
            raise InputError(f"cannot make a sample name from {name!r}", file=file, sample=name,
                             field=headers[src_col], expected="letters, digits, '.', '_' or '-'")
        if sample != name:
            log.info("%s: sample %r renamed %r (milkcells sample-name rules)", file, name, sample)
        if sample in used:
            raise InputError(f"Source Names {used[sample]!r} and {name!r} both become {sample!r}",
                             file=file, sample=name, field=headers[src_col],
                             expected="distinct names")
        used[sample] = name
        donor = one_value(name, rows, donor_col) or sample
        part = one_value(name, rows, part_col)
        texts = [one_value(name, rows, c) for c in text_cols]
        source = _source_rule(texts, name)
        if source is None:
            raise InputError(
                f"cannot tell milk from tissue (organism part {part!r})",
                file=file, sample=name,
                field=headers[part_col] if part_col is not None
                else "Characteristics[organism part]",
                expected="an organism part mentioning milk, breast or mammary, or a sample "
                "name starting with LMC (milk) or NMC (tissue)",
            )
        days = float("nan")
        if days_col is not None:
            raw = one_value(name, rows, days_col)
            unit = one_value(name, rows, days_unit_col) if days_unit_col is not None else ""
            try:
                days = _days_value(raw, unit)
            except ValueError:
                raise InputError(
                    f"postpartum time {raw!r}{' ' + unit if unit else ''} is not a number of days",
                    file=file, sample=name, field=headers[days_col],
                    expected="a number (days, or with a day/week/month unit), or empty",
                ) from None
            if days < 0:
                raise InputError(f"negative postpartum time {raw!r}", file=file, sample=name,
                                 field=headers[days_col], expected="days >= 0")
        files: dict[str, dict] = {}
        for fc, uc in pairs:
            for r in rows:
                fname = str(values[r, fc]).strip()
                if not fname:
                    continue
                url = str(values[r, uc]).strip() if uc is not None else ""
                if fname in files and (files[fname]["url_origin"] != "fallback" or not url):
                    continue
                resolved, origin = _resolve_file_url(url, fname, acc, base_url)
                files[fname] = {"name": fname, "url": resolved, "url_origin": origin}
        if not files:
            log.warning("%s: sample %r lists no processed data file", file, name)
        records.append({
            "sample": sample,
            "source_name": name,
            "donor": donor,
            "source": source,
            "organism_part": part,
            "batch": acc,
            "accession": acc,
            "chemistry": one_value(name, rows, chem_col),
            "days_postpartum": days,
            "files": list(files.values()),
        })
    out = pd.DataFrame.from_records(records)
    n_tissue = int((out["source"] == "tissue").sum())
    if not include_tissue:
        out = out[out["source"] == "milk"]
    if out.empty:
        raise InputError(
            f"no {'' if include_tissue else 'milk '}sample left ({n_tissue} tissue sample(s) "
            f"{'kept' if include_tissue else 'skipped'})",
            file=file, field="source",
            expected="milk samples (pass include_tissue=True to keep breast tissue)",
        )
    log.info("%s (%s): %d sample(s) kept, %d tissue sample(s) %s", file, acc, len(out), n_tissue,
             "kept" if include_tissue else "skipped")
    out = out.reset_index(drop=True)
    out["days_postpartum"] = out["days_postpartum"].astype(float)
    return out.set_index("sample", drop=False).rename_axis(None)


# --------------------------------------------------------------------------- 10x file sets

# --------------------------------------------------------------------------- sample sheet


def _plan(
    samples: pd.DataFrame, download_dir, skip_unusable: bool
) -> list[tuple[pd.Series, dict, Path]]:
    for col in ("sample", "files"):
        if col not in samples.columns:
            raise InputError(f"missing column {col!r}", field=col,
                             expected="the table returned by sdrf_samples()")
    if samples.empty:
        raise InputError("no sample given", field="sample", expected="at least one sample")
    root = Path(download_dir)
    plan = []
    for _, row in samples.iterrows():
        sample = str(row["sample"])
        files = row["files"]
        if isinstance(files, (str, bytes, Mapping)) or not isinstance(files, Iterable):
            raise InputError(f"files is {files!r}", sample=sample, field="files",
                             expected="a list of file names or {'name', 'url'} dicts")
        try:
            cls = classify_10x_files(files, sample=sample)
            if cls["format"] == "molecule_info":
                raise InputError(
                    f"only a molecule_info.h5 ({cls['molecule_info']}): per-molecule data, "
                    "not a count matrix that milkcells can read",
                    sample=sample, field="files",
                    expected="a 10x MTX set or feature-barcode .h5 "
                    "(build one with Cell Ranger first)",
                )
        except InputError as e:
            if not skip_unusable:
                raise
            log.warning("skipping sample %r: %s", sample, e)
            continue
        plan.append((row, cls, root / sample))
    if not plan:
        raise InputError("no sample has usable 10x files", field="files",
                         expected="a 10x MTX set or feature-barcode .h5 per sample")
    return plan


def _text(row: pd.Series, col: str) -> str:
    value = row.get(col, "")
    return "" if _is_missing(value) else str(value).strip()


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
    Columns ``sample``, ``path``, ``donor``, ``batch``, ``source``,
    ``days_postpartum``, ``chemistry``, ``accession``, in input order; write
    it with :func:`milkcells._utils.write_table` and read it back with
    :func:`milkcells.io.read_sample_sheet`.

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
        rows.append({
            "sample": sample,
            "path": str(path),
            "donor": _text(row, "donor") or sample,
            "batch": _text(row, "batch") or _text(row, "accession") or sample,
            "source": _text(row, "source") or "milk",
            "days_postpartum": np.nan if _is_missing(days) else float(days),
            "chemistry": _text(row, "chemistry"),
            "accession": _text(row, "accession"),
        })
    return pd.DataFrame(rows, columns=["sample", "path", "donor", "batch", "source",
                                       "days_postpartum", "chemistry", "accession"])


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
                out.append({"sample": row["sample"], "role": role, "name": name,
                            "url": urls.get(name, ""), "dest": str(folder / name)})
    return pd.DataFrame(out, columns=["sample", "role", "name", "url", "dest"])


# --------------------------------------------------------------------------- Single Cell Portal


def _read_scp_metadata(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Portal metadata: header row (``NAME`` first), type row (``TYPE``, then
    ``group``/``numeric``), one row per cell. Returns (typed table indexed by
    cell name, {column: type})."""
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
        raise InputError(f"cannot read: {e}", file=path,
                         expected="a UTF-8 text file, gzipped or not") from None
    sep = _delimiter(first_line)
    if not header or header[0].upper() != "NAME":
        raise InputError(f"first header cell is {header[:1]}", file=path, field="NAME",
                         expected="the portal format: a header row starting with NAME")
    if not types or types[0].upper() != "TYPE":
        raise InputError(
            f"second row starts with {types[:1]}", file=path, field="TYPE",
            expected="the portal format: a second row 'TYPE' then group/numeric per column",
        )
    if len(types) != len(header):
        raise InputError(f"{len(header)} column headers but {len(types)} TYPE entries", file=path,
                         field="TYPE", expected="one type per column")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise InputError(f"duplicated column names {dup}", file=path, field=dup[0],
                         expected="unique names")
    col_types = {}
    for h, t in zip(header[1:], types[1:], strict=True):
        if t.lower() not in ("group", "numeric"):
            raise InputError(f"column type {t!r}", file=path, field=h,
                             expected="'group' or 'numeric'")
        col_types[h] = t.lower()
    try:
        raw = pd.read_csv(path, sep=sep, header=None, skiprows=2, names=header, dtype=str,
                          keep_default_na=False, compression="gzip" if _is_gzip(path) else None)
    except (pd.errors.ParserError, ValueError) as e:
        raise InputError(f"cannot parse: {e}", file=path, expected="one row per cell") from None
    names = raw[header[0]].str.strip()
    empty = (names.isna() | (names == "")).to_numpy()
    if empty.any():
        raise InputError(f"empty cell name on data row {int(np.flatnonzero(empty)[0]) + 1}",
                         file=path, field="NAME", expected="a name for every cell")
    dupn = names[names.duplicated()]
    if len(dupn):
        raise InputError(f"{len(dupn)} duplicated cell names, first {dupn.iloc[0]!r}", file=path,
                         field="NAME", expected="unique cell names")
    meta = pd.DataFrame(index=pd.Index(names.to_numpy(), name=None))
    for h, t in col_types.items():
        col = raw[h].to_numpy()
        if t == "numeric":
            text = pd.Series(col, dtype=object).str.strip()
            missing = text.isna() | text.str.lower().isin(_MISSING)
            num = pd.to_numeric(text.mask(missing), errors="coerce")
            bad = num.isna() & ~missing
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise InputError(
                    f"value {col[i]!r} of cell {names.iloc[i]!r} is not a number",
                    file=path, field=h, expected="numbers (or NA) in a 'numeric' column",
                )
            meta[h] = num.to_numpy(dtype=float)
        else:
            meta[h] = pd.Categorical(col)
    return meta, col_types


def _read_dense_counts(path: Path, chunk_genes: int) -> tuple[sp.csr_matrix, list[str], list[str]]:
    """Genes x cells text table -> (cells x genes CSR float32, genes, cells), chunk by chunk."""
    if not path.is_file():
        raise InputError("counts file not found", file=path,
                         expected="the dense genes x cells count table")
    try:
        with _open_text(path) as fh:
            first_line = fh.readline()
            second_line = fh.readline()
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise InputError(f"cannot read: {e}", file=path,
                         expected="a UTF-8 text table, gzipped or not") from None
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
            file=path, expected="a header of cell names (with or without a first 'GENE' cell)",
        )
    if not cells:
        raise InputError("no cell column", file=path, expected="one column per cell")
    seen: set[str] = set()
    dups = [c for c in cells if c in seen or seen.add(c)]
    if dups:
        raise InputError(f"{len(dups)} duplicated cell names in the header, first {dups[0]!r}",
                         file=path, field="header", expected="unique cell names")
    gene_col = "\x00gene"
    dtypes = defaultdict(lambda: np.float32, {gene_col: str})
    blocks, genes = [], []
    try:
        reader = pd.read_csv(
            path, sep=sep, header=None, skiprows=1, names=[gene_col, *cells], index_col=0,
            dtype=dtypes, chunksize=chunk_genes, keep_default_na=False, na_values=[""],
            compression="gzip" if _is_gzip(path) else None,
        )
        with reader:
            for chunk in reader:
                arr = chunk.to_numpy(dtype=np.float32)
                if not np.all(np.isfinite(arr)):
                    r, c = np.argwhere(~np.isfinite(arr))[0]
                    raise InputError(f"missing or non-finite value for gene {chunk.index[r]!r}, "
                                     f"cell {cells[c]!r}", file=path, field="counts",
                                     expected="a count in every cell")
                if np.any(arr < 0) or np.any(arr != np.rint(arr)):
                    r, c = np.argwhere((arr < 0) | (arr != np.rint(arr)))[0]
                    raise InputError(
                        f"value {arr[r, c]!r} for gene {chunk.index[r]!r}, cell {cells[c]!r} "
                        "is not a non-negative integer; this looks like normalised data",
                        file=path, field="counts", expected="raw integer counts",
                    )
                blocks.append(sp.csr_matrix(arr))
                genes.extend(str(g) for g in chunk.index)
    except InputError:
        raise
    except (ValueError, pd.errors.ParserError) as e:
        raise InputError(f"cannot parse the count table: {e}", file=path, field="counts",
                         expected="gene names then one integer per cell on every row") from None
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
    source: str = "milk",
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
    with a :class:`~milkcells.io.MilkcellsWarning`; more is an error.

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
    source
        ``"milk"`` or ``"tissue"``, written to ``obs["source"]``.
    max_unmatched
        Largest tolerated fraction of unmatched cells (0 for strict).
    chunk_genes
        Gene rows parsed at a time.

    Returns
    -------
    AnnData (cells in count-file order x genes) with CSR float32 integer
    counts; ``obs``: every metadata column (typed), plus ``sample``,
    ``donor``, ``batch`` (= sample), ``source``, ``days_postpartum``,
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
    if source not in ("milk", "tissue"):
        raise InputError(f"source {source!r}", field="source", expected="'milk' or 'tissue'")
    if not 0 <= max_unmatched < 1:
        raise InputError(f"max_unmatched {max_unmatched!r}", field="max_unmatched",
                         expected="a fraction in [0, 1)")
    if int(chunk_genes) < 1:
        raise InputError(f"chunk_genes {chunk_genes!r}", field="chunk_genes",
                         expected="a positive integer")
    meta, col_types = _read_scp_metadata(metadata_path)
    for col, what in ((label_column, "label_column"), (sample_column, "sample_column"),
                      (donor_column, "donor_column"), (days_column, "days_column")):
        if col is not None and col not in meta.columns:
            raise InputError(f"no column {col!r} ({what}); columns: {list(meta.columns)}",
                             file=metadata_path, field=col,
                             expected=f"the metadata column given as {what}")
    X, genes, cells = _read_dense_counts(counts_path, int(chunk_genes))

    cell_index = pd.Index(cells)
    in_meta = cell_index.isin(meta.index)
    only_counts = cell_index[~in_meta]
    only_meta = meta.index[~meta.index.isin(cell_index)]
    n_union = len(cell_index) + len(only_meta)
    n_bad = len(only_counts) + len(only_meta)
    if not in_meta.any():
        raise InputError(
            f"no cell of the count table is in the metadata "
            f"(e.g. {cells[:2]} vs {list(meta.index[:2])})",
            file=metadata_path, field="NAME", expected="the same cell names in both files",
        )
    if n_bad:
        msg = (f"{len(only_counts)} cell(s) only in the counts (e.g. {list(only_counts[:3])}), "
               f"{len(only_meta)} only in the metadata (e.g. {list(only_meta[:3])})")
        if n_bad / n_union > max_unmatched:
            raise InputError(
                f"{msg}: {n_bad / n_union:.1%} of {n_union} cells unmatched",
                file=metadata_path, field="NAME",
                expected=f"the same cells in both files (at most {max_unmatched:.1%} unmatched)",
            )
        warnings.warn(f"file {str(metadata_path)!r}: {msg}; dropping them", MilkcellsWarning,
                      stacklevel=2)
        X = X[np.flatnonzero(in_meta)]
        cell_index = cell_index[in_meta]

    obs = meta.loc[cell_index].copy()
    for col in obs.columns:
        if col_types.get(col) == "group":
            obs[col] = obs[col].cat.remove_unused_categories()
    samples = obs[sample_column].astype(str).str.strip()
    bad = samples.str.lower().isin(_MISSING)
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} cell(s) without a sample, first {samples.index[bad][0]!r}",
            file=metadata_path, field=sample_column, expected="a sample name for every cell",
        )
    if donor_column is not None:
        donors = obs[donor_column].astype(str).str.strip()
        no_donor = donors.str.lower().isin(_MISSING)
        if no_donor.any():
            log.info("%s: %d cell(s) without a donor; using their sample name", metadata_path,
                     int(no_donor.sum()))
        donors = donors.where(~no_donor, samples)
    else:
        donors = samples
    if days_column is not None:
        days_raw = obs[days_column]
        if col_types[days_column] == "numeric":
            days = days_raw.astype(float)
        else:
            text = days_raw.astype(str).str.strip()
            missing = text.str.lower().isin(_MISSING)
            days = pd.to_numeric(text.mask(missing), errors="coerce")
            badd = days.isna() & ~missing
            if badd.any():
                raise InputError(f"days {text[badd].iloc[0]!r} is not a number", file=metadata_path,
                                 sample=samples[badd].iloc[0], field=days_column,
                                 expected="a number of days, or NA")
        if (days < 0).any():
            raise InputError("negative days postpartum", file=metadata_path,
                             sample=samples[days < 0].iloc[0], field=days_column,
                             expected="days >= 0")
    else:
        days = pd.Series(np.nan, index=obs.index)
    barcodes = [
        c[len(s) + 1:] if c.startswith(s + "_") and len(c) > len(s) + 1 else c
        for c, s in zip(cell_index, samples, strict=True)
    ]
    obs["sample"] = pd.Categorical(samples.to_numpy())
    obs["donor"] = pd.Categorical(donors.to_numpy())
    obs["batch"] = obs["sample"]
    obs["source"] = pd.Categorical([source] * len(obs))
    obs["days_postpartum"] = days.to_numpy(dtype=float)
    obs["barcode"] = barcodes
    obs["author_label"] = pd.Categorical(obs[label_column].astype(object).to_numpy())
    obs.index = pd.Index([str(c) for c in cell_index])

    gene_index = pd.Index(genes)
    var = pd.DataFrame({"gene_ids": genes}, index=gene_index)
    with warnings.catch_warnings():
        # duplicated symbols are made unique just below, as milkcells.io does
        warnings.filterwarnings("ignore", message=".* names are not unique", category=UserWarning)
        adata = ad.AnnData(X=X, obs=obs, var=var)
        if gene_index.has_duplicates:
            log.info("%s: %d duplicated gene names made unique", counts_path,
                     int(gene_index.duplicated().sum()))
            adata.var_names_make_unique()
    _gene_flags(adata.var, adata.var_names)
    record_params(adata, "ingest", {
        "reader": "read_scp", "counts_path": str(counts_path), "metadata_path": str(metadata_path),
        "label_column": label_column, "sample_column": sample_column, "donor_column": donor_column,
        "days_column": days_column, "n_unmatched_dropped": n_bad,
    })
    log.info("read SCP export: %d cells x %d genes, %d sample(s)", adata.n_obs, adata.n_vars,
             obs["sample"].nunique())
    return adata


# --------------------------------------------------------------------------- CELLxGENE Discover


def _check_uuid(value: str, field: str) -> str:
    text = str(value).strip().lower()
    try:
        uuid.UUID(text)
    except ValueError:
        raise InputError(f"{field} {value!r} is not a UUID", field=field,
                         expected="a CELLxGENE id such as "
                         "'fedcba98-7654-3210-fedc-ba9876543210'") from None
    if len(text) != 36:
        raise InputError(f"{field} {value!r} is not a hyphenated UUID", field=field,
                         expected="8-4-4-4-12 hexadecimal digits")
    return text


def cellxgene_dataset_url(
    dataset_id: str, *, api_url: str = CELLXGENE_API_URL, collection_id: str | None = None
) -> str:
    """Curation-API URL of a CELLxGENE Discover dataset's metadata (JSON).

    What was verified, in the API's OpenAPI description
    (``chanzuckerberg/single-cell-data-portal``,
    ``backend/curation/api/curation-api.yml``) and in public scripts that
    download with it: the public API lives under
    ``https://api.cellxgene.cziscience.com/curation`` and needs no login for
    public data. ``GET /v1/datasets/{dataset_id}/versions`` lists a
    dataset's published versions newest first;
    ``GET /v1/collections/{collection_id}/datasets/{dataset_id}`` returns
    one dataset of a collection; ``GET /v1/collections/{collection_id}``
    returns a collection with all its datasets. Each dataset (version)
    carries ``assets``: ``[{"filetype": "H5AD" | "RDS", "url": ...,
    "filesize": ...}]``. A plain ``GET /v1/datasets/{dataset_id}`` is not in
    that description, so it is not used. Not verified: the live service's
    current responses (no network call was made) and how long asset URLs
    stay valid after a new dataset version.

    Parameters
    ----------
    dataset_id
        The dataset's UUID.
    api_url
        Root of the curation API (trailing slashes optional).
    collection_id
        When given, the collection-scoped endpoint is used.

    Returns
    -------
    ``<api_url>/v1/datasets/<id>/versions``, or
    ``<api_url>/v1/collections/<collection_id>/datasets/<id>``. Fetch it
    (with :mod:`milkcells.download`) and pass the parsed JSON to
    :func:`cellxgene_h5ad_url`.
    """
    did = _check_uuid(dataset_id, "dataset_id")
    base = _checked_base(api_url, field="api_url")
    if collection_id is not None:
        cid = _check_uuid(collection_id, "collection_id")
        return f"{base}v1/collections/{cid}/datasets/{did}"
    return f"{base}v1/datasets/{did}/versions"


def cellxgene_h5ad_url(metadata, *, dataset_id: str | None = None) -> str:
    """Pick the H5AD download URL out of a CELLxGENE curation-API JSON document.

    Accepts what the endpoints of :func:`cellxgene_dataset_url` return: one
    dataset (a dict with ``assets``), the list of a dataset's versions (the
    first, newest, is used), or a collection (a dict with ``datasets`` or
    ``dataset_versions``; give ``dataset_id`` when it holds several).

    Parameters
    ----------
    metadata
        The parsed JSON (dict or list).
    dataset_id
        Which dataset to pick from a collection or list.

    Returns
    -------
    The ``url`` of the asset whose ``filetype`` is ``H5AD``.

    Raises
    ------
    InputError
        When the document has no dataset, several datasets and no
        ``dataset_id``, no dataset with that id, or no H5AD asset with a URL.
    """
    if isinstance(metadata, Mapping):
        if "assets" in metadata:
            candidates = [metadata]
        elif "datasets" in metadata or "dataset_versions" in metadata:
            candidates = list(metadata.get("datasets") or metadata.get("dataset_versions") or [])
        else:
            raise InputError(
                "no 'assets', 'datasets' or 'dataset_versions' key "
                f"(keys: {sorted(metadata)[:10]})",
                field="metadata", expected="a CELLxGENE curation-API dataset or collection",
            )
    elif isinstance(metadata, Sequence) and not isinstance(metadata, (str, bytes)):
        candidates = list(metadata)
    else:
        raise InputError(f"metadata of type {type(metadata).__name__}", field="metadata",
                         expected="the parsed JSON (dict or list) of the curation API")
    candidates = [c for c in candidates if isinstance(c, Mapping)]
    if dataset_id is not None:
        did = _check_uuid(dataset_id, "dataset_id")
        ids = [str(c.get("dataset_id", "")).lower() for c in candidates]
        candidates = [c for c, i in zip(candidates, ids, strict=True) if i == did]
        if not candidates:
            raise InputError(f"no dataset {did} in the document (ids: {sorted(set(ids))[:10]})",
                             field="dataset_id", expected="a dataset_id listed in the document")
    if not candidates:
        raise InputError("the document lists no dataset", field="metadata",
                         expected="at least one dataset with assets")
    distinct = {str(c.get("dataset_id", "")) for c in candidates}
    if len(distinct) > 1:
        raise InputError(f"{len(distinct)} datasets in the document", field="dataset_id",
                         expected="dataset_id= naming one of them")
    chosen = candidates[0]  # versions are listed newest first
    assets = [a for a in chosen.get("assets") or []
              if isinstance(a, Mapping) and str(a.get("filetype", "")).upper() == "H5AD"]
    urls = [str(a["url"]) for a in assets if a.get("url")]
    if not urls:
        kinds = [a.get("filetype") for a in chosen.get("assets") or [] if isinstance(a, Mapping)]
        raise InputError(f"no H5AD asset with a URL (asset types: {kinds})",
                         field="assets", expected="an asset with filetype 'H5AD' and a url")
    if len(set(urls)) > 1:
        log.info("several H5AD assets; using the first: %s", urls[0])
    return urls[0]


def _as_text_list(wanted) -> list[str]:
    if isinstance(wanted, (str, bytes)) or not isinstance(wanted, Iterable):
        wanted = [wanted]
    return [str(w) for w in wanted]


def _obs_mask(obs: pd.DataFrame, obs_filter, file) -> np.ndarray:
    mask = np.ones(len(obs), dtype=bool)
    if not obs_filter:
        return mask
    if not isinstance(obs_filter, Mapping):
        raise InputError(f"obs_filter of type {type(obs_filter).__name__}", file=file,
                         field="obs_filter", expected="a dict {column: value or [values]}")
    for col, wanted in obs_filter.items():
        if col not in obs.columns:
            raise InputError(
                f"obs_filter names an unknown column {col!r}; columns: {list(obs.columns)}",
                file=file, field=str(col), expected="an obs column of the h5ad",
            )
        wanted = _as_text_list(wanted)
        if not wanted:
            raise InputError("empty list of values", file=file, field=str(col),
                             expected="at least one value")
        present = obs[col].astype(str)
        hit = present.isin(wanted).to_numpy()
        if not hit.any():
            values = sorted(present.unique())[:20]
            raise InputError(f"no cell has {col} in {wanted}; values present: {values}",
                             file=file, field=str(col), expected="a value present in the column")
        mask &= hit
    if not mask.any():
        raise InputError(
            f"obs_filter {dict(obs_filter)!r} selects no cell (each condition alone does)",
            file=file, field="obs_filter", expected="conditions that hold together",
        )
    return mask


def read_cellxgene(
    path: str | os.PathLike,
    *,
    obs_filter: Mapping | None = None,
    label_column: str = "cell_type",
    donor_column: str = "donor_id",
    sample_column: str | None = None,
) -> ad.AnnData:
    """Read a CELLxGENE Discover h5ad into milkcells' conventions.

    Following the CELLxGENE schema (checked in versions 5.x): raw counts are
    in ``raw.X`` when a normalised ``X`` is present, else in ``X``; the var
    index holds Ensembl gene IDs and ``var["feature_name"]`` the gene
    symbols (CELLxGENE also annotates ``raw.var``); spike-ins have
    ``feature_biotype == "spike-in"`` and are dropped. The file is opened
    backed, the cells are selected from ``obs`` first and only their rows
    are read.

    Parameters
    ----------
    path
        The downloaded ``.h5ad``.
    obs_filter
        Keep cells matching every condition ``{column: value or [values]}``,
        values compared as text, e.g. ``{"tissue": "milk"}`` or
        ``{"tissue": ["milk", "breast milk"]}``.
    label_column
        Column with the labels to keep as ``obs["author_label"]``. The
        schema's ``cell_type`` is the curated Cell Ontology label; authors'
        own labels, when submitted, are in a dataset-specific column.
    donor_column
        Column naming the donor (``donor_id`` in the schema) -> ``obs["donor"]``.
    sample_column
        Column naming the sample -> ``obs["sample"]``; the schema has none,
        so by default the donor is used as the sample.

    Returns
    -------
    AnnData with the selected cells; ``X``: raw counts, CSR float32;
    ``var_names``: unique gene symbols; ``var["gene_ids"]``: Ensembl IDs;
    ``var["mt"]``, ``var["ribo"]``; ``obs``: the file's columns plus
    ``author_label``, ``donor``, ``sample``, ``batch`` (= sample), ``source``
    (``milk`` when the ``tissue`` text mentions milk, else ``tissue``; only
    when a ``tissue`` column exists), ``days_postpartum`` (NaN; not in the
    schema) and ``barcode`` (the obs name).

    Raises
    ------
    InputError
        When the file is missing or unreadable, a named column is absent,
        the filter names an unknown column or selects no cell, the counts are
        not raw integers, or ``feature_name`` is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("h5ad file not found", file=path, expected="a CELLxGENE .h5ad")
    try:
        backed = ad.read_h5ad(path, backed="r")
    except Exception as e:  # noqa: BLE001 - reported with context
        raise InputError(f"cannot read h5ad: {e}", file=path, expected="a CELLxGENE .h5ad") from e
    try:
        obs = backed.obs.copy()
        for col, what in ((label_column, "label_column"), (donor_column, "donor_column"),
                          (sample_column, "sample_column")):
            if col is not None and col not in obs.columns:
                raise InputError(f"no obs column {col!r} ({what}); columns: {list(obs.columns)}",
                                 file=path, field=col, expected=f"the obs column given as {what}")
        mask = _obs_mask(obs, obs_filter, path)
        idx = np.flatnonzero(mask)
        if backed.raw is not None:
            where, matrix, var = "raw.X", backed.raw.X, backed.raw.var.copy()
        else:
            where, matrix, var = "X", backed.X, backed.var.copy()
        X = matrix[:] if mask.all() else matrix[idx]
        if "feature_name" not in var.columns and "feature_name" in backed.var.columns:
            var["feature_name"] = backed.var["feature_name"].reindex(var.index).to_numpy()
    finally:
        backed.file.close()
    X = sp.csr_matrix(X, dtype=np.float32)
    check_integer_counts(X, file=path, field=where)
    if "feature_name" not in var.columns or var["feature_name"].isna().any():
        raise InputError("no complete var['feature_name'] (gene symbols)", file=path,
                         field="feature_name", expected="a CELLxGENE-schema h5ad")
    keep = np.ones(var.shape[0], dtype=bool)
    if "feature_biotype" in var.columns:
        keep = (var["feature_biotype"].astype(str) == "gene").to_numpy()
        if not keep.all():
            log.info("%s: dropping %d non-gene feature(s) (spike-ins)", path, int((~keep).sum()))
            X = X[:, np.flatnonzero(keep)]
    symbols = var["feature_name"].astype(str).to_numpy()[keep]
    gene_ids = var.index.astype(str).to_numpy()[keep]

    obs = obs.iloc[idx].copy()
    for col in obs.columns:
        if isinstance(obs[col].dtype, pd.CategoricalDtype):
            obs[col] = obs[col].cat.remove_unused_categories()
    obs["author_label"] = pd.Categorical(obs[label_column].astype(object).to_numpy())
    obs["donor"] = pd.Categorical(obs[donor_column].astype(str).to_numpy())
    sample = obs[sample_column] if sample_column is not None else obs[donor_column]
    obs["sample"] = pd.Categorical(sample.astype(str).to_numpy())
    obs["batch"] = obs["sample"]
    if "tissue" in obs.columns:
        obs["source"] = pd.Categorical(
            ["milk" if "milk" in str(t).lower() else "tissue" for t in obs["tissue"]]
        )
    if "days_postpartum" not in obs.columns:
        obs["days_postpartum"] = np.nan
    obs["barcode"] = obs.index.astype(str).to_numpy()
    obs.index = obs.index.astype(str)

    var_out = pd.DataFrame({"gene_ids": gene_ids}, index=pd.Index(symbols))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".* names are not unique", category=UserWarning)
        adata = ad.AnnData(X=X, obs=obs, var=var_out)
        if adata.var_names.has_duplicates:
            log.info("%s: %d duplicated gene symbols made unique", path,
                     int(adata.var_names.duplicated().sum()))
            adata.var_names_make_unique()
    _gene_flags(adata.var, adata.var_names)
    record_params(adata, "ingest", {
        "reader": "read_cellxgene", "path": str(path), "counts_from": where,
        "obs_filter": {str(k): _as_text_list(v) for k, v in (obs_filter or {}).items()} or None,
        "label_column": label_column, "donor_column": donor_column, "sample_column": sample_column,
    })
    log.info("read CELLxGENE h5ad %s: %d of %d cells x %d genes (counts from %s)", path,
             adata.n_obs, len(mask), adata.n_vars, where)
    return adata
