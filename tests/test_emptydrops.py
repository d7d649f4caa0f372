"""EmptyDrops: calibration, recall on simulated milk droplets, and the API's contract."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.special import gammaln
from scipy.stats import kstest

from milkcells import barcoderanks, cellcalling, demo
from milkcells.emptydrops import emptydrops
from milkcells.nullmodel import ambient_proportions

IMMUNE = [t for t, ct in demo.SIM_CELL_TYPES.items() if ct.compartment == "immune"]


@pytest.fixture(scope="module")
def raw():
    """Raw droplets of one simulated colostrum sample (immune-rich)."""
    return demo.simulate_milk_sample("ED1_d005", donor="D2", days_postpartum=5, n_cells=500,
                                         n_empty=3000, n_genes=800)  # fmt: skip


@pytest.fixture(scope="module")
def ed_raw(raw):
    return emptydrops(raw, niters=2000, seed=1)


@pytest.fixture(scope="module")
def small_cells(raw):
    """``raw`` with 60 immune cells thinned (binomially) to 150-400 UMIs, and their positions."""
    rng = np.random.default_rng(7)
    status = raw.obs["sim_status"].astype(str).to_numpy()
    ctype = raw.obs["sim_cell_type"].astype(str).to_numpy()
    immune = np.flatnonzero((status == "cell") & np.isin(ctype, IMMUNE))
    pick = rng.choice(immune, size=60, replace=False)
    x = raw.X.tocsr().copy()
    totals = np.asarray(x.sum(axis=1)).ravel()
    targets = np.exp(rng.uniform(np.log(150), np.log(400), pick.size))
    for i, target in zip(pick, targets, strict=True):
        seg = slice(x.indptr[i], x.indptr[i + 1])
        x.data[seg] = rng.binomial(x.data[seg].astype(np.int64), target / totals[i])
    x.eliminate_zeros()
    thinned = ad.AnnData(x, obs=raw.obs.copy(), var=raw.var.copy())
    return thinned, pick


def _ambient_only(rng, *, n_genes=300, shape=2.0, n_pool=20000, n_tested=1500):
    """Droplets that all hold multinomial draws from one ambient profile."""
    p = rng.gamma(shape, 1.0, n_genes)
    p /= p.sum()
    pool = np.clip(np.rint(rng.lognormal(np.log(30), 0.8, n_pool)), 1, 100)
    totals = np.concatenate([pool, rng.integers(101, 400, n_tested)]).astype(np.int64)
    x = sp.csr_matrix(rng.multinomial(totals, p).astype(np.float32))
    return ad.AnnData(x), p


# -- recall on simulated milk -----------------------------------------------------------


def test_recall_and_empty_calls(raw, ed_raw):
    status = raw.obs["sim_status"].astype(str).to_numpy()
    real = np.isin(status, ["cell", "doublet"])
    empty = status == "empty"
    called = ed_raw["is_cell"].to_numpy()
    recall = called[real].mean()
    empty_rate = called[empty].mean()
    tested_empty = empty & (ed_raw["total"].to_numpy() > 100)
    print(
        f"\nEmptyDrops on simulated milk: recall {recall:.3f} ({called[real].sum()}/{real.sum()}), "
        f"empties called {called[empty].sum()}/{empty.sum()} ({empty_rate:.3%}; "
        f"{called[tested_empty].mean():.2%} of the {tested_empty.sum()} above lower), "
        f"alpha {ed_raw.attrs['alpha']:.3g}, retain {ed_raw.attrs['retain']:.0f}"
    )
    assert recall >= 0.95, recall
    assert empty_rate <= 0.01, empty_rate
    # every simulated empty droplet above lower was tested; few passed
    assert called[tested_empty].mean() <= 0.01


def test_beats_inflection_on_small_cells(small_cells):
    adata, pick = small_cells
    ed = emptydrops(adata, niters=2000, seed=2)["is_cell"].to_numpy()
    infl_cells = cellcalling.call_cells(adata, method="inflection")
    infl = adata.obs_names.isin(infl_cells.obs_names)
    threshold = infl_cells.uns["milkcells"]["cell_calling"]["threshold"]
    status = adata.obs["sim_status"].astype(str).to_numpy()
    real = np.isin(status, ["cell", "doublet"])
    empty = status == "empty"
    print(
        f"\nsmall immune cells (n={pick.size}, 150-400 UMIs; inflection at {threshold:.0f} UMIs): "
        f"EmptyDrops recall {ed[pick].mean():.3f}, inflection {infl[pick].mean():.3f}; "
        f"all real cells: EmptyDrops {ed[real].mean():.3f}, inflection {infl[real].mean():.3f}; "
        f"empties called: EmptyDrops {ed[empty].sum()}, inflection {infl[empty].sum()}"
    )
    assert ed[pick].mean() >= 0.8
    assert ed[pick].mean() >= infl[pick].mean() + 0.5
    assert ed[real].mean() > infl[real].mean()
    assert ed[empty].mean() <= 0.01


# -- the output ---------------------------------------------------------------------------


def test_output_layout(raw, ed_raw):
    df = ed_raw
    assert list(df.columns) == ["total", "log_prob", "pvalue", "limited", "fdr", "is_cell"]
    assert df.index.equals(raw.obs_names)
    np.testing.assert_array_equal(df["total"], np.asarray(raw.X.sum(axis=1)).ravel())
    untested = df["total"] <= 100
    assert df.loc[untested, ["log_prob", "pvalue", "fdr"]].isna().all().all()
    assert df.loc[untested, "limited"].isna().all() and not df.loc[untested, "is_cell"].any()
    tested = ~untested
    assert df.loc[tested, ["log_prob", "pvalue", "fdr", "limited"]].notna().all().all()
    assert df["is_cell"].dtype == bool and df["limited"].dtype == "boolean"
    pv = df.loc[tested, "pvalue"]
    assert pv.between(0, 1).all() and (df.loc[tested, "fdr"] >= pv - 1e-12).all()
    sim = tested & (df["total"] < df.attrs["retain"])
    assert (df.loc[sim, "pvalue"] >= 1 / 2001 - 1e-12).all()
    assert (df.loc[sim, "limited"] == (df.loc[sim, "pvalue"] < 1.5 / 2001)).all()
    assert (df["log_prob"][tested] <= 0).all()
    assert set(df.attrs) >= {"alpha", "retain", "lower", "niters"}
    assert df.attrs["lower"] == 100 and df.attrs["niters"] == 2000
    knee = barcoderanks.barcode_ranks(df["total"], lower=100)["knee"]
    assert df.attrs["retain"] == pytest.approx(knee)
    assert df.attrs["n_cells"] == df["is_cell"].sum()


def test_log_prob_is_the_dirichlet_multinomial_density(raw, ed_raw):
    # recompute a few barcodes' DM log-probability densely from the ambient pool
    x = raw.X.toarray().astype(np.float64)
    totals = x.sum(axis=1)
    expressed = x.sum(axis=0) > 0
    prop = np.zeros(x.shape[1])
    prop[expressed] = ambient_proportions(x[totals <= 100][:, expressed].sum(axis=0))
    a = ed_raw.attrs["alpha"]
    for i in np.flatnonzero(totals > 100)[:5]:
        c, t = x[i][expressed], totals[i]
        ap = a * prop[expressed]
        want = gammaln(t + 1) + gammaln(a) - gammaln(t + a) + np.sum(gammaln(c + ap) - gammaln(ap) - gammaln(c + 1))
        assert ed_raw["log_prob"].iloc[i] == pytest.approx(want, rel=1e-9)


def test_deterministic_with_seed(raw):
    one = emptydrops(raw, niters=300, seed=5)
    again = emptydrops(raw, niters=300, seed=5)
    pd.testing.assert_frame_equal(one, again)
    assert one.attrs == again.attrs
    threaded = emptydrops(raw, niters=300, seed=5, batch_size=64, n_jobs=2)
    serial = emptydrops(raw, niters=300, seed=5, batch_size=64, n_jobs=1)
    pd.testing.assert_frame_equal(threaded, serial)
    other = emptydrops(raw, niters=300, seed=6)
    assert not np.allclose(one["pvalue"].dropna(), other["pvalue"].dropna())


def test_input_formats_agree(raw):
    small = raw[:1500].copy()
    want = emptydrops(small, niters=200, retain=2000)
    dense = ad.AnnData(small.X.toarray(), obs=small.obs, var=small.var)
    pd.testing.assert_frame_equal(emptydrops(dense, niters=200, retain=2000), want)
    csc = ad.AnnData(sp.csc_matrix(small.X), obs=small.obs, var=small.var)
    pd.testing.assert_frame_equal(emptydrops(csc, niters=200, retain=2000), want)
    assert sp.isspmatrix_csr(small.X) or isinstance(small.X, sp.csr_array)  # input untouched


# -- calibration --------------------------------------------------------------------------


def test_pvalues_uniform_for_ambient_droplets():
    adata, _ = _ambient_only(np.random.default_rng(11))
    # the null model that generated the data: Monte Carlo p-values are uniform
    df = emptydrops(adata, niters=1000, alpha=np.inf, retain=np.inf, seed=3)
    pv = df["pvalue"].dropna().to_numpy()
    ks = kstest(pv, "uniform")
    hist = np.histogram(pv, bins=5, range=(0, 1))[0] / pv.size
    print(f"\nambient-only droplets (multinomial null): KS p {ks.pvalue:.3f}, quintiles {np.round(hist, 3)}")
    assert pv.size == 1500
    assert ks.pvalue > 0.001
    assert np.all(np.abs(hist - 0.2) < 0.05)
    assert df["is_cell"].sum() <= 0.01 * pv.size
    # with alpha estimated (at its upper bound for multinomial counts) the test is
    # conservative: no excess of small p-values, no cells called
    est = emptydrops(adata, niters=1000, retain=np.inf, seed=3)
    pv_est = est["pvalue"].dropna().to_numpy()
    share = np.mean(pv_est < 0.05)
    print(f"estimated alpha {est.attrs['alpha']:.3g}: share of p < 0.05 {share:.3f}")
    assert share <= 0.07
    assert est["is_cell"].sum() == 0


def test_test_ambient_reports_calibration_pvalues():
    adata, _ = _ambient_only(np.random.default_rng(12), n_pool=4000, n_tested=300)
    df = emptydrops(adata, niters=500, alpha=np.inf, retain=np.inf, test_ambient=True, seed=4)
    low = df["total"].between(1, 100)
    assert df.loc[low, "pvalue"].notna().all()
    assert df.loc[low, "fdr"].isna().all() and not df.loc[low, "is_cell"].any()
    assert df.attrs["n_tested"] == 300
    assert kstest(df.loc[low, "pvalue"], "uniform").pvalue > 0.001


# -- retain, ignore, alpha -----------------------------------------------------------------


def test_retain_forces_cells(raw):
    df = emptydrops(raw, niters=200, retain=150)
    big = df["total"] >= 150
    assert df.loc[big, "is_cell"].all()
    assert (df.loc[big, "pvalue"] == 0).all() and (df.loc[big, "fdr"] == 0).all()
    assert not df.loc[big, "limited"].any()
    assert df.attrs["retain"] == 150
    off = emptydrops(raw, niters=200, retain=np.inf)
    assert (off["pvalue"].dropna() > 0).all() and off.attrs["retain"] == np.inf


def test_ignore_and_fixed_alpha(raw):
    df = emptydrops(raw, niters=200, ignore=300, alpha=500.0)
    assert df.attrs["alpha"] == 500.0
    low = df["total"] <= 300
    assert df.loc[low, "pvalue"].isna().all() and not df.loc[low, "is_cell"].any()
    assert df.attrs["n_tested"] == int((df["total"] > 300).sum())


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lower": -1}, "lower"),
        ({"lower": np.inf}, "lower"),
        ({"niters": 0}, "niters"),
        ({"niters": 10.5}, "niters"),
        ({"retain": 50}, "retain"),
        ({"retain": np.nan}, "retain"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": -3.0}, "alpha"),
        ({"ignore": -1}, "ignore"),
        ({"fdr": 0}, "fdr"),
        ({"fdr": 1.5}, "fdr"),
        ({"seed": "abc"}, "seed"),
        ({"batch_size": 0}, "batch_size"),
        ({"n_jobs": 0}, "n_jobs"),
        ({"test_ambient": "yes"}, "test_ambient"),
    ],
)
def test_bad_parameters(raw, kwargs, name):
    ((_, value),) = kwargs.items()
    with pytest.raises(ValueError, match=rf"^{name} must be .*{value!r}"):
        emptydrops(raw, **kwargs)


def test_not_anndata():
    with pytest.raises(TypeError, match="adata must be an AnnData"):
        emptydrops(np.zeros((3, 3)))


def test_no_ambient_barcodes(raw):
    totals = np.asarray(raw.X.sum(axis=1)).ravel()
    filtered = raw[totals > 100].copy()
    with pytest.raises(ValueError, match=r"no counts in barcodes with totals <= lower=100"):
        emptydrops(filtered, niters=100)


def test_negative_counts_rejected(raw):
    bad = raw[:200].copy()
    bad.X = bad.X.toarray()
    bad.X[0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        emptydrops(bad, niters=100)
