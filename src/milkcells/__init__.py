"""milkcells: an annotated single-cell atlas of human milk.

The science lives here as plain functions on :class:`~anndata.AnnData`; the
Snakemake workflow and the notebooks call the same functions, stage by stage:

``io`` (reading) -> ``cellcalling`` -> ``qc`` -> ``doublets`` -> ``preprocess``
-> ``integrate`` -> ``cluster`` -> ``markers`` -> ``annotate`` ->
``compartments`` -> ``composition`` -> ``plots``. ``datasets`` makes the
simulated demo data.
"""

from importlib.metadata import PackageNotFoundError, version

from . import (
    agreement,
    ambient,
    annotate,
    cellcalling,
    cluster,
    compartments,
    composition,
    composition_model,
    datasets,
    doublets,
    download,
    emptydrops,
    integrate,
    io,
    lactation,
    markers,
    nyquist2022,
    plots,
    preprocess,
    public,
    qc,
    sources,
)
from ._utils import InputError

try:
    __version__ = version("milkcells")
except PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0+unknown"

__all__ = [
    "InputError",
    "agreement",
    "ambient",
    "annotate",
    "cellcalling",
    "cluster",
    "compartments",
    "composition",
    "composition_model",
    "datasets",
    "doublets",
    "download",
    "emptydrops",
    "integrate",
    "io",
    "lactation",
    "markers",
    "nyquist2022",
    "plots",
    "preprocess",
    "public",
    "qc",
    "sources",
    "__version__",
]
