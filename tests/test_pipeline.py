"""The library stages chained as the recipe (the workflow, the notebook) chains them, on small simulated data."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from milkcells import (
    annotate,
    cluster,
    compartments,
    demo,
    integrate,
    markertable,
    preprocess,
    recipe,
    scoring,
)

# the workflow's settings, a few changed for small data
CONFIG = recipe.default_config(
    {"preprocess": {"n_top_genes": 600, "n_pcs": 20}, "markers": {"method": "t-test", "n_genes": 5}}
)


@pytest.fixture(scope="module")
def processed():
    parts = []
    for name, donor, days in (("A_d003", "A", 3), ("B_d150", "B", 150), ("C_d020", "C", 20)):
        raw = demo.simulate_milk_sample(name, donor=donor, days_postpartum=days, n_cells=300, n_empty=1500, n_genes=800)
        raw.obs_names = [f"{name}_{b}" for b in raw.obs_names]
        raw.obs["sample"], raw.obs["donor"], raw.obs["batch"] = name, donor, donor
        raw.obs["days_postpartum"] = float(days)
        parts.append(recipe.qc(recipe.call_cells(raw, config=CONFIG), config=CONFIG))
    return recipe.preprocess(parts, config=CONFIG)


def test_merge_keeps_counts_and_records(processed):
    m = processed
    assert set(m.uns["milkcells"]["samples"]) == {"A_d003", "B_d150", "C_d020"}
    assert "counts" in m.layers
    assert np.allclose(m.layers["counts"].data, np.round(m.layers["counts"].data))
    assert m.var["highly_variable"].sum() <= 600
    assert not m.var.loc[m.var["highly_variable"], :].index.str.startswith("MT-").any()
    assert m.obsm["X_pca"].shape[1] == 20


def _batch_separation(emb, batches):
    # mean distance between batch centroids relative to the overall spread
    cents = np.array([emb[batches == b].mean(0) for b in np.unique(batches)])
    d = np.linalg.norm(cents[:, None] - cents[None], axis=-1)
    return d.sum() / (len(cents) * (len(cents) - 1)) / emb.std(0).sum()


def test_harmony_reduces_donor_separation(processed):
    m = processed.copy()
    rep = integrate.integrate(m, key="batch")
    assert rep == "X_pca_harmony"
    b = m.obs["batch"].astype(str).to_numpy()
    # compare within one cell type so biology does not enter
    lc2 = (m.obs["sim_cell_type"].astype(str) == "LC2").to_numpy()
    before = _batch_separation(m.obsm["X_pca"][lc2], b[lc2])
    after = _batch_separation(m.obsm["X_pca_harmony"][lc2], b[lc2])
    assert after < 0.5 * before, (before, after)
    assert integrate.integrate(m, method="none") == "X_pca"
    with pytest.raises(ValueError, match="method must be either 'harmony' or 'none'"):
        integrate.integrate(m, method="scvi")


@pytest.fixture(scope="module")
def analysed(processed):
    # the stages after the merge, as the workflow runs them (ambient correction included)
    return recipe.analyse(processed.copy(), CONFIG)


def test_cluster_annotate_split_compose(analysed):
    result = analysed
    m, table = result.atlas, result.tables["markers"]
    assert "X_umap" in m.obsm and m.obs["leiden"].nunique() >= 5
    assert set(table["group"].astype(str)) == set(m.obs["leiden"].astype(str))
    assert (table.groupby("group", observed=True).size() == 5).all()
    assert list(result.compartments) == list(markertable.COMPARTMENTS)
    assert result.compartments["stromal"].n_obs == 0  # simulated milk has no stromal cells
    assert "ambient_corrected" in m.layers and set(result.tables["ambient"]["sample"]) == set(m.obs["sample"])
    assert m.uns["milkcells"]["config"]["preprocess"]["n_pcs"] == 20
    # demo simulator (the table's own markers): a plumbing check, not evidence of accuracy
    res = demo.truth_agreement(m)
    print({k: v for k, v in res.items() if k != "cell_type_recall"}, res["cell_type_recall"])
    assert res["compartment_accuracy"] >= 0.98, res
    assert res["cell_type_macro_f1"] >= 0.75, res
    comp = result.tables["composition"]
    sums = comp[comp["level"] == "cell_type"].groupby("sample")["fraction"].sum()
    assert np.allclose(sums, 1.0)
    sums = comp[comp["level"] == "compartment"].groupby("sample")["fraction"].sum()
    assert np.allclose(sums, 1.0)
    imm = comp[(comp["level"] == "compartment") & (comp["label"] == "immune")].set_index("sample")["fraction"]
    assert imm["A_d003"] > imm["B_d150"]  # immune share falls over lactation
    assert "days_postpartum" in comp.columns
    # each compartment's cell-type calls per cluster: the table of them all, and kept in the atlas
    calls = result.tables["cell_type_calls"]
    assert list(calls.columns[: len(compartments.CALL_COLUMNS)]) == compartments.CALL_COLUMNS
    assert set(calls["compartment"]) == {"epithelial", "immune"}
    for name in ("epithelial", "immune"):
        own = result.compartments[name].uns["milkcells"]["cell_type"]["clusters"]
        assert m.uns["milkcells"]["cell_types"][name] is own
        assert (calls["compartment"] == name).sum() == len(own)
        assert calls.loc[calls["compartment"] == name, "label"].tolist() == own["label"].tolist()


def test_cell_type_calls_round_trip(analysed, tmp_path):
    # a compartment's table written with every digit reads back as it was (values and types), as the
    # atlas keeps it; a compartment without cells gives a table without rows, and a wrong file an error
    from milkcells.storage import write_table

    for name in ("immune", "stromal"):
        part = analysed.compartments[name]
        table = compartments.cell_type_calls(part, name)
        write_table(table, tmp_path / f"{name}.tsv", exact=True)
        back = compartments.read_cell_type_calls(tmp_path / f"{name}.tsv")
        if name == "stromal":
            assert part.n_obs == 0 and len(back) == 0 and list(back.columns) == compartments.CALL_COLUMNS
            continue
        assert (back["score_T cell"].dtype, back["n_cells"].dtype) == (np.float32, np.int64)
        pd.testing.assert_frame_equal(back, table, check_exact=True)
        target = ad.AnnData(obs=analysed.atlas.obs[[]])
        compartments.collect_cell_types(target, [part], calls={name: back})
        own = part.uns["milkcells"]["cell_type"]["clusters"]
        pd.testing.assert_frame_equal(target.uns["milkcells"]["cell_types"][name], own, check_exact=True)
        with pytest.raises(ValueError, match="no cell-type calls given for compartment 'immune'"):
            compartments.collect_cell_types(target, [part], calls={})
    (tmp_path / "wrong.tsv").write_text("compartment\tresolution\nimmune\t1.0\n")
    with pytest.raises(ValueError, match="wrong.tsv: expected a table of cell-type calls"):
        compartments.read_cell_type_calls(tmp_path / "wrong.tsv")


def test_resolution_sweep_prefers_stable_pure_partitions(processed):
    m = processed.copy()
    epi = m[m.obs["sim_compartment"].astype(str) == "epithelial"].copy()
    preprocess.highly_variable_genes(epi, n_top_genes=500)
    preprocess.pca(epi, n_comps=15)
    cluster.cluster(epi, use_rep="X_pca", umap=False)
    sets = markertable.marker_sets(
        epi,
        table=markertable.load_marker_table(),
        level="cell_type",
        compartment="epithelial",
        exclude=markertable.ambient_prone_genes(epi),
    )
    scores = scoring.score_cells(epi, sets)
    sweep = cluster.resolution_sweep(epi, resolutions=(0.2, 1.0, 4.0), scores=scores)
    assert list(sweep["resolution"]) == [0.2, 1.0, 4.0]
    assert sweep["n_clusters"].is_monotonic_increasing
    assert (sweep["stability"] <= 1).all() and (sweep["purity"] <= 1).all()
    assert len(sweep.attrs["heterogeneous"]) >= 3
    # over-splitting into many clusters is less stable than the natural partition
    assert sweep.set_index("resolution").loc[4.0, "score"] < sweep["score"].max()
    assert sweep.attrs["best"] in (0.2, 1.0)
    assert sweep["reason"].str.startswith("chosen").sum() + sweep["reason"].str.contains("; chosen").sum() == 1
    with pytest.raises(ValueError, match="n_seeds"):
        cluster.resolution_sweep(epi, n_seeds=1)


def test_sweep_never_rates_one_cluster_of_a_heterogeneous_compartment_stable(processed):
    """Today's failure: two identical one-cluster partitions have ARI 1 and were chosen."""
    import scipy.sparse as sp

    m = processed.copy()
    epi = m[m.obs["sim_compartment"].astype(str) == "epithelial"].copy()
    preprocess.highly_variable_genes(epi, n_top_genes=500)
    preprocess.pca(epi, n_comps=15)
    cluster.cluster(epi, use_rep="X_pca", umap=False)
    # the kNN graph plus weak random edges: one component, which Leiden at low resolution leaves whole
    rng = np.random.default_rng(0)
    n = epi.n_obs
    rows = np.repeat(np.arange(n), 3)
    g = sp.csr_matrix((np.full(n * 3, 0.05), (rows, rng.integers(0, n, n * 3))), shape=(n, n))
    epi.obsp["connectivities"] = (epi.obsp["connectivities"] + g + g.T).tocsr()
    sets = markertable.marker_sets(
        epi,
        table=markertable.load_marker_table(),
        level="cell_type",
        compartment="epithelial",
        exclude=markertable.ambient_prone_genes(epi),
    )
    scores = scoring.score_cells(epi, sets)
    sweep = cluster.resolution_sweep(epi, resolutions=(0.001, 1.0), scores=scores)
    assert sweep.loc[0, "n_clusters"] == 1
    assert sweep.loc[0, "stability"] == 0 and "heterogeneous" in sweep.loc[0, "reason"]
    assert sweep.attrs["best"] == 1.0


