"""Reading and writing the workflow's files: h5ad files (whole, in parts, as copies), tables and figures.

Every write is atomic (a temporary file renamed over the output), so nothing
half-written is left where a finished output belongs. The workflow keeps the
atlas's matrices once and passes the annotations the steps add in small files
(:func:`write_annotations`); :func:`read_h5ad_part` puts them together again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ._utils import atomic_path
from .logs import timed

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData
    from matplotlib.figure import Figure

__all__ = [
    "Stored",
    "read_h5ad_part",
    "save_figure",
    "write_annotations",
    "write_h5ad",
    "write_h5ad_from",
    "write_table",
]


def write_h5ad(adata: AnnData, path: str | os.PathLike, *, compression: str | None = None) -> None:
    """Write ``adata`` to ``path`` atomically."""
    with timed(f"write {Path(path).name}"), atomic_path(path, suffix=".h5ad") as tmp:
        adata.write_h5ad(tmp, compression=compression)


class Stored(tuple):
    """An element of another h5ad file, ``Stored(path, key)``, for :func:`write_h5ad_from` to copy as stored."""

    def __new__(cls, path: str | os.PathLike, key: str):
        """Name the element ``key`` (for example ``"X"``, ``"layers/counts"``) of the h5ad file ``path``."""
        return super().__new__(cls, (str(path), key))


def write_h5ad_from(original: str | os.PathLike, path: str | os.PathLike, elements: dict) -> None:
    """Write ``path`` (atomically) as a copy of the h5ad file ``original`` with some elements replaced or added.

    ``elements`` maps element paths in the file (``"obs"``, ``"obsm/X_umap"``, ``"uns/umap"``) to
    their new values, or to :class:`Stored` elements of other files, which are copied as stored
    (HDF5's own copy: no decoding, no memory). A file of several GB that gains a few columns, an
    embedding or a layer is so written without reading its matrices.
    """
    import shutil

    import h5py
    from anndata.io import write_elem

    with timed(f"write {Path(path).name} (copy of {Path(original).name})"), atomic_path(path, suffix=".h5ad") as tmp:
        shutil.copyfile(original, tmp)
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
        block = sp.csr_matrix((data_ds[s:e], ind_ds[s:e], indptr[r0 : r1 + 1] - s), shape=(r1 - r0, shape[1]))
        rows = block[idx[i:j] - r0]
        data[out_ptr[i] : out_ptr[j]] = rows.data
        ind[out_ptr[i] : out_ptr[j]] = rows.indices
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
    from anndata.io import read_elem

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

        out = ad.AnnData(
            X=matrix(f["X"]) if X and "X" in f else None,
            obs=part,
            var=var,
            uns=read_elem(f["uns"]) if "uns" in f else {},
        )
        for name in list(f["layers"]) if "layers" in f else []:
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

    small = ad.AnnData(
        obs=adata.obs,
        var=adata.var,
        uns=adata.uns,
        obsm=dict(adata.obsm),
        obsp=dict(adata.obsp),
        layers={k: adata.layers[k] for k in layers},
    )
    write_h5ad(small, path)


def write_table(df: pd.DataFrame, path: str | os.PathLike, *, index: bool = False, exact: bool = False) -> None:
    """Write a tab-separated table atomically.

    Parameters
    ----------
    df, path
        The table and its file (written through a temporary file renamed into place).
    index
        Write the index as the first column.
    exact
        Every digit that reading the numbers back (``pandas.read_csv(...,
        float_precision="round_trip")``) needs to give the same values, for tables that pass
        between steps; else 6 significant digits.
    """
    with atomic_path(path, suffix=".tsv") as tmp:
        df.to_csv(tmp, sep="\t", index=index, float_format=None if exact else "%.6g")


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> None:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip("."))
    plt.close(fig)
