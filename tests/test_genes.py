import numpy as np
import pandas as pd

from milkcells import genes


def test_mitochondrial_and_ribosomal_flags_ignore_case():
    symbols = pd.Index(["MT-CO1", "mt-nd1", "RPL3", "Rps6", "CSN2", "MTOR", "RPLP0"])
    assert genes.is_mitochondrial(symbols).tolist() == [True, True, False, False, False, False, False]
    assert genes.is_ribosomal(symbols).tolist() == [False, False, True, True, False, False, True]
    assert genes.is_mitochondrial([]).dtype == np.bool_ and genes.is_ribosomal(["RPS2"]).tolist() == [True]


def test_the_library_flags_genes_one_way():
    import inspect

    from milkcells import io, preprocess, qc

    for mod in (io, preprocess, qc):
        src = inspect.getsource(mod)
        assert '"MT-"' not in src and '("RPS", "RPL")' not in src, mod.__name__
