"""The validation simulator (milkcells.simulation) is not the annotator's mirror."""

import inspect
import json

import numpy as np
import pytest
import scipy.sparse as sp

from milkcells import simulation as simu

from .conftest import SHARED, needs_shared


def _cells(a):
    return a[a.obs["sim_status"].astype(str) == "cell"]


def _lognorm(a, genes):
    X = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
    tot = X.sum(1, keepdims=True)
    return np.log1p(X[:, a.var_names.get_indexer(genes)] / np.maximum(tot, 1) * 1e4)


def test_programmes_are_not_read_from_the_marker_table():
    src = inspect.getsource(simu)
    assert "markers.tsv" not in src.replace("``data/markers.tsv``", "")
    assert "load_marker_table" not in src and "from .annotate" not in src


def test_only_a_share_of_canonical_markers_is_expressed():
    comp = {"LC1": 0.5, "LC2": 0.5}
    full = _cells(simu.simulate_raw_sample("s", donor="d", composition=comp, n_cells=200, marker_fraction=1.0))
    half = _cells(simu.simulate_raw_sample("s", donor="d", composition=comp, n_cells=200, marker_fraction=0.5))
    genes = list(simu.SIM_TYPES["LC1"].canonical)
    for a, lo, hi in ((full, 0.9, 1.0), (half, 0.3, 0.7)):
        x = _lognorm(a, genes)
        lc1 = (a.obs["sim_cell_type"].astype(str) == "LC1").to_numpy()
        up = x[lc1].mean(0) > 3 * x[~lc1].mean(0) + 0.05
        assert lo <= up.mean() <= hi, up.mean()


def test_sibling_markers_are_shared_at_the_set_level():
    comp = {"LC1": 0.5, "LC2": 0.5}
    genes = list(simu.SIM_TYPES["LC1"].canonical)
    ratios = {}
    for s in (0.0, 0.3):
        a = _cells(simu.simulate_raw_sample("s", donor="d", composition=comp, n_cells=400, sharing=s))
        X = a.X.toarray()
        cp = X[:, a.var_names.get_indexer(genes)] / X.sum(1, keepdims=True)
        lc1 = (a.obs["sim_cell_type"].astype(str) == "LC1").to_numpy()
        ratios[s] = cp[~lc1].mean() / cp[lc1].mean()
    assert ratios[0.0] < 0.08
    assert 0.15 < ratios[0.3] < 0.5, ratios


def test_composition_absent_types_and_small_samples():
    a = simu.simulate_raw_sample("s", donor="d", composition={"LC2": 0.8, "neutrophil": 0.2}, n_cells=150)
    c = _cells(a)
    assert c.n_obs == 150
    assert set(c.obs["sim_cell_type"].astype(str)) == {"LC2", "neutrophil"}
    assert 15 <= (c.obs["sim_cell_type"].astype(str) == "neutrophil").sum() <= 50
    b = simu.simulate_raw_sample("t", donor="e", n_cells=100)
    assert list(a.var_names) == list(b.var_names)
    assert "SIMULATED" in a.uns["simulation"]["note"]
    with pytest.raises(ValueError, match="unknown simulated types"):
        simu.simulate_raw_sample("s", donor="d", composition={"hepatocyte": 1.0})


@needs_shared(SHARED / "nyquist2022" / "scp1671_label_profiles.json")
def test_casein_levels_follow_real_milk():
    """CSN2 in SCP1671: 55-73 % of immune cells at a mean of 1.0-1.5; LC2 99.8 % at 6.3; CSN1S1 macs 95 % at 4.4."""
    profiles = json.loads((SHARED / "nyquist2022" / "scp1671_label_profiles.json").read_text())
    assert profiles  # the calibration source is there
    a = _cells(simu.simulate_raw_sample("cal", donor="d", n_cells=1500))
    x = _lognorm(a, ["CSN2"])[:, 0]
    t = a.obs["sim_cell_type"].astype(str).to_numpy()
    imm = (a.obs["sim_compartment"].astype(str) == "immune").to_numpy() & (t != "CSN1S1 macrophage")
    print(
        f"CSN2 immune {(x[imm] > 0).mean():.2f} at {x[imm].mean():.2f}; LC2 {x[t == 'LC2'].mean():.2f}; "
        f"CSN1S1 macrophage {(x[t == 'CSN1S1 macrophage'] > 0).mean():.2f} at {x[t == 'CSN1S1 macrophage'].mean():.2f}"
    )
    assert 0.5 <= (x[imm] > 0).mean() <= 0.78
    assert 0.9 <= x[imm].mean() <= 1.7
    assert 5.8 <= x[t == "LC2"].mean() <= 6.8
    assert (x[t == "CSN1S1 macrophage"] > 0).mean() >= 0.9 and 3.9 <= x[t == "CSN1S1 macrophage"].mean() <= 4.9
