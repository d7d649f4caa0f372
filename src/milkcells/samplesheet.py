"""The sample sheet: reading it, and its facts, each defined once.

:func:`read_sample_sheet` reads a sheet and checks every row against the
sample-sheet schema (``schemas/samples.schema.yaml``: each column's rules, the
message for each rule broken and what is expected), and that sample names are
unique and, for the workflow, that the inputs exist. The columns and the
sample-name pattern come from that schema; the words that mean "no value" in
archive metadata and the units of a postpartum time are defined here.
:mod:`milkcells.archives` and :mod:`milkcells.composition` take them from here.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import warnings
from collections.abc import Callable
from importlib.resources import files
from io import StringIO
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

from ._utils import InputError, MilkcellsWarning

__all__ = [
    "read_sample_sheet",
    "SAMPLES_SCHEMA",
    "SAMPLE_SHEET_COLUMNS",
    "RENAMED_COLUMNS",
    "rename_former_columns",
    "SAMPLE_NAME",
    "MISSING",
    "DAYS_PER_UNIT",
    "is_missing",
    "safe_sample_name",
    "days_from_text",
]

#: The sample-sheet schema (one row of the sheet), as a dict.
SAMPLES_SCHEMA: dict = yaml.safe_load((files("milkcells") / "schemas" / "samples.schema.yaml").read_text())

#: Required and optional sample-sheet columns, in the schema's order; more columns are
#: allowed and carried into ``obs``.
SAMPLE_SHEET_COLUMNS = {
    "required": tuple(SAMPLES_SCHEMA["required"]),
    "optional": tuple(c for c in SAMPLES_SCHEMA["properties"] if c not in SAMPLES_SCHEMA["required"]),
}

#: Sample-sheet columns under their former names (read as the new name, with a warning): ``old -> new``.
RENAMED_COLUMNS = {"source": "sample_type"}

#: A sample name: letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit.
SAMPLE_NAME = re.compile(SAMPLES_SCHEMA["properties"]["sample"]["pattern"])

#: Cell values that mean "no value" in archive metadata (SDRF characteristics, portal files),
#: compared in lower case after stripping spaces.
MISSING = frozenset(
    {"", "na", "n/a", "nan", "none", "null", "-", "unknown", "missing",
     "not applicable", "not available", "not collected", "not specified"}
)  # fmt: skip

#: Days in one unit of a postpartum time (``"2 weeks"``, ``"3 mo"``).
DAYS_PER_UNIT = {
    "d": 1.0, "day": 1.0, "days": 1.0,
    "w": 7.0, "wk": 7.0, "wks": 7.0, "week": 7.0, "weeks": 7.0,
    "mo": 30.4375, "month": 30.4375, "months": 30.4375,
    "y": 365.25, "yr": 365.25, "year": 365.25, "years": 365.25,
}  # fmt: skip


def is_missing(value) -> bool:
    """Whether a metadata value means "no value": None, NaN or one of :data:`MISSING`."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return str(value).strip().lower() in MISSING


