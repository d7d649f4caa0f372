"""Simulated human-milk droplets: the embedded demo data.

**These data are simulated.** No real milk count matrix ships with milkcells;
the demo is generated, seeded and reproducible, by :func:`simulate_milk_sample`.
Each sample holds the raw droplets of one 10x run: cells of eleven milk cell types
expressing published marker genes, ambient RNA dominated by casein and
lactalbumin in *every* droplet, empty droplets, heterotypic doublets and dying
high-mitochondrial cells, with a donor effect and an immune share that falls
over lactation. The truth is in ``obs``: ``sim_status`` (``cell``, ``doublet``,
``dying``, ``empty``), ``sim_compartment``, ``sim_cell_type`` and, for
doublets, ``sim_doublet_of`` (the two cell types).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "SIM_CELL_TYPES",
    "sample_sheet",
    "immune_share",
    "simulate_milk_sample",
    "truth_agreement",
]

_MITO = [
    "MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3",
    "MT-ND3", "MT-ND4L", "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB",
]  # fmt: skip
_RIBO = [f"RPL{i}" for i in range(3, 15)] + [f"RPS{i}" for i in range(2, 14)]
_HOUSEKEEPING = [
    "ACTB", "GAPDH", "B2M", "MALAT1", "TMSB4X", "FTL", "FTH1", "EEF1A1", "TPT1",
    "MYL6", "UBC", "PPIA", "NEAT1", "HSPA1A", "VIM",
]  # fmt: skip
#: Milk-protein transcripts: hugely expressed by lactocytes and the bulk of ambient RNA.
MILK_GENES = {"CSN2": 0.14, "CSN3": 0.05, "LALBA": 0.08, "CSN1S1": 0.04, "XDH": 0.004, "BTN1A1": 0.004}
_EPI_CORE = ["EPCAM", "KRT8", "KRT18", "KRT19", "ELF3", "CLDN4", "CLDN3", "CD24", "KRT7"]
_IMM_CORE = ["PTPRC", "CORO1A", "LAPTM5", "CD53", "SRGN", "ITGB2", "ARHGDIB", "CD37"]


@dataclass(frozen=True)
class _CellType:
    compartment: str
    markers: tuple[str, ...]
    log_umis: float  # mean log library size
    milk: float = 0.0  # scale of the milk-protein programme (lactocytes)


#: Simulated cell types: compartment, marker genes (from the two milk studies'
#: published lists), typical library size.
SIM_CELL_TYPES: dict[str, _CellType] = {
    "LC1": _CellType(
        "epithelial",
        ("MT1E", "MT1F", "MT1G", "MT1X", "SLC30A1", "IL6R", "FOLR1", "JUN", "ATF3", "IER2", "MAFF", "VEGFA"),
        np.log(4000),
        0.5,
    ),
    "LC2": _CellType(
        "epithelial", ("NTRK2", "ELF5", "CHRDL2", "OLAH", "CA6", "LY6D", "UGP2", "SCP2", "FASN"), np.log(5000), 1.0
    ),
    "luminal progenitor": _CellType(
        "epithelial", ("SLPI", "ALDH1A3", "KIT", "KRT15", "KRT23", "MMP7", "PROM1", "BCL11A"), np.log(3500), 0.1
    ),
    "basal": _CellType(
        "epithelial", ("ACTA2", "TP63", "KRT5", "KRT14", "KRT17", "MYLK", "OXTR", "TAGLN"), np.log(3000)
    ),
    "GPNMB macrophage": _CellType(
        "immune",
        (
            "CD68",
            "C1QA",
            "C1QB",
            "CD14",
            "CD163",
            "CSF1R",
            "FCER1G",
            "TYROBP",
            "LYZ",
            "CD74",
            "HLA-DRA",
            "GPNMB",
            "EMILIN2",
            "LRP1",
            "APOE",
        ),
        np.log(3000),
    ),
    "CSN1S1 macrophage": _CellType(
        "immune",
        ("CD68", "C1QA", "C1QB", "CD14", "CD163", "CSF1R", "FCER1G", "TYROBP", "LYZ", "CD74", "HLA-DRA", "CTSL"),
        np.log(3000),
    ),
    "CD4 T cell": _CellType(
        "immune",
        ("CD3D", "CD3E", "CD2", "TRBC2", "ETS1", "LCK", "FYN", "CXCR4", "CD4", "IL7R", "CCR7", "LEF1"),
        np.log(1300),
    ),
    "CD8 T cell": _CellType(
        "immune",
        ("CD3D", "CD3E", "CD2", "TRBC2", "ETS1", "LCK", "FYN", "CXCR4", "CD8A", "CD8B", "GZMK", "NKG7"),
        np.log(1300),
    ),
    "B cell": _CellType(
        "immune", ("CD79A", "MS4A1", "CD19", "BANK1", "SEL1L3", "TCF4", "CD74", "HLA-DRA", "CXCR4"), np.log(1600)
    ),
    "neutrophil": _CellType(
        "immune", ("CXCL8", "CSF3R", "FCGR3B", "TREM1", "AQP9", "CEACAM8", "S100A8", "S100A12"), np.log(1000)
    ),
    "dendritic cell": _CellType(
        "immune",
        ("CD86", "CD83", "NR4A3", "GPR183", "CD1C", "CLEC10A", "FCER1A", "CD74", "HLA-DRA", "HLA-DQA1"),
        np.log(2200),
    ),
}

_EPI_MIX = {"LC2": 0.52, "LC1": 0.23, "luminal progenitor": 0.19, "basal": 0.06}
_IMM_MIX = {
    "GPNMB macrophage": 0.2,
    "CSN1S1 macrophage": 0.14,
    "neutrophil": 0.24,
    "CD4 T cell": 0.12,
    "CD8 T cell": 0.08,
    "dendritic cell": 0.12,
    "B cell": 0.1,
}
#: Milk-protein programme of cells that take up milk: CSN1S1 macrophages (Nyquist et al. 2022)
_CELL_MILK = {"CSN1S1 macrophage": {"CSN1S1": 0.02, "CSN2": 0.01}}


def immune_share(days_postpartum: float) -> float:
    """Simulated immune share of milk cells: ~24 % in colostrum, ~3 % in mature milk."""
    return float(0.03 + 0.22 * np.exp(-days_postpartum / 45.0))


def sample_sheet(prefix: str = "resources/demo") -> pd.DataFrame:
    """The demo design: three simulated donors, each at an early and a late time point."""
    rows = []
    for donor, days in (("SIM1", (4, 120)), ("SIM2", (10, 200)), ("SIM3", (6, 90))):
        for d in days:
            name = f"{donor}_d{d:03d}"
            rows.append(
                {
                    "sample": name,
                    "path": f"{prefix}/simulated_{name}.h5ad",
                    "donor": donor,
                    "batch": f"batch_{donor}",
                    "sample_type": "milk",
                    "days_postpartum": d,
                }
            )
    return pd.DataFrame(rows)


def _seed(*parts) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def _gene_universe(n_genes: int) -> list[str]:
    named = list(dict.fromkeys(
        _MITO + _RIBO + _HOUSEKEEPING + list(MILK_GENES) + _EPI_CORE + _IMM_CORE
        + [g for ct in SIM_CELL_TYPES.values() for g in ct.markers]
    ))  # fmt: skip
    n_filler = max(n_genes - len(named), 200)
    return named + [f"SIMG{i:05d}" for i in range(1, n_filler + 1)]


def _profiles(genes: list[str], donor: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Expression profile (fractions summing to 1) of each cell type for one donor."""
    idx = {g: i for i, g in enumerate(genes)}
    rng_g = np.random.default_rng(_seed("genes"))
    base = rng_g.gamma(0.35, 1.0, size=len(genes))
    for g in _HOUSEKEEPING:
        base[idx[g]] = rng_g.uniform(8, 30)
    for g in _RIBO:
        base[idx[g]] = rng_g.uniform(4, 10)
    for g in list(MILK_GENES) + _EPI_CORE + _IMM_CORE + _MITO:
        base[idx[g]] = 0.0
    for ct in SIM_CELL_TYPES.values():
        for g in ct.markers:
            base[idx[g]] = min(base[idx[g]], 0.02)
    base /= base.sum()
    # donor effect: a stable gene-wise scaling per donor (what integration removes)
    donor_fx = np.exp(np.random.default_rng(_seed("donor", donor)).normal(0.0, 0.3, len(genes)))
    mito = np.array([idx[g] for g in _MITO])
    out = {}
    for name, ct in SIM_CELL_TYPES.items():
        rng_t = np.random.default_rng(_seed("type", name))
        p = base * donor_fx * 0.82
        core = _EPI_CORE if ct.compartment == "epithelial" else _IMM_CORE
        for g in core:
            p[idx[g]] += 0.006 * rng_t.lognormal(0, 0.3)
        if name == "basal":  # basal cells: little luminal keratin
            for g in ("KRT8", "KRT18", "CLDN4", "CLDN3"):
                p[idx[g]] *= 0.25
        for g in ct.markers:
            p[idx[g]] += 0.007 * rng_t.lognormal(0, 0.4)
        for g, w in MILK_GENES.items():
            p[idx[g]] += ct.milk * w
        for g, w in _CELL_MILK.get(name, {}).items():
            p[idx[g]] += w
        p[mito] = 0.0
        p /= p.sum()
        p = 0.96 * p
        p[mito] = 0.04 / len(mito)
        out[name] = p
    ambient = (
        0.7 * out["LC2"]
        + 0.2 * out["LC1"]
        + 0.1 * np.mean([out[t] for t in SIM_CELL_TYPES if t not in ("LC1", "LC2")], axis=0)
    )
    return out, ambient / ambient.sum()


