"""Small shared helpers: atomic writes, provenance and input errors."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData
    from matplotlib.figure import Figure

__all__ = [
    "InputError",
    "atomic_path",
    "package_versions",
    "read_h5ad_part",
    "record_params",
    "Stored",
    "timed",
    "write_h5ad",
    "write_annotations",
    "write_h5ad_from",
    "write_table",
    "save_figure",
]

_TRACKED_PACKAGES = (
    "milkcells",
    "scanpy",
    "anndata",
    "numpy",
    "scipy",
    "pandas",
    "leidenalg",
    "igraph",
    "harmonypy",
    "pynndescent",
    "umap-learn",
    "scikit-learn",
    "faiss-cpu",
    "scikit-image",
    "matplotlib",
    "snakemake",
)


class InputError(ValueError):
    """A user-supplied file or setting is not what milkcells expects.

    The message names the file, the sample, the field and what was expected.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | os.PathLike | None = None,
        sample: str | None = None,
        field: str | None = None,
        expected: str | None = None,
    ) -> None:
        parts = []
        if sample is not None:
            parts.append(f"sample {sample!r}")
        if file is not None:
            parts.append(f"file {str(file)!r}")
        if field is not None:
            parts.append(f"field {field!r}")
        where = ", ".join(parts)
        msg = f"{where}: {problem}" if where else problem
        if expected:
            msg += f" (expected {expected})"
        super().__init__(msg)
        self.file = None if file is None else str(file)
        self.sample = sample
        self.field = field
        self.expected = expected


class MilkcellsWarning(UserWarning):
    """A documented warning: the input is unusual but the run can go on."""


@contextlib.contextmanager
def timed(what: str, logger: logging.Logger | None = None) -> Iterator[None]:
    """Log how long the block took (``<what>: <seconds> s``, level INFO): where a rule's time goes."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        (logger or logging.getLogger("milkcells")).info("%s: %.1f s", what, time.perf_counter() - t0)


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape milkcells' results."""
    out = {}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def record_params(adata: AnnData, key: str, params: dict) -> None:
    """Store ``params`` and package versions in ``adata.uns["milkcells"][key]``."""
    store = adata.uns.setdefault("milkcells", {})
    clean = {k: _plain(v) for k, v in params.items() if v is not None}
    store[key] = {"params": clean}
    store["versions"] = package_versions()


def _plain(value):
    """Convert a parameter to something h5ad can store."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value] if value else "[]"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return str(value)
    return value


def _umask() -> int:
    """Return the process's umask, read without changing it where the system allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc: read it by setting and restoring it
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    On any error the temporary file is removed, so nothing half-written is
    left where a finished output belongs. The finished file gets the mode a
    plain ``open()`` would give it (``0o666`` minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file 0600 and the rename keeps that mode; give the
        # output the mode a plain open() would (0666 minus the user's umask), so
        # collaborators can read results/ on a shared system when the umask allows.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_h5ad(adata: AnnData, path: str | os.PathLike, *, compression: str | None = None) -> None:
    """Write ``adata`` to ``path`` atomically."""
    with timed(f"write {Path(path).name}"), atomic_path(path, suffix=".h5ad") as tmp:
        adata.write_h5ad(tmp, compression=compression)


class Stored(tuple):
    """An element of another h5ad file, ``Stored(path, key)``, for :func:`write_h5ad_from` to copy as stored."""

    def __new__(cls, path: str | os.PathLike, key: str):
        return super().__new__(cls, (str(path), key))


def write_h5ad_from(source: str | os.PathLike, path: str | os.PathLike, elements: dict) -> None:
    """Write ``path`` (atomically) as a copy of the h5ad file ``source`` with some elements replaced or added.

    ``elements`` maps element paths in the file (``"obs"``, ``"obsm/X_umap"``, ``"uns/umap"``) to
    their new values, or to :class:`Stored` elements of other files, which are copied as stored
    (HDF5's own copy: no decoding, no memory). A file of several GB that gains a few columns, an
    embedding or a layer is so written without reading its matrices.
    """
    import shutil

    import h5py
    from anndata.io import write_elem

    with timed(f"write {Path(path).name} (copy of {Path(source).name})"), atomic_path(path, suffix=".h5ad") as tmp:
        shutil.copyfile(source, tmp)
        with h5py.File(tmp, "r+") as f:
            for key, value in elements.items():
                parent, _, name = key.rpartition("/")
                if parent and parent not in f:  # as anndata writes a mapping (obsm, obsp, uns)
                    f.create_group(parent).attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})
                group = f[parent] if parent else f
                if name in group:
                    del group[name]
                if isinstance(value, Stored):
                    with h5py.File(value[0], "r") as other:
                        other.copy(other[value[1]], group, name=name)
                else:
                    write_elem(group, name, value)


