"""BioStudies / ArrayExpress metadata (private to :mod:`milkcells.archives.biostudies`): URLs and the SDRF.

:func:`biostudies_files_url` and :func:`sdrf_url` give a study's ``Files/``
folder and its MAGE-TAB SDRF; :func:`read_sdrf` reads the SDRF without losing
its repeated column headers; :func:`sdrf_samples` turns it into one row per
sample with the sample's processed files and their URLs.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .._utils import InputError
from ..samplesheet import SAMPLE_NAME, days_from_text, safe_sample_name
from ._common import checked_base, url_join

log = logging.getLogger(__name__)

#: Root of the BioStudies file store that serves ArrayExpress studies.
BIOSTUDIES_BASE_URL = "https://ftp.ebi.ac.uk/biostudies/fire/"

_ACCESSION = re.compile(r"E-([A-Z]{4})-(\d+)")


def _norm_header(header: str) -> str:
    """Loose SDRF header key: case, spaces and underscores ignored.

    ``Comment [Derived ArrayExpress FTP file]`` and
    ``comment[derived arrayexpress ftp file]`` give the same key.
    """
    return re.sub(r"[\s_]+", "", str(header)).lower()


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
    base = checked_base(base_url, field="base_url")
    return url_join(base, f"E-{prefix}-", number[-3:].zfill(3), acc, "Files/")


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
        raise InputError(
            "SDRF file not found", file=path, expected="a tab-separated MAGE-TAB SDRF (<accession>.sdrf.txt)"
        )
    rows: list[tuple[int, list[str]]] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for line_no, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
                cells = [c.strip() for c in row]
                if not any(cells) or cells[0].startswith("#"):
                    continue
                rows.append((line_no, cells))
    except UnicodeDecodeError as e:
        raise InputError(
            f"not UTF-8 text ({e.reason} at byte {e.start})", file=path, expected="a UTF-8 encoded SDRF"
        ) from None
    except csv.Error as e:
        raise InputError(
            f"cannot parse as tab-separated text: {e}", file=path, expected="a tab-separated SDRF"
        ) from None
    if not rows:
        raise InputError("SDRF is empty", file=path, expected="a header row and one row per assay")
    _, header = rows[0]
    while header and not header[-1]:
        header.pop()
    if "sourcename" not in {_norm_header(h) for h in header}:
        raise InputError(
            f"no 'Source Name' column; header starts {header[:4]}",
            file=path,
            field="Source Name",
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
                    file=path,
                    expected="every row as wide as the header",
                )
            cells = cells[:width]
        data.append(cells + [""] * (width - len(cells)))
        index.append(line_no)
    if not data:
        raise InputError(
            "SDRF lists no samples (header only)", file=path, expected="one row per assay under the header"
        )
    df = pd.DataFrame(data, columns=header, index=pd.Index(index, name="line"), dtype=object)
    df.attrs["sdrf_file"] = str(path)
    log.debug("read SDRF %s: %d rows x %d columns", path, len(df), width)
    return df


_SOURCE_TEXT_FIELDS = re.compile(
    r"^(?:characteristics|factorvalue)\[(organismpart|tissue|samplingsite|sampletype|celltype|"
    r"materialtype|biosourcetype)\]$|^materialtype$"
)
_DAYS_FIELD = re.compile(
    r"^(?:characteristics|factorvalue)\[[^\]]*(partum|sincedelivery|sincebirth|lactationday|"
    r"dayoflactation|daysoflactation|durationoflactation|timeoflactation)[^\]]*\]$"
)
_LEGACY_URL = re.compile(
    r"^(?:ftp|https?)://ftp\.ebi\.ac\.uk/+pub/databases/microarray/data/experiment/"
    r"[A-Za-z]{4}/+(E-[A-Za-z]{4}-\d+)/+(.+)$",
    re.IGNORECASE,
)
_FIRE_URL = re.compile(r"^(?:ftp|https?)://[^/]*ebi\.ac\.uk/+biostudies/fire/+(.+)$", re.IGNORECASE)


def _sample_type_rule(texts: Iterable[str], name: str) -> str | None:
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
        return checked_base(base_url, field="base_url") + m.group(1), "biostudies"
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

    **Milk or tissue** (``sample_type``), decided per sample:

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
    ``sample_type``, ``organism_part``, ``batch``, ``accession``, ``chemistry``,
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
        raise InputError("no 'Source Name' column", file=file, field="Source Name", expected="a MAGE-TAB SDRF")
    donor_col = first("characteristics[individual]", "characteristics[donor]", "characteristics[donorid]")
    part_col = first("characteristics[organismpart]", "factorvalue[organismpart]", "characteristics[tissue]")
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
            (
                j
                for j in range(fc + 1, stop)
                if keys[j].startswith("comment[derived") and any(t in keys[j] for t in ("ftp", "url", "uri"))
            ),
            None,
        )
        pairs.append((fc, url_col))
    if not pairs:
        log.warning("%s: no 'Derived Array Data File' column; samples will list no files", file)

    groups: dict[str, list[int]] = {}
    for r in range(len(values)):
        name = str(values[r, src_col]).strip()
        if not name:
            raise InputError(f"empty Source Name on line {lines[r]}", file=file, field=headers[src_col])
        groups.setdefault(name, []).append(r)

    def one_value(name: str, rows: list[int], col: int | None) -> str:
        if col is None:
            return ""
        found = [v for v in dict.fromkeys(str(values[r, col]).strip() for r in rows) if v]
        if len(found) > 1:
            raise InputError(
                f"rows disagree: {found} on lines {[lines[r] for r in rows]}",
                file=file,
                sample=name,
                field=headers[col],
                expected="one value per sample across its rows",
            )
        return found[0] if found else ""

    records = []
    used: dict[str, str] = {}
    for name, rows in groups.items():
        sample = safe_sample_name(name)
        if not sample or not SAMPLE_NAME.match(sample):
            raise InputError(
                f"cannot make a sample name from {name!r}",
                file=file,
                sample=name,
                field=headers[src_col],
                expected="letters, digits, '.', '_' or '-'",
            )
        if sample != name:
            log.info("%s: sample %r renamed %r (milkcells sample-name rules)", file, name, sample)
        if sample in used:
            raise InputError(
                f"Source Names {used[sample]!r} and {name!r} both become {sample!r}",
                file=file,
                sample=name,
                field=headers[src_col],
                expected="distinct names",
            )
        used[sample] = name
        donor = one_value(name, rows, donor_col) or sample
        part = one_value(name, rows, part_col)
        texts = [one_value(name, rows, c) for c in text_cols]
        sample_type = _sample_type_rule(texts, name)
        if sample_type is None:
            raise InputError(
                f"cannot tell milk from tissue (organism part {part!r})",
                file=file,
                sample=name,
                field=headers[part_col] if part_col is not None else "Characteristics[organism part]",
                expected="an organism part mentioning milk, breast or mammary, or a sample "
                "name starting with LMC (milk) or NMC (tissue)",
            )
        days = float("nan")
        if days_col is not None:
            raw = one_value(name, rows, days_col)
            unit = one_value(name, rows, days_unit_col) if days_unit_col is not None else ""
            try:
                days = days_from_text(raw, unit)
            except ValueError:
                raise InputError(
                    f"postpartum time {raw!r}{' ' + unit if unit else ''} is not a number of days",
                    file=file,
                    sample=name,
                    field=headers[days_col],
                    expected="a number (days, or with a day/week/month unit), or empty",
                ) from None
            if days < 0:
                raise InputError(
                    f"negative postpartum time {raw!r}",
                    file=file,
                    sample=name,
                    field=headers[days_col],
                    expected="days >= 0",
                )
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
        records.append(
            {
                "sample": sample,
                "source_name": name,
                "donor": donor,
                "sample_type": sample_type,
                "organism_part": part,
                "batch": acc,
                "accession": acc,
                "chemistry": one_value(name, rows, chem_col),
                "days_postpartum": days,
                "files": list(files.values()),
            }
        )
    out = pd.DataFrame.from_records(records)
    n_tissue = int((out["sample_type"] == "tissue").sum())
    if not include_tissue:
        out = out[out["sample_type"] == "milk"]
    if out.empty:
        raise InputError(
            f"no {'' if include_tissue else 'milk '}sample left ({n_tissue} tissue sample(s) "
            f"{'kept' if include_tissue else 'skipped'})",
            file=file,
            field="sample_type",
            expected="milk samples (pass include_tissue=True to keep breast tissue)",
        )
    log.info(
        "%s (%s): %d sample(s) kept, %d tissue sample(s) %s",
        file,
        acc,
        len(out),
        n_tissue,
        "kept" if include_tissue else "skipped",
    )
    out = out.reset_index(drop=True)
    out["days_postpartum"] = out["days_postpartum"].astype(float)
    return out.set_index("sample", drop=False).rename_axis(None)