def simulate_milk_sample(
    sample: str,
    *,
    donor: str,
    days_postpartum: float,
    n_cells: int = 800,
    n_empty: int = 4000,
    n_genes: int = 1500,
    doublet_rate: float = 0.05,
    dying_rate: float = 0.04,
    ambient_umis: float = 120.0,
    seed: int = 0,
) -> ad.AnnData:
    """Simulate the raw droplets of one milk sample (a clearly labelled simulation).

    Parameters
    ----------
    sample, donor
        Names; the donor fixes the donor effect, the sample the random draws.
    days_postpartum
        Lactation time: sets the immune share (:func:`immune_share`) and a
        rising LC1 share.
    n_cells
        Number of real singlet cells (doublets and dying cells come on top).
    n_empty
        Number of empty droplets holding ambient RNA only; twice as many
        barely-used barcodes (1-20 UMIs) are added.
    n_genes
        Size of the gene universe (marker, mitochondrial, ribosomal,
        housekeeping and filler genes).
    doublet_rate, dying_rate
        Doublets and dying (high-mitochondrial, low-count) cells, as fractions of ``n_cells``.
    ambient_umis
        Median ambient UMIs per droplet (casein/lactalbumin-rich).
    seed
        Added to a hash of the sample name.

    Returns
    -------
    Raw droplets (barcodes x genes, integer counts in ``X``) with truth in
    ``obs["sim_status"]``, ``obs["sim_compartment"]``, ``obs["sim_cell_type"]``
    and the ambient profile in ``var["sim_ambient"]``.
    """
    if n_cells < 10:
        raise ValueError(f"n_cells must be at least 10, but {n_cells} was passed.")
    rng = np.random.default_rng(_seed(sample, seed))
    genes = _gene_universe(n_genes)
    profiles, ambient = _profiles(genes, donor)
    imm = immune_share(days_postpartum)
    lc1 = _EPI_MIX["LC1"] * (0.6 + 0.8 * (1 - np.exp(-days_postpartum / 90.0)))
    epi_mix = dict(_EPI_MIX, LC1=lc1)
    z = sum(epi_mix.values())
    mix = {k: (1 - imm) * v / z for k, v in epi_mix.items()}
    mix.update({k: imm * v for k, v in _IMM_MIX.items()})
    names = list(mix)
    types = rng.choice(names, size=n_cells, p=np.array([mix[k] for k in names]))
    n_doub = int(round(doublet_rate * n_cells))
    n_dying = int(round(dying_rate * n_cells))
    lib_fx = np.exp(rng.normal(0, 0.1))

    def draw_cells(cell_types: np.ndarray, scale: float = 1.0, mito_frac=None) -> np.ndarray:
        mats = []
        for t in cell_types:
            ct = SIM_CELL_TYPES[t]
            p = profiles[t]
            if mito_frac is not None:
                p = p.copy()
                mito = np.array([genes.index(g) for g in _MITO])
                p[mito] = 0.0
                f = rng.uniform(*mito_frac)
                p = (1 - f) * p / p.sum()
                p[mito] = f / len(mito)
            umis = np.exp(rng.normal(ct.log_umis, 0.35)) * lib_fx * scale
            lam = umis * p * rng.gamma(4.0, 0.25, size=len(p))  # NB, dispersion 0.25
            mats.append(rng.poisson(lam))
        return np.vstack(mats) if mats else np.zeros((0, len(genes)), dtype=np.int64)

    def draw_ambient(n: int, median: float, sd: float = 0.5) -> np.ndarray:
        tot = np.maximum(np.rint(np.exp(rng.normal(np.log(median), sd, n))), 0).astype(np.int64)
        return rng.multinomial(tot, ambient)

    singlets = draw_cells(types) + draw_ambient(n_cells, ambient_umis)
    pair = rng.choice(n_cells, size=(n_doub, 2), replace=True)
    doub_types = types[pair[:, 0]]
    doublets = draw_cells(doub_types) + draw_cells(types[pair[:, 1]]) + draw_ambient(n_doub, ambient_umis)
    dying_types = rng.choice(names, size=n_dying, p=np.array([mix[k] for k in names]))
    dying = draw_cells(dying_types, scale=0.35, mito_frac=(0.3, 0.7)) + draw_ambient(n_dying, ambient_umis)
    blocks = [sp.csr_matrix(singlets), sp.csr_matrix(doublets), sp.csr_matrix(dying)]
    for start in range(0, n_empty, 2000):
        n = min(2000, n_empty - start)
        blocks.append(sp.csr_matrix(draw_ambient(n, ambient_umis, 0.6)))
    for start in range(0, 2 * n_empty, 2000):  # barely used barcodes: most of a raw matrix
        n = min(2000, 2 * n_empty - start)
        blocks.append(sp.csr_matrix(draw_ambient(n, 4.0, 0.9)))
    X = sp.vstack(blocks).tocsr().astype(np.float32)
    keep_empty = np.asarray(X[n_cells + n_doub + n_dying :].sum(axis=1)).ravel() > 0
    keep = np.concatenate([np.ones(n_cells + n_doub + n_dying, bool), keep_empty])
    X = X[keep]

    status = ["cell"] * n_cells + ["doublet"] * n_doub + ["dying"] * n_dying + ["empty"] * int(keep_empty.sum())
    ctype = list(types) + ["doublet"] * n_doub + list(dying_types) + ["empty"] * int(keep_empty.sum())
    comp = [SIM_CELL_TYPES[t].compartment for t in types] + ["doublet"] * n_doub
    comp += [SIM_CELL_TYPES[t].compartment for t in dying_types] + ["empty"] * int(keep_empty.sum())
    order = rng.permutation(X.shape[0])
    barcodes = _barcodes(rng, X.shape[0])
    pair = [""] * n_cells + [f"{a}+{b}" for a, b in zip(types[pair[:, 0]], types[pair[:, 1]], strict=True)]
    pair += [""] * (len(status) - len(pair))
    obs = pd.DataFrame(
        {
            "sim_status": pd.Categorical(np.asarray(status)[order]),
            "sim_doublet_of": pd.Categorical(np.asarray(pair)[order]),
            "sim_compartment": pd.Categorical(np.asarray(comp)[order]),
            "sim_cell_type": pd.Categorical(np.asarray(ctype)[order]),
        },
        index=barcodes,
    )
    var = pd.DataFrame(
        {
            "gene_ids": [f"ENSGSIM{i:07d}" for i in range(len(genes))],
            "feature_types": "Gene Expression",
            "sim_ambient": ambient,
        },
        index=genes,
    )
    adata = ad.AnnData(X=X[order], obs=obs, var=var)
    adata.uns["simulation"] = {
        "note": "SIMULATED data generated by milkcells.demo.simulate_milk_sample; not real milk.",
        "sample": sample,
        "donor": donor,
        "days_postpartum": float(days_postpartum),
        "immune_share": imm,
        "n_cells": n_cells,
        "n_empty": n_empty,
        "seed": seed,
    }
    return adata