def _csr_rows(group, idx, *, block_nnz: int = 1 << 24):
    """Rows ``idx`` (sorted, unique) of a CSR matrix stored in an h5ad group.

    Reads contiguous stretches of about ``block_nnz`` stored values and keeps their selected rows,
    straight into the result's arrays: a few times faster than anndata's row indexing of a
    backed matrix (which reads row by row), and only one stretch more memory than the result.
    """
    import numpy as np
    import scipy.sparse as sp

    shape = tuple(int(s) for s in group.attrs["shape"])
    indptr = group["indptr"][...]
    data_ds, ind_ds = group["data"], group["indices"]
    lens = indptr[idx + 1] - indptr[idx]
    out_ptr = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lens, out=out_ptr[1:])
    nnz = int(out_ptr[-1])
    if nnz < np.iinfo(np.int32).max:
        out_ptr = out_ptr.astype(np.int32)
    data = np.empty(nnz, dtype=data_ds.dtype)
    ind = np.empty(nnz, dtype=ind_ds.dtype)
    ends = indptr[idx + 1]
    i = 0
    while i < len(idx):
        r0 = int(idx[i])
        j = max(int(np.searchsorted(ends, indptr[r0] + block_nnz, side="right")), i + 1)
        r1 = int(idx[j - 1]) + 1
        s, e = int(indptr[r0]), int(indptr[r1])
        block = sp.csr_matrix((data_ds[s:e], ind_ds[s:e], indptr[r0:r1 + 1] - s), shape=(r1 - r0, shape[1]))
        rows = block[idx[i:j] - r0]
        data[out_ptr[i]:out_ptr[j]] = rows.data
        ind[out_ptr[i]:out_ptr[j]] = rows.indices
        i = j
    return sp.csr_matrix((data, ind, out_ptr), shape=(len(idx), shape[1]))