def safe_sample_name(name: str) -> str:
    """``name`` with runs of characters other than letters, digits, ``._-`` made ``_`` (ends trimmed)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")


def days_from_text(value: str, unit: str = "") -> float:
    """Days of a postpartum time such as ``"12"``, ``"12 days"`` or ``"2 weeks"``.

    Parameters
    ----------
    value
        A number, optionally followed by a unit of :data:`DAYS_PER_UNIT`.
    unit
        The unit when ``value`` has none (an SDRF ``Unit[...]`` column); days by default.

    Returns
    -------
    The time in days; NaN for a missing value (:data:`MISSING`).

    Raises
    ------
    ValueError
        When the text is not a number with a known unit.
    """
    text = value.strip().lower()
    if text in MISSING:
        return float("nan")
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\.?", text)
    if not m:
        raise ValueError(value)
    u = m.group(2) or unit.strip().lower() or "day"
    u = u.split()[0] if u else u
    if u not in DAYS_PER_UNIT:
        raise ValueError(value)
    return float(m.group(1)) * DAYS_PER_UNIT[u]


# --------------------------------------------------------------------------- reading a sheet


def rename_former_columns(table: pd.DataFrame, file: str | os.PathLike) -> pd.DataFrame:
    """``table`` with sample-sheet columns under a former name (:data:`RENAMED_COLUMNS`) renamed.

    Each rename gives a :class:`~milkcells.MilkcellsWarning` naming ``file``, the old and the new
    name; a column is left as it is where the table also has the new one.
    """
    for old, new in RENAMED_COLUMNS.items():
        if old in table.columns and new not in table.columns:
            warnings.warn(
                f"file {str(file)!r}: column {old!r} is now called {new!r}; read as {new!r}",
                MilkcellsWarning,
                stacklevel=3,
            )
            table = table.rename(columns={old: new})
    return table


def read_sample_sheet(
    path: str | os.PathLike, *, check_paths: bool = False, made_later: Callable[[str], bool] | None = None
) -> pd.DataFrame:
    """Read a sample sheet (TSV) and check it against its schema (``schemas/samples.schema.yaml``).

    Parameters
    ----------
    path
        Tab-separated file with the columns ``sample`` and ``path``, and
        optionally ``donor``, ``batch``, ``sample_type`` (``milk`` or ``tissue``),
        ``days_postpartum``, ``chemistry`` and ``accession``; further columns
        are kept (with a :class:`~milkcells.MilkcellsWarning`); a column under
        its former name (:data:`RENAMED_COLUMNS`) is read as the new one, with
        a warning.
    check_paths
        Also check that every ``path`` exists (the workflow does, before it runs).
    made_later
        With ``check_paths``: paths for which this returns True are made by the
        workflow itself (the simulated demo's) and not checked.

    Returns
    -------
    The sheet indexed by ``sample``, with ``donor`` and ``batch`` defaulting to
    the sample name, ``sample_type`` to ``"milk"`` and ``days_postpartum`` as float
    (NaN where unknown).

    Raises
    ------
    InputError
        On a missing file, missing columns, a column name close to a known one,
        a cell breaking the schema (an empty or malformed sample name, an empty
        path, an unknown sample type, a non-numeric or negative ``days_postpartum``;
        the message is the schema's), duplicated sample names (also names
        differing only in letter case) or, with ``check_paths``, a missing
        input. Only whole lines starting with ``#`` are comments; a ``#``
        inside a field is kept. Two samples pointing at one input give a
        :class:`~milkcells.MilkcellsWarning`.
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
        df = pd.read_csv(StringIO("\n".join(kept) + "\n"), sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.ParserError as e:
        raise InputError(
            f"cannot parse the sample sheet: {e}",
            file=path,
            expected="tab-separated columns, the same number on every line",
        ) from None
    # file line of each row, for messages (a quoted field spanning lines breaks the mapping)
    rows_from = line_numbers[1:]
    if len(rows_from) != len(df):
        rows_from = list(range(2, len(df) + 2))
    df.columns = [c.strip() for c in df.columns]
    df = rename_former_columns(df, path)
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
        _check_row(row, rows_from[i], path)
    dup = df["sample"][df["sample"].duplicated()].unique()
    if len(dup):
        raise InputError(f"duplicated sample names: {list(dup)}", file=path, field="sample", expected="unique names")
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
    kind = SAMPLES_SCHEMA["properties"]["sample_type"]["default"]
    df["sample_type"] = df["sample_type"].replace("", kind) if "sample_type" in df.columns else kind
    days = df["days_postpartum"] if "days_postpartum" in df.columns else pd.Series("", index=df.index)
    df["days_postpartum"] = pd.to_numeric(days.mask(days == ""), errors="coerce").astype(float)
    if check_paths:
        for _, row in df.iterrows():
            if not (made_later is not None and made_later(row["path"])) and not os.path.exists(row["path"]):
                _fail(row, "path", "exists", file=row["path"], sheet=path)
    return df.set_index("sample", drop=False)


#: The order in which broken rules are reported, when a cell breaks several.
_RULES = ("required", "minLength", "type", "pattern", "enum", "minimum")
_VALIDATOR = jsonschema.Draft202012Validator(SAMPLES_SCHEMA)


def _check_row(row: pd.Series, line: int, path: Path) -> None:
    """Check one row against the schema; the first broken rule raises the schema's message."""
    instance = {}
    for col, spec in SAMPLES_SCHEMA["properties"].items():
        value = row.get(col, "")
        if value == "" and col not in SAMPLES_SCHEMA["required"]:
            continue  # not given: the default
        if spec.get("type") == "number":
            number = pd.to_numeric(value, errors="coerce")
            value = value if pd.isna(number) else float(number)
        instance[col] = value
    errors = list(_VALIDATOR.iter_errors(instance))
    if errors:
        columns = list(SAMPLES_SCHEMA["properties"])
        first = min(
            errors,
            key=lambda e: (
                columns.index(e.path[0]) if e.path else -1,
                _RULES.index(e.validator) if e.validator in _RULES else len(_RULES),
            ),
        )
        _fail(
            row, first.path[0] if first.path else "sample", first.validator, line=line, sheet=path, detail=first.message
        )


def _fail(row: pd.Series, field: str, rule: str, *, sheet: Path, file=None, line=None, detail: str = "") -> None:
    spec = SAMPLES_SCHEMA["properties"][field]
    value = row.get(field, "")
    template = spec.get("errors", {}).get(rule)
    problem = template.format(value=value, line=line) if template else f"{field} {value!r} on line {line}: {detail}"
    expected = spec.get("expected", spec.get("description"))
    if file is not None:  # a problem of the file the cell names
        expected = f"{expected} (sample sheet {sheet})"
    raise InputError(
        problem, file=sheet if file is None else file, sample=row.get("sample") or None, field=field, expected=expected
    )


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
