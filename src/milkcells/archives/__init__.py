"""Public single-cell archives: pull a dataset into a folder with its sample sheet.

One module per archive, each with the same small interface:

``NAME``
    The archive's name: its module name, the config's ``dataset.archive`` and
    the key of its block of settings (``dataset.<NAME>``).
``CARRIES_AUTHOR_LABELS``
    Whether the prepared samples carry the authors' cell labels in
    ``obs["author_label"]`` (the workflow then compares its calls with them).
``prepare(out_dir, *, mirror=None, retries=5, backoff=0.5, **settings)``
    Puts the dataset in ``out_dir``: the files as downloaded (or imported),
    ``manifest.tsv`` (URL, size, sha256, time of each download) and
    ``samples.tsv``, the sample sheet, which it also returns. ``settings`` are
    the archive's own keywords, the keys of its config block.
``local_inputs(settings)``
    The local files ``prepare`` reads (for the workflow's dependencies).

The archives (:func:`names`):

* :mod:`~milkcells.archives.biostudies`: ArrayExpress/BioStudies accessions; the
  SDRF of each is the authority for its samples and files (Twigger et al. 2022).
* :mod:`~milkcells.archives.scp`: a Broad Single Cell Portal export the user
  downloaded (Nyquist et al. 2022).
* :mod:`~milkcells.archives.cellxgene`: a CELLxGENE Discover dataset by id.
* :mod:`~milkcells.archives.urls`: any list of URLs with expected checksums.

Downloads go through :mod:`milkcells.download` (resumable, retried, verified,
atomic); ``mirror`` is a local folder laid out like the archive, used instead of
the network. A second run finds every file in place and downloads nothing.

Adding an archive is adding a module here (its name not starting with ``_``)
with this interface, and its block of settings to the config schema
(``dataset.<NAME>``).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from .._utils import InputError

#: What every archive module defines.
INTERFACE = ("NAME", "CARRIES_AUTHOR_LABELS", "prepare", "local_inputs")


def names() -> list[str]:
    """The archives: the public modules of this package, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> ModuleType:
    """The module of archive ``name``.

    Raises
    ------
    InputError
        When there is no such archive (the message lists the known ones).
    TypeError
        When the module lacks part of :data:`INTERFACE`.
    """
    known = names()
    if name not in known:
        raise InputError(f"unknown archive {name!r}", field="archive", expected=f"one of {known}")
    module = importlib.import_module(f"{__name__}.{name}")
    missing = [attr for attr in INTERFACE if not hasattr(module, attr)]
    if missing:
        raise TypeError(f"archive module {module.__name__} lacks {missing}")
    if module.NAME != name:
        raise TypeError(f"archive module {module.__name__} has NAME {module.NAME!r}")
    return module


def __getattr__(name: str):
    if name in names():
        return get(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(names()))


__all__ = ["INTERFACE", "names", "get", *names()]