def test_compartment_from_its_own_rows_and_a_gene_scale_equals_the_whole_atlas_path(processed, tmp_path):
    # the workflow reads one compartment's rows and the genes' scale measured on all cells
    # (rule gene_scale) instead of the whole atlas: the same cell types must come out
    from milkcells import ambient
    from milkcells.storage import read_h5ad_part, write_h5ad

    m = processed.copy()
    rep = integrate.integrate(m, key="batch")
    cluster.cluster(m, use_rep=rep)
    annotate.annotate_compartments(m)
    ambient.estimate_contamination(m)
    ambient.correct_ambient(m)
    path = tmp_path / "atlas.h5ad"
    write_h5ad(m, path)
    ref = read_h5ad_part(path, X=False, layers=("ambient_corrected",), obsm=False, varm=False)
    scale = scoring.marker_gene_scale(ref)
    for comp in ("epithelial", "immune"):
        whole = compartments.subcluster_compartment(m, comp)
        part = read_h5ad_part(path, rows=lambda obs, c=comp: obs["compartment"].astype(str) == c, obsp=False)
        alone = compartments.subcluster_compartment(part, comp, scale=scale, copy=False)
        assert alone is part and alone.n_obs == whole.n_obs > 20
        for col in ("cell_type", "cell_type_broad", "leiden_compartment"):
            assert (alone.obs[col].astype(str) == whole.obs[col].astype(str)).all(), (comp, col)
        np.testing.assert_allclose(alone.obs["cell_type_confidence"], whole.obs["cell_type_confidence"])


