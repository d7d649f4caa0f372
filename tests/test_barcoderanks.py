import numpy as np
import pytest

from milkcells import barcoderanks


def test_raw_and_filtered_detected(raw_sample, called_sample):
    assert barcoderanks.is_raw_matrix(raw_sample)
    assert not barcoderanks.is_raw_matrix(called_sample)


def test_barcode_ranks_on_two_populations(rng):
    totals = np.concatenate([rng.lognormal(np.log(3000), 0.3, 500), rng.lognormal(np.log(150), 0.4, 5000)])
    pts = barcoderanks.barcode_ranks(totals, lower=50)
    assert 400 < pts["inflection"] < 1500
    assert 300 < pts["inflection_rank"] < 700


def test_too_few_totals_for_the_curve():
    with pytest.raises(ValueError, match="too few"):
        barcoderanks.barcode_ranks(np.array([1.0, 2.0]), lower=100)


def test_filtered_with_small_cells_stays_filtered(rng):
    # lactocytes and 3x as many small neutrophils, no empty droplets: not a raw matrix
    totals = np.concatenate([rng.lognormal(np.log(5000), 0.3, 500), rng.lognormal(np.log(800), 0.3, 1500)])
    assert not barcoderanks.is_raw_matrix(np.round(totals))


def test_barcode_ranks_matches_dropletutils_figures():
    # DropletUtils 1.18.1 barcodeRanks on these totals: knee 2052, inflection 931 (lower 100)
    rng = np.random.default_rng(0)
    totals = np.concatenate([rng.lognormal(np.log(3000), 0.3, 500), rng.lognormal(np.log(150), 0.4, 5000),
                             rng.integers(1, 20, 10000)]).round()  # fmt: skip
    pts = barcoderanks.barcode_ranks(totals, lower=100)
    assert pts["knee"] == pytest.approx(2052) and pts["inflection"] == pytest.approx(931)