def read_h5ad_part(
    path: str | os.PathLike,
    *,
    rows=None,
    X: bool = True,
    layers: tuple[str, ...] | None = None,
    obsm: bool = True,
    obsp: bool = True,
    varm: bool = True,
    matrices: dict[str, tuple[str | os.PathLike, str]] | None = None,
) -> AnnData:
    """Read part of an h5ad file: some cells, some of its matrices, without loading the rest.

    ``ad.read_h5ad(backed="r")`` keeps only ``X`` on disk and loads every layer whole; this reads
    each element on its own, and of the sparse matrices only the rows asked for.

    Parameters
    ----------
    rows
        ``None`` (all cells) or a function of the file's ``obs`` returning a boolean mask.
    X
        Read ``X`` (else the result has none).
    layers
        Names of the layers to read (missing names are skipped); ``None``: all.
    obsm, obsp, varm
        Read these (``obsp`` restricted to the rows and the same columns).
    matrices
        Matrices of the same cells kept in other h5ad files (the workflow keeps each matrix once,
        and the annotations the steps add in small files of their own): ``{"X": (path, "X"),
        "counts": (path, "layers/counts")}`` sets ``X`` and ``layers["counts"]`` from those files,
        the same rows. The files' cells must be this file's, in the same order.

    ``obs``, ``var`` and ``uns`` are always read.
    """
    import anndata as ad
    import h5py
    import numpy as np
    import pandas as pd
    from anndata.io import read_elem, sparse_dataset

    with timed(f"read {Path(path).name}"), h5py.File(path, "r") as f:
        obs = read_elem(f["obs"])
        var = read_elem(f["var"])
        idx = None if rows is None else np.flatnonzero(np.asarray(rows(obs), dtype=bool))

        def matrix(elem):
            return _read_matrix(elem, idx)

        def select(arr):
            return arr if idx is None else (arr.iloc[idx] if hasattr(arr, "iloc") else arr[idx])

        part = select(obs).copy()
        if idx is not None:  # as subsetting an AnnData does
            for col in part.columns:
                if isinstance(part[col].dtype, pd.CategoricalDtype):
                    part[col] = part[col].cat.remove_unused_categories()

        out = ad.AnnData(X=matrix(f["X"]) if X and "X" in f else None,
                         obs=part, var=var, uns=read_elem(f["uns"]) if "uns" in f else {})
        for name in (list(f["layers"]) if "layers" in f else []):
            if layers is None or name in layers:
                out.layers[name] = matrix(f["layers"][name])
        if obsm and "obsm" in f:
            for name in f["obsm"]:
                out.obsm[name] = select(read_elem(f["obsm"][name]))
        if varm and "varm" in f:
            for name in f["varm"]:
                out.varm[name] = read_elem(f["varm"][name])
        if obsp and "obsp" in f:
            for name in f["obsp"]:
                m = read_elem(f["obsp"][name])
                out.obsp[name] = m if idx is None else m[idx][:, idx]
    for target, (other, key) in (matrices or {}).items():
        with timed(f"read {key} of {Path(other).name}"), h5py.File(other, "r") as g:
            names = pd.Index(read_elem(g["obs"][g["obs"].attrs["_index"]]))
            if not names.equals(obs.index):
                raise ValueError(f"{other} does not hold the cells of {path} in the same order")
            m = _read_matrix(g[key], idx)
        if target == "X":
            out.X = m
        else:
            out.layers[target] = m
    return out


def _read_matrix(elem, idx):
    """A matrix element of an open h5ad file (sparse or dense), all rows or the rows ``idx``."""
    import h5py
    from anndata.io import sparse_dataset

    if isinstance(elem, h5py.Group) and "indptr" in elem:
        if idx is None:
            return sparse_dataset(elem).to_memory()
        if elem.attrs.get("encoding-type") == "csr_matrix":
            return _csr_rows(elem, idx)
        return sparse_dataset(elem)[idx]
    return elem[...] if idx is None else elem[...][idx]


def write_annotations(adata: AnnData, path: str | os.PathLike, *, layers: tuple[str, ...] = ()) -> None:
    """Write what the steps add to the cells (obs, var, obsm, obsp, uns) without the matrices.

    The workflow keeps the atlas's matrices once (the merged counts and log-normalised values, the
    ambient-corrected counts) and passes the annotations from rule to rule in such small files, so
    that a step which adds a column, an embedding or a graph does not rewrite gigabytes;
    :func:`read_h5ad_part` (``matrices=``) puts them together again. ``layers`` named here are
    written too.
    """
    import anndata as ad

    small = ad.AnnData(obs=adata.obs, var=adata.var, uns=adata.uns, obsm=dict(adata.obsm), obsp=dict(adata.obsp),
                       layers={k: adata.layers[k] for k in layers})
    write_h5ad(small, path)


def write_table(df: pd.DataFrame, path: str | os.PathLike, *, index: bool = False) -> None:
    """Write a tab-separated table atomically."""
    with atomic_path(path, suffix=".tsv") as tmp:
        df.to_csv(tmp, sep="\t", index=index, float_format="%.6g")


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> None:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip("."))
    plt.close(fig)
