"""The sample sheet's facts, each defined once: columns, sample names, missing values, time units.

The columns and the sample-name pattern come from the sample-sheet schema
(``schemas/samples.schema.yaml``), which the workflow validates against;
:mod:`milkcells.io`, :mod:`milkcells.archives` and
:mod:`milkcells.composition` read them from here.
"""

from __future__ import annotations

import math
import re
from importlib.resources import files

import yaml

__all__ = [
    "SAMPLES_SCHEMA",
    "SAMPLE_SHEET_COLUMNS",
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
