"""Small shared helpers: atomic paths, provenance and input errors."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = [
    "InputError",
    "MilkcellsWarning",
    "atomic_path",
    "package_versions",
    "record_params",
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
