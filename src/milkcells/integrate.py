"""Integration of donors and batches on the PCA embedding (Harmony)."""

from __future__ import annotations

import logging
from typing import Literal

import anndata as ad
import numpy as np

from ._utils import record_params
from .logs import timed

__all__ = ["integrate"]

log = logging.getLogger(__name__)


def integrate(
    adata: ad.AnnData,
    *,
    method: Literal["harmony", "none"] = "harmony",
    key: str = "batch",
    theta: float = 2.0,
    max_iter: int = 20,
    seed: int = 0,
) -> str:
    """Correct the PCA embedding for donor/batch effects.

    Parameters
    ----------
    adata
        With ``obsm["X_pca"]`` and the ``obs`` column ``key``.
    method
        ``"harmony"`` (Korsunsky et al. 2019, via harmonypy) or ``"none"``.
    key
        ``obs`` column naming the batches (for example ``batch``, ``donor`` or ``sample``).
    theta
        Harmony's diversity penalty.
    max_iter
        Maximum Harmony iterations.
    seed
        Random seed.

    Returns
    -------
    The ``obsm`` key of the embedding to use downstream (``"X_pca_harmony"``
    or ``"X_pca"``), also stored as ``uns["milkcells"]["integrate"]["use_rep"]``.
    """
    if method not in ("harmony", "none"):
        raise ValueError(f"method must be either 'harmony' or 'none', but {method!r} was passed.")
    if "X_pca" not in adata.obsm:
        raise ValueError("integrate needs obsm['X_pca']: run milkcells.preprocess.pca first")
    use_rep = "X_pca"
    if method == "harmony":
        if key not in adata.obs:
            raise ValueError(f"key {key!r} is not an obs column; columns: {list(adata.obs.columns)}")
        n_batches = adata.obs[key].nunique()
        if n_batches < 2:
            log.info("only one %s: Harmony skipped", key)
        else:
            import harmonypy

            X = np.asarray(adata.obsm["X_pca"], dtype=np.float64)
            with timed(f"Harmony on {adata.n_obs} cells", log):
                ho = harmonypy.run_harmony(
                    X, adata.obs[[key]].astype(str), [key], theta=theta,
                    max_iter_harmony=max_iter, random_state=seed, verbose=False,
                )  # fmt: skip
            Z = np.asarray(ho.Z_corr)
            if Z.shape != X.shape:  # harmonypy < 2 returns PCs x cells
                Z = Z.T
            adata.obsm["X_pca_harmony"] = Z.astype(np.float32)
            use_rep = "X_pca_harmony"
            log.info("Harmony on %d %s values", n_batches, key)
    record_params(
        adata, "integrate", {"method": method, "key": key, "theta": theta, "max_iter": max_iter, "seed": seed}
    )
    adata.uns["milkcells"]["integrate"]["use_rep"] = use_rep
    return use_rep