def test_gene_scale_takes_known_genes_and_measures_the_rest(processed):
    m = processed.copy()
    cluster.cluster(m, umap=False)
    genes = list(m.var_names[:12])
    full = scoring.gene_scale(m, genes)
    known = full.iloc[::2] * 0 + 7.0  # given values must be used as given, not re-measured
    got = scoring.gene_scale(m, genes, known=known)
    assert list(got.index) == genes
    assert (got[known.index] == 7.0).all()
    rest = [g for g in genes if g not in known.index]
    np.testing.assert_allclose(got[rest], full[rest])


def test_hvg_and_pca_on_x_alone_equal_scanpys_on_the_whole_object(processed):
    """highly_variable_genes and pca hand scanpy X alone (not every layer, which scanpy would copy per
    batch); the genes chosen and the components are scanpy's own on the whole object."""
    import scanpy as sc

    m = processed.copy()
    ref = m.copy()
    preprocess.highly_variable_genes(m, n_top_genes=300, batch_key="sample", exclude_mito_ribo=False)
    sc.pp.highly_variable_genes(ref, n_top_genes=300, flavor="seurat", batch_key="sample")
    for col in ("highly_variable", "means", "dispersions", "dispersions_norm", "highly_variable_nbatches"):
        np.testing.assert_array_equal(m.var[col].to_numpy(), ref.var[col].to_numpy(), err_msg=col)
    assert m.uns["hvg"] == ref.uns["hvg"] and list(m.layers) == list(ref.layers)
    preprocess.pca(m, n_comps=10)
    sub = ref[:, ref.var["highly_variable"].to_numpy()].copy()
    sub.X = sub.X.toarray()
    sc.pp.scale(sub, max_value=10)
    sc.pp.pca(sub, n_comps=10, svd_solver="arpack", random_state=0)
    # covariance eigendecomposition against ARPACK: the same components up to sign, to float32 precision
    got, want = m.obsm["X_pca"], sub.obsm["X_pca"]
    sign = np.sign((got * want).sum(axis=0))
    np.testing.assert_allclose(got * sign, want, atol=2e-3 * np.abs(want).max())