def _barcodes(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.array(list("ACGT"))
    seen: set[str] = set()
    out = []
    while len(out) < n:
        bc = "".join(rng.choice(letters, 16)) + "-1"
        if bc not in seen:
            seen.add(bc)
            out.append(bc)
    return out


def truth_agreement(adata: ad.AnnData, *, marker_table: pd.DataFrame | str | None = None) -> dict[str, object]:
    """Compare calls with the simulation's truth on the true singlets kept.

    Cell types are scored as in :func:`milkcells.agreement.compare_labels`:
    a call is correct when the true type is in its lineage (a subtype call is
    correct for a cell of its parent type); a coarser call or ``unassigned`` is not.

    Parameters
    ----------
    adata
        Annotated simulated cells: ``obs`` has ``sim_status``,
        ``sim_compartment``, ``sim_cell_type``, ``compartment`` and ``cell_type``.
    marker_table
        Marker table (or its path) the cells were annotated with (default: the
        shipped one); it gives the label hierarchy and which types can be called.

    Returns
    -------
    ``n_kept`` (barcodes), ``n_singlets`` (true singlets among them),
    ``non_singlet_share``, ``compartment_accuracy`` (``compartment`` vs
    ``sim_compartment``), ``cell_type_macro_f1`` (mean F1 over the true types
    the marker table knows), ``cell_type_recall`` (``{type: recall}`` of
    those types), ``unassigned_share`` (singlets with ``cell_type``
    ``unassigned``), ``absent_types`` (true types the table does not know),
    ``absent_type_unassigned`` (``{absent type: share unassigned}``) and, last,
    ``cell_type_ari`` (adjusted Rand index of ``cell_type`` vs
    ``sim_cell_type``, a secondary figure).
    """
    from .agreement import compare_labels

    status = adata.obs["sim_status"].astype(str)
    single = (status == "cell").to_numpy()
    obs = adata.obs.loc[single]
    comp_ok = (obs["compartment"].astype(str) == obs["sim_compartment"].astype(str)).to_numpy()
    truth, calls = obs["sim_cell_type"].astype(str), obs["cell_type"].astype(str)
    summary, per = compare_labels(truth, calls, marker_table=marker_table)
    known = per[per["level"] != "absent"]
    absent = per[per["level"] == "absent"]
    return {
        "n_kept": int(adata.n_obs),
        "n_singlets": int(single.sum()),
        "non_singlet_share": float(1 - single.mean()) if adata.n_obs else float("nan"),
        "compartment_accuracy": float(comp_ok.mean()) if len(obs) else float("nan"),
        "cell_type_macro_f1": summary["macro_f1"],
        "cell_type_recall": dict(zip(known["label"].astype(str), known["recall"].tolist(), strict=True)),
        "unassigned_share": summary["unassigned_share"],
        "absent_types": [str(t) for t in absent["label"]],
        "absent_type_unassigned": dict(
            zip(absent["label"].astype(str), absent["unassigned_share"].tolist(), strict=True)
        ),
        "cell_type_ari": summary["adjusted_rand_index"],
    }
