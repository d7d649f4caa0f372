"""The recipe: the stages of the analysis, in their order, and the record of a run's settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._utils import package_versions

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["record_run"]


def record_run(adata: ad.AnnData, config: dict) -> None:
    """Keep the run's settings (``None`` left out) and the package versions in ``uns["milkcells"]``."""
    store = adata.uns.setdefault("milkcells", {})
    store["config"] = {k: v for k, v in config.items() if v is not None}
    store["versions"] = package_versions()