def test_blockwise_scaled_pca_equals_scanpys_scale_then_covariance_pca(processed):
    """preprocess._scaled_pca (blocks of rows, no dense copy of the matrix) gives what
    sc.pp.scale(max_value=10) then sc.pp.pca(svd_solver="covariance_eigh") give, signs included."""
    import anndata as ad
    import scanpy as sc

    hv = np.argsort(-np.asarray(processed.X.power(2).mean(axis=0)).ravel())[:200]
    X = processed.X[:, np.sort(hv)]
    ref = ad.AnnData(X.toarray())
    sc.pp.scale(ref, max_value=10)
    sc.pp.pca(ref, n_comps=12, svd_solver="covariance_eigh")
    for block in (37, 8192):  # blocks that do not divide the cells, and one block
        got = preprocess._scaled_pca(X, 12, block=block)
        np.testing.assert_allclose(got["X_pca"], ref.obsm["X_pca"], atol=1e-4 * np.abs(ref.obsm["X_pca"]).max())
        np.testing.assert_allclose(got["PCs"], ref.varm["PCs"], atol=1e-5)
        np.testing.assert_allclose(got["variance"], ref.uns["pca"]["variance"], rtol=1e-4)
        np.testing.assert_allclose(got["variance_ratio"], ref.uns["pca"]["variance_ratio"], rtol=1e-4)


def test_normalise_shares_the_counts_structure_and_equals_scanpy():
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    counts = sp.random(300, 80, density=0.2, format="csr", random_state=0, dtype=np.float32)
    counts.data = rng.integers(1, 30, size=counts.nnz).astype(np.float32)
    a = ad.AnnData(counts.copy())
    preprocess.normalise(a)
    ref = ad.AnnData(counts.copy())
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    assert (a.layers["counts"] != counts).nnz == 0
    np.testing.assert_array_equal(a.X.toarray(), ref.X.toarray())
    assert np.shares_memory(a.X.indices, a.layers["counts"].indices)
    assert not np.shares_memory(a.X.data, a.layers["counts"].data)


def _merge_parts(seed: int = 0):
    """Three samples of bare CSR counts: genes in another order in one, a gene missing from one,
    a gene seen in two cells only, an explicit zero, an empty sample."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    genes = [f"G{i}" for i in range(60)]
    parts = []
    for k, (n, names) in enumerate(((40, genes), (30, genes[::-1]), (25, genes[:-1]), (0, genes))):
        X = sp.random(n, len(names), density=0.3, format="csr", random_state=seed + k, dtype=np.float32)
        X.data = rng.integers(1, 20, size=X.nnz).astype(np.float32)
        X = X.tolil()
        X[:, names.index("G7")] = 0  # G7 in two cells only
        if k < 2:
            X[0, names.index("G7")] = 3.0
        X = X.tocsr()
        a = ad.AnnData(X, obs=pd.DataFrame(index=[f"s{k}_c{i}" for i in range(n)]), var=pd.DataFrame(index=names))
        a.obs["sample"] = f"s{k}"
        a.var["gene_ids"] = [f"ID{g}" for g in names]
        a.var["ambient_fraction"] = 0.01
        parts.append(a)
    parts[0].X.data[0] = 0.0  # an explicit zero: not a detection
    return parts


@pytest.mark.parametrize("consume", [False, True])
def test_merge_equals_concat_and_filter_genes(consume):
    """merge_samples builds the matrix sample by sample; the result equals anndata.concat (inner,
    merge="first") followed by scanpy's filter_genes, values, structure, obs and var."""
    import warnings

    import anndata as ad
    import scanpy as sc

    parts = _merge_parts()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ad.concat([p for p in _merge_parts() if p.n_obs], join="inner", merge="first", index_unique=None)
        got = preprocess.merge_samples(parts, min_cells=3, consume=consume)
    ref.var = ref.var.drop(columns=["ambient_fraction"])
    for name in ("s0", "s1", "s2"):
        ref.var[f"ambient_fraction_{name}"] = 0.01
    ref.obs["sample"] = ref.obs["sample"].astype(str).astype("category")
    sc.pp.filter_genes(ref, min_cells=3)
    ref.X.sort_indices()
    assert "G7" not in got.var_names and got.n_vars == ref.n_vars == 58  # G59 is missing from s2
    assert got.obs.equals(ref.obs)
    assert got.var.equals(ref.var) and list(got.var.columns) == list(ref.var.columns)
    assert got.var["n_cells"].dtype == ref.var["n_cells"].dtype
    assert got.X.dtype == ref.X.dtype and got.X.has_sorted_indices
    np.testing.assert_array_equal(got.X.indptr, ref.X.indptr)
    np.testing.assert_array_equal(got.X.indices, ref.X.indices)
    np.testing.assert_array_equal(got.X.data, ref.X.data)
    assert parts == [] if consume else len(parts) == 4 and parts[0].X is not None


def test_merge_with_layers_takes_anndata_path():
    """Samples with a layer are merged by anndata.concat (every layer stacked) and then filtered."""
    import warnings

    parts = _merge_parts()[:3]
    for p in parts:
        p.layers["spliced"] = p.X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = preprocess.merge_samples(parts, min_cells=3)
    assert "spliced" in got.layers and (got.layers["spliced"] != got.X).nnz == 0
    assert got.n_vars == 58 and got.n_obs == 95
