"""milkcells: an annotated single-cell atlas of human milk.

The science lives here as plain functions on :class:`~anndata.AnnData`; the
Snakemake workflow and the notebooks call the same functions, in the order and
with the settings of :mod:`milkcells.recipe`:

``io`` (reading) -> ``cellcalling`` (with ``barcoderanks``, ``emptydrops`` and
``nullmodel``) -> ``qc`` -> ``doublets`` -> ``preprocess`` -> ``integrate`` ->
``cluster`` -> ``markers`` -> ``annotate`` (with ``markertable`` and ``scoring``)
-> ``ambient`` -> ``compartments`` -> ``composition`` -> ``plots``. ``genes``
says which genes are mitochondrial or ribosomal; ``storage`` reads and writes
the workflow's files; ``demo`` makes the simulated demo data; ``archives``
pulls public datasets (through ``download``) and ``samplesheet`` reads the sample
sheet.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version

from ._utils import InputError, MilkcellsWarning

#: the library's modules, imported on first use (``milkcells.annotate``, ``from milkcells import qc``):
#: a workflow rule that reads one sample does not pay for scanpy and scikit-learn
_MODULES = (
    "agreement",
    "ambient",
    "annotate",
    "archives",
    "barcoderanks",
    "cellcalling",
    "checks",
    "cluster",
    "compartments",
    "composition",
    "composition_model",
    "demo",
    "doublets",
    "download",
    "emptydrops",
    "genes",
    "integrate",
    "io",
    "lactation",
    "logs",
    "manifest",
    "markers",
    "markertable",
    "nullmodel",
    "nyquist2022",
    "plots",
    "preprocess",
    "qc",
    "recipe",
    "samplesheet",
    "scoring",
    "simulation",
    "storage",
)


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_MODULES))


try:
    __version__ = version("milkcells")
except PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0+unknown"

__all__ = ["InputError", "MilkcellsWarning", *_MODULES, "__version__"]
