"""CELLxGENE Discover: a dataset by id, through the curation API, as one h5ad split by sample.

:func:`cellxgene_dataset_url` builds the curation-API metadata URL of a
dataset, :func:`cellxgene_h5ad_url` picks the H5AD asset URL out of the JSON
document it returns, and :func:`read_cellxgene` reads the downloaded h5ad
(raw counts, gene symbols, an obs filter, author labels). :func:`prepare` does
all three and writes one h5ad per sample.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._utils import InputError, record_params
from ..io import check_integer_counts
from ._common import checked_base, counts_anndata, fetch, finish, require_columns, split_samples, url_join

__all__ = [
    "NAME",
    "CARRIES_AUTHOR_LABELS",
    "CELLXGENE_API_URL",
    "prepare",
    "local_inputs",
    "cellxgene_dataset_url",
    "cellxgene_h5ad_url",
    "read_cellxgene",
]

log = logging.getLogger(__name__)

#: The archive's name in the registry and in the config (``dataset.archive``).
NAME = "cellxgene"
#: The h5ad's labels (``label_column``) are carried as ``obs["author_label"]``.
CARRIES_AUTHOR_LABELS = True
#: Root of the public CELLxGENE Discover curation API (paths ``/v1/...``).
CELLXGENE_API_URL = "https://api.cellxgene.cziscience.com/curation"


def prepare(
    out_dir: str | os.PathLike,
    *,
    dataset_id: str,
    api_url: str = CELLXGENE_API_URL,
    obs_filter: Mapping | None = None,
    label_column: str = "cell_type",
    sample_column: str | None = None,
    mirror: str | os.PathLike | None = None,
    retries: int = 5,
    backoff: float = 0.5,
) -> pd.DataFrame:
    """Download a CELLxGENE Discover dataset (h5ad), filter its cells and split it by sample.

    Parameters
    ----------
    out_dir
        Dataset folder (``raw/<id>.json``, ``raw/<id>.h5ad``, ``samples/``,
        ``manifest.tsv``, ``samples.tsv``).
    dataset_id
        The dataset's id (a UUID).
    api_url
        Base of the CELLxGENE curation API (or a stand-in).
    obs_filter
        ``{column: value or [values]}``, for example ``{"tissue": "milk"}``.
    label_column
        ``obs`` column of the labels to carry as ``obs["author_label"]``.
    sample_column
        ``obs`` column naming the samples (default: the donor).
    mirror, retries, backoff
        As in :func:`milkcells.archives.biostudies.prepare` (the mirror is laid out below ``api_url``).

    Returns
    -------
    The sample sheet.
    """
    out_dir = Path(out_dir)
    meta_url = cellxgene_dataset_url(dataset_id, api_url=api_url)
    meta_path = out_dir / "raw" / f"{dataset_id}.json"
    records = [fetch(meta_url, meta_path, base_url=api_url, mirror=mirror, retries=retries, backoff=backoff)]
    h5ad_url = cellxgene_h5ad_url(json.loads(meta_path.read_text()), dataset_id=dataset_id)
    h5ad_path = out_dir / "raw" / f"{dataset_id}.h5ad"
    records.append(fetch(h5ad_url, h5ad_path, base_url=api_url, mirror=mirror, retries=retries, backoff=backoff))
    adata = read_cellxgene(h5ad_path, obs_filter=obs_filter, label_column=label_column, sample_column=sample_column)
    sheet = split_samples(adata, out_dir, sample_type="milk")
    return finish(sheet, records, out_dir)


def local_inputs(config: Mapping) -> list[str]:
    """The local files :func:`prepare` reads, given its settings ``config``: none (every file is downloaded)."""
    return []


# --------------------------------------------------------------------------- curation API and h5ad


def _check_uuid(value: str, field: str) -> str:
    text = str(value).strip().lower()
    try:
        uuid.UUID(text)
    except ValueError:
        raise InputError(
            f"{field} {value!r} is not a UUID",
            field=field,
            expected="a CELLxGENE id such as 'fedcba98-7654-3210-fedc-ba9876543210'",
        ) from None
    if len(text) != 36:
        raise InputError(
            f"{field} {value!r} is not a hyphenated UUID", field=field, expected="8-4-4-4-12 hexadecimal digits"
        )
    return text


def cellxgene_dataset_url(
    dataset_id: str, *, api_url: str = CELLXGENE_API_URL, collection_id: str | None = None
) -> str:
    """Curation-API URL of a CELLxGENE Discover dataset's metadata (JSON).

    What was verified, in the API's OpenAPI description
    (``chanzuckerberg/single-cell-data-portal``,
    ``backend/curation/api/curation-api.yml``) and in public scripts that
    download with it: the public API lives under
    ``https://api.cellxgene.cziscience.com/curation`` and needs no login for
    public data. ``GET /v1/datasets/{dataset_id}/versions`` lists a
    dataset's published versions newest first;
    ``GET /v1/collections/{collection_id}/datasets/{dataset_id}`` returns
    one dataset of a collection; ``GET /v1/collections/{collection_id}``
    returns a collection with all its datasets. Each dataset (version)
    carries ``assets``: ``[{"filetype": "H5AD" | "RDS", "url": ...,
    "filesize": ...}]``. A plain ``GET /v1/datasets/{dataset_id}`` is not in
    that description, so it is not used. Not verified: the live service's
    current responses (no network call was made) and how long asset URLs
    stay valid after a new dataset version.

    Parameters
    ----------
    dataset_id
        The dataset's UUID.
    api_url
        Root of the curation API (trailing slashes optional).
    collection_id
        When given, the collection-scoped endpoint is used.

    Returns
    -------
    ``<api_url>/v1/datasets/<id>/versions``, or
    ``<api_url>/v1/collections/<collection_id>/datasets/<id>``. Fetch it
    (with :mod:`milkcells.download`) and pass the parsed JSON to
    :func:`cellxgene_h5ad_url`.
    """
    did = _check_uuid(dataset_id, "dataset_id")
    base = checked_base(api_url, field="api_url")
    if collection_id is not None:
        cid = _check_uuid(collection_id, "collection_id")
        return url_join(base, "v1/collections", cid, "datasets", did)
    return url_join(base, "v1/datasets", did, "versions")


def cellxgene_h5ad_url(metadata, *, dataset_id: str | None = None) -> str:
    """Pick the H5AD download URL out of a CELLxGENE curation-API JSON document.

    Accepts what the endpoints of :func:`cellxgene_dataset_url` return: one
    dataset (a dict with ``assets``), the list of a dataset's versions (the
    first, newest, is used), or a collection (a dict with ``datasets`` or
    ``dataset_versions``; give ``dataset_id`` when it holds several).

    Parameters
    ----------
    metadata
        The parsed JSON (dict or list).
    dataset_id
        Which dataset to pick from a collection or list.

    Returns
    -------
    The ``url`` of the asset whose ``filetype`` is ``H5AD``.

    Raises
    ------
    InputError
        When the document has no dataset, several datasets and no
        ``dataset_id``, no dataset with that id, or no H5AD asset with a URL.
    """
    if isinstance(metadata, Mapping):
        if "assets" in metadata:
            candidates = [metadata]
        elif "datasets" in metadata or "dataset_versions" in metadata:
            candidates = list(metadata.get("datasets") or metadata.get("dataset_versions") or [])
        else:
            raise InputError(
                f"no 'assets', 'datasets' or 'dataset_versions' key (keys: {sorted(metadata)[:10]})",
                field="metadata",
                expected="a CELLxGENE curation-API dataset or collection",
            )
    elif isinstance(metadata, Sequence) and not isinstance(metadata, (str, bytes)):
        candidates = list(metadata)
    else:
        raise InputError(
            f"metadata of type {type(metadata).__name__}",
            field="metadata",
            expected="the parsed JSON (dict or list) of the curation API",
        )
    candidates = [c for c in candidates if isinstance(c, Mapping)]
    if dataset_id is not None:
        did = _check_uuid(dataset_id, "dataset_id")
        ids = [str(c.get("dataset_id", "")).lower() for c in candidates]
        candidates = [c for c, i in zip(candidates, ids, strict=True) if i == did]
        if not candidates:
            raise InputError(
                f"no dataset {did} in the document (ids: {sorted(set(ids))[:10]})",
                field="dataset_id",
                expected="a dataset_id listed in the document",
            )
    if not candidates:
        raise InputError("the document lists no dataset", field="metadata", expected="at least one dataset with assets")
    distinct = {str(c.get("dataset_id", "")) for c in candidates}
    if len(distinct) > 1:
        raise InputError(
            f"{len(distinct)} datasets in the document", field="dataset_id", expected="dataset_id= naming one of them"
        )
    chosen = candidates[0]  # versions are listed newest first
    assets = [
        a for a in chosen.get("assets") or [] if isinstance(a, Mapping) and str(a.get("filetype", "")).upper() == "H5AD"
    ]
    urls = [str(a["url"]) for a in assets if a.get("url")]
    if not urls:
        kinds = [a.get("filetype") for a in chosen.get("assets") or [] if isinstance(a, Mapping)]
        raise InputError(
            f"no H5AD asset with a URL (asset types: {kinds})",
            field="assets",
            expected="an asset with filetype 'H5AD' and a url",
        )
    if len(set(urls)) > 1:
        log.info("several H5AD assets; using the first: %s", urls[0])
    return urls[0]


def _as_text_list(wanted) -> list[str]:
    if isinstance(wanted, (str, bytes)) or not isinstance(wanted, Iterable):
        wanted = [wanted]
    return [str(w) for w in wanted]


def _obs_mask(obs: pd.DataFrame, obs_filter, file) -> np.ndarray:
    mask = np.ones(len(obs), dtype=bool)
    if not obs_filter:
        return mask
    if not isinstance(obs_filter, Mapping):
        raise InputError(
            f"obs_filter of type {type(obs_filter).__name__}",
            file=file,
            field="obs_filter",
            expected="a dict {column: value or [values]}",
        )
    for col, wanted in obs_filter.items():
        if col not in obs.columns:
            raise InputError(
                f"obs_filter names an unknown column {col!r}; columns: {list(obs.columns)}",
                file=file,
                field=str(col),
                expected="an obs column of the h5ad",
            )
        wanted = _as_text_list(wanted)
        if not wanted:
            raise InputError("empty list of values", file=file, field=str(col), expected="at least one value")
        present = obs[col].astype(str)
        hit = present.isin(wanted).to_numpy()
        if not hit.any():
            values = sorted(present.unique())[:20]
            raise InputError(
                f"no cell has {col} in {wanted}; values present: {values}",
                file=file,
                field=str(col),
                expected="a value present in the column",
            )
        mask &= hit
    if not mask.any():
        raise InputError(
            f"obs_filter {dict(obs_filter)!r} selects no cell (each condition alone does)",
            file=file,
            field="obs_filter",
            expected="conditions that hold together",
        )
    return mask


def read_cellxgene(
    path: str | os.PathLike,
    *,
    obs_filter: Mapping | None = None,
    label_column: str = "cell_type",
    donor_column: str = "donor_id",
    sample_column: str | None = None,
) -> ad.AnnData:
    """Read a CELLxGENE Discover h5ad into milkcells' conventions.

    Following the CELLxGENE schema (checked in versions 5.x): raw counts are
    in ``raw.X`` when a normalised ``X`` is present, else in ``X``; the var
    index holds Ensembl gene IDs and ``var["feature_name"]`` the gene
    symbols (CELLxGENE also annotates ``raw.var``); spike-ins have
    ``feature_biotype == "spike-in"`` and are dropped. The file is opened
    backed, the cells are selected from ``obs`` first and only their rows
    are read.

    Parameters
    ----------
    path
        The downloaded ``.h5ad``.
    obs_filter
        Keep cells matching every condition ``{column: value or [values]}``,
        values compared as text, e.g. ``{"tissue": "milk"}`` or
        ``{"tissue": ["milk", "breast milk"]}``.
    label_column
        Column with the labels to keep as ``obs["author_label"]``. The
        schema's ``cell_type`` is the curated Cell Ontology label; authors'
        own labels, when submitted, are in a dataset-specific column.
    donor_column
        Column naming the donor (``donor_id`` in the schema) -> ``obs["donor"]``.
    sample_column
        Column naming the sample -> ``obs["sample"]``; the schema has none,
        so by default the donor is used as the sample.

    Returns
    -------
    AnnData with the selected cells; ``X``: raw counts, CSR float32;
    ``var_names``: unique gene symbols; ``var["gene_ids"]``: Ensembl IDs;
    ``var["mt"]``, ``var["ribo"]``; ``obs``: the file's columns plus
    ``author_label``, ``donor``, ``sample``, ``batch`` (= sample), ``sample_type``
    (``milk`` when the ``tissue`` text mentions milk, else ``tissue``; only
    when a ``tissue`` column exists), ``days_postpartum`` (NaN; not in the
    schema) and ``barcode`` (the obs name).

    Raises
    ------
    InputError
        When the file is missing or unreadable, a named column is absent,
        the filter names an unknown column or selects no cell, the counts are
        not raw integers, or ``feature_name`` is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("h5ad file not found", file=path, expected="a CELLxGENE .h5ad")
    try:
        backed = ad.read_h5ad(path, backed="r")
    except Exception as e:  # noqa: BLE001 - reported with context
        raise InputError(f"cannot read h5ad: {e}", file=path, expected="a CELLxGENE .h5ad") from e
    try:
        obs = backed.obs.copy()
        given = {"label_column": label_column, "donor_column": donor_column, "sample_column": sample_column}
        require_columns(obs.columns, given, file=path, kind="obs", noun="obs column")
        mask = _obs_mask(obs, obs_filter, path)
        idx = np.flatnonzero(mask)
        if backed.raw is not None:
            where, matrix, var = "raw.X", backed.raw.X, backed.raw.var.copy()
        else:
            where, matrix, var = "X", backed.X, backed.var.copy()
        X = matrix[:] if mask.all() else matrix[idx]
        if "feature_name" not in var.columns and "feature_name" in backed.var.columns:
            var["feature_name"] = backed.var["feature_name"].reindex(var.index).to_numpy()
    finally:
        backed.file.close()
    X = sp.csr_matrix(X, dtype=np.float32)
    check_integer_counts(X, file=path, field=where)
    if "feature_name" not in var.columns or var["feature_name"].isna().any():
        raise InputError(
            "no complete var['feature_name'] (gene symbols)",
            file=path,
            field="feature_name",
            expected="a CELLxGENE-schema h5ad",
        )
    keep = np.ones(var.shape[0], dtype=bool)
    if "feature_biotype" in var.columns:
        keep = (var["feature_biotype"].astype(str) == "gene").to_numpy()
        if not keep.all():
            log.info("%s: dropping %d non-gene feature(s) (spike-ins)", path, int((~keep).sum()))
            X = X[:, np.flatnonzero(keep)]
    symbols = var["feature_name"].astype(str).to_numpy()[keep]
    gene_ids = var.index.astype(str).to_numpy()[keep]

    obs = obs.iloc[idx].copy()
    for col in obs.columns:
        if isinstance(obs[col].dtype, pd.CategoricalDtype):
            obs[col] = obs[col].cat.remove_unused_categories()
    obs["author_label"] = pd.Categorical(obs[label_column].astype(object).to_numpy())
    obs["donor"] = pd.Categorical(obs[donor_column].astype(str).to_numpy())
    sample = obs[sample_column] if sample_column is not None else obs[donor_column]
    obs["sample"] = pd.Categorical(sample.astype(str).to_numpy())
    obs["batch"] = obs["sample"]
    if "tissue" in obs.columns:
        obs["sample_type"] = pd.Categorical(["milk" if "milk" in str(t).lower() else "tissue" for t in obs["tissue"]])
    if "days_postpartum" not in obs.columns:
        obs["days_postpartum"] = np.nan
    obs["barcode"] = obs.index.astype(str).to_numpy()
    obs.index = obs.index.astype(str)

    adata = counts_anndata(X, obs, symbols, gene_ids, file=path)
    record_params(
        adata,
        "ingest",
        {
            "reader": "read_cellxgene",
            "path": str(path),
            "counts_from": where,
            "obs_filter": {str(k): _as_text_list(v) for k, v in (obs_filter or {}).items()} or None,
            "label_column": label_column,
            "donor_column": donor_column,
            "sample_column": sample_column,
        },
    )
    log.info(
        "read CELLxGENE h5ad %s: %d of %d cells x %d genes (counts from %s)",
        path,
        adata.n_obs,
        len(mask),
        adata.n_vars,
        where,
    )
    return adata
