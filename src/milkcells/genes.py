"""Which genes are mitochondrial or ribosomal: one definition for reading, QC and gene selection.

Human gene symbols, compared case-insensitively: mitochondrially encoded genes
start with ``MT-``, ribosomal-protein genes with ``RPS`` or ``RPL``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

__all__ = ["MITO_PREFIX", "RIBO_PREFIXES", "flag_genes", "is_mitochondrial", "is_ribosomal"]

#: Symbols of mitochondrially encoded genes start with this (upper case).
MITO_PREFIX = "MT-"
#: Symbols of ribosomal-protein genes start with one of these (upper case).
RIBO_PREFIXES = ("RPS", "RPL")


def _upper(symbols: Iterable[str]) -> pd.Index:
    return pd.Index(symbols, dtype=object).astype(str).str.upper()


def is_mitochondrial(symbols: Iterable[str]) -> np.ndarray:
    """Boolean mask of the mitochondrially encoded genes among ``symbols`` (``MT-...``, any case)."""
    return np.asarray(_upper(symbols).str.startswith(MITO_PREFIX), dtype=bool)


def is_ribosomal(symbols: Iterable[str]) -> np.ndarray:
    """Boolean mask of the ribosomal-protein genes among ``symbols`` (``RPS...``, ``RPL...``, any case)."""
    return np.asarray(_upper(symbols).str.startswith(RIBO_PREFIXES), dtype=bool)


def flag_genes(var: pd.DataFrame) -> None:
    """Set ``var["mt"]`` and ``var["ribo"]`` in place from ``var``'s index (the gene symbols)."""
    var["mt"] = is_mitochondrial(var.index)
    var["ribo"] = is_ribosomal(var.index)
