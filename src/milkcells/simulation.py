"""Simulated milk droplets that are *not* the annotator's mirror, for validating cell typing.

**These data are simulated.** Unlike the demo simulator (:mod:`milkcells.demo`,
which plants exactly the marker table's genes, perfectly exclusive), the
programmes here are written in this module from the literature and are never
read from ``data/markers.tsv``, and they are imperfect on purpose:

- ``marker_fraction``: only this share of each type's canonical markers (and of
  each compartment core's genes) is truly expressed; the rest stay at
  background. The draw is a property of the simulated biology: it depends on
  ``seed`` and the type, not on the sample.
- each expressed marker is on in only part of the type's cells (a per-gene
  share drawn in [0.5, 0.95]);
- ``sharing``: each type also expresses its sibling types' canonical markers
  (same lineage: LC1/LC2, the macrophages/monocytes/dendritic cells, T/NK,
  B/plasma, ...) at ``sharing`` times their owner's level;
- every type also has private genes (``SIMP_<type>_<k>``) so that clusters can
  separate types whose canonical markers are weak;
- mast cells and adipocytes are simulated although the marker table may not
  know them (types absent from the table);
- ambient RNA in every droplet, casein-rich, at levels calibrated on real milk:
  in Nyquist et al. 2022's portal data (SCP1671) CSN2 is detected in 55-73 % of
  immune cells at a mean log-normalised expression of 1.0-1.5, in 99.8 % of
  LC2 at 6.3 and in 95 % of CSN1S1 macrophages at 4.4.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["SIM_TYPES", "SimType", "default_composition", "doublet_removal", "simulate_raw_sample"]


@dataclass(frozen=True)
class SimType:
    """One simulated cell type: compartment, sibling group, canonical markers, library size, milk output."""

    compartment: str
    lineage: str
    canonical: tuple[str, ...]
    log_umis: float
    milk: float = 0.0  # share of the cell's transcripts that are milk-protein mRNA


# Canonical markers from the literature (Twigger et al. 2022, Nyquist et al. 2022, standard immune
# and stromal genes); written here, independently of the marker table.
SIM_TYPES: dict[str, SimType] = {
    "LC1": SimType(
        "epithelial",
        "lactocyte",
        ("MT1E", "MT1F", "MT1G", "MT1X", "MT2A", "SLC30A1", "IL6R", "FOLR1", "VEGFA", "MT1M"),
        np.log(4000),
        0.02,
    ),
    "LC2": SimType(
        "epithelial",
        "lactocyte",
        ("NTRK2", "ELF5", "CHRDL2", "OLAH", "CA6", "LY6D", "UGP2", "SCP2", "FASN"),
        np.log(5000),
        0.13,
    ),
    "luminal progenitor": SimType(
        "epithelial",
        "luminal",
        ("SLPI", "ALDH1A3", "KIT", "KRT15", "KRT23", "MMP7", "PROM1", "BCL11A"),
        np.log(3500),
        0.005,
    ),
    "hormone-responsive": SimType(
        "epithelial",
        "luminal",
        ("ESR1", "PGR", "PRLR", "AREG", "AGR2", "ANKRD30A", "FOXA1", "TFF1", "TFF3"),
        np.log(3500),
    ),
    "basal": SimType(
        "epithelial",
        "basal",
        ("ACTA2", "TP63", "KRT5", "KRT14", "KRT17", "MYLK", "OXTR", "TAGLN", "MME", "PROCR"),
        np.log(3000),
    ),
    "GPNMB macrophage": SimType(
        "immune",
        "myeloid",
        (
            "CD68",
            "C1QA",
            "C1QB",
            "CD14",
            "CD163",
            "CSF1R",
            "FCER1G",
            "TYROBP",
            "MSR1",
            "GPNMB",
            "EMILIN2",
            "LRP1",
            "APOE",
        ),
        np.log(3000),
    ),
    "CSN1S1 macrophage": SimType(
        "immune",
        "myeloid",
        ("CD68", "C1QA", "C1QB", "CD14", "CD163", "CSF1R", "FCER1G", "TYROBP", "MSR1", "CTSL"),
        np.log(3000),
    ),
    "monocyte": SimType("immune", "myeloid", ("CD14", "FCN1", "VCAN", "S100A8", "LYZ", "CD300E"), np.log(2500)),
    "dendritic cell": SimType(
        "immune", "myeloid", ("CD86", "CD83", "NR4A3", "GPR183", "CD1C", "CLEC10A", "FCER1A", "HLA-DQA1"), np.log(2200)
    ),
    "neutrophil": SimType(
        "immune",
        "granulocyte",
        ("CXCL8", "CSF3R", "FCGR3B", "TREM1", "AQP9", "CEACAM8", "S100A12", "S100A8"),
        np.log(1000),
    ),
    "eosinophil": SimType("immune", "granulocyte", ("CLC", "SYNE1", "SORL1", "ADGRE1", "IL5RA", "CCR3"), np.log(1200)),
    "mast cell": SimType("immune", "granulocyte", ("TPSAB1", "TPSB2", "CPA3", "MS4A2", "HDC", "GATA2"), np.log(2000)),
    "CD4 T cell": SimType(
        "immune",
        "lymphoid",
        ("CD3D", "CD3E", "CD3G", "TRBC2", "TRAC", "BCL11B", "CD5", "CD2", "CD4", "IL7R", "CCR7", "LEF1"),
        np.log(1300),
    ),
    "CD8 T cell": SimType(
        "immune",
        "lymphoid",
        ("CD3D", "CD3E", "CD3G", "TRBC2", "TRAC", "BCL11B", "CD5", "CD2", "CD8A", "CD8B", "GZMK", "NKG7"),
        np.log(1300),
    ),
    "NK cell": SimType("immune", "lymphoid", ("GNLY", "NKG7", "KLRD1", "KLRF1", "NCAM1", "XCL1", "GZMB"), np.log(1400)),
    "B cell": SimType("immune", "b", ("CD79A", "MS4A1", "CD19", "BANK1", "CD79B", "SEL1L3"), np.log(1600)),
    "plasma cell": SimType("immune", "b", ("JCHAIN", "MZB1", "TNFRSF17", "DERL3", "XBP1", "IGHA1"), np.log(3000)),
    "fibroblast": SimType(
        "stromal", "mesenchymal", ("DCN", "LUM", "COL1A1", "COL1A2", "PDGFRA", "MMP2", "PTN", "THY1"), np.log(3000)
    ),
    "pericyte": SimType("stromal", "mesenchymal", ("RGS5", "PDGFRB", "MCAM", "NOTCH3", "ANGPT2", "GJA4"), np.log(2500)),
    "endothelial": SimType("stromal", "vascular", ("CDH5", "PECAM1", "VWF", "CLDN5", "CD93", "ENG"), np.log(2500)),
    "adipocyte": SimType("stromal", "adipose", ("ADIPOQ", "PLIN1", "LEP", "CIDEA", "LIPE"), np.log(1500)),
}

#: Compartment programmes (canonical genes are subject to ``marker_fraction`` too).
_CORES = {
    "epithelial": ("EPCAM", "KRT8", "KRT18", "KRT19", "ELF3", "CLDN3", "CLDN4", "CD24", "KRT7", "MUC1", "SPINT2"),
    "immune": ("PTPRC", "CORO1A", "LAPTM5", "CD53", "SRGN", "ITGB2", "ARHGDIB", "CD37", "CXCR4", "HCST", "RAC2"),
    "stromal": ("SPARC", "IGFBP7", "COL4A1", "COL4A2", "CALD1", "MGP", "COL3A1"),
}
_HOUSEKEEPING = (
    "ACTB",
    "GAPDH",
    "B2M",
    "MALAT1",
    "TMSB4X",
    "FTL",
    "FTH1",
    "EEF1A1",
    "TPT1",
    "MYL6",
    "UBC",
    "PPIA",
    "NEAT1",
    "VIM",
)
_MITO = tuple(
    f"MT-{g}" for g in ("ND1", "ND2", "CO1", "CO2", "ATP8", "ATP6", "CO3", "ND3", "ND4L", "ND4", "ND5", "ND6", "CYB")
)
_RIBO = tuple([f"RPL{i}" for i in range(3, 15)] + [f"RPS{i}" for i in range(2, 14)])
#: Milk-protein transcripts of lactocytes (relative amounts).
_MILK = {"CSN2": 0.45, "CSN3": 0.15, "LALBA": 0.2, "CSN1S1": 0.12, "XDH": 0.04, "BTN1A1": 0.04}
_N_PRIVATE = 6
#: Ambient UMIs per droplet and the CSN1S1-macrophage milk uptake, calibrated on SCP1671 (see module docstring).
_AMBIENT_UMIS = 21.0
_UPTAKE = 0.009


def default_composition(days_postpartum: float) -> dict[str, float]:
    """Milk-like shares: mostly lactocytes, an immune share falling over lactation, few stromal cells."""
    imm = 0.03 + 0.22 * np.exp(-days_postpartum / 45.0)
    lc1 = 0.2 * (0.6 + 0.8 * (1 - np.exp(-days_postpartum / 90.0)))
    epi = {"LC2": 0.5, "LC1": lc1, "luminal progenitor": 0.15, "hormone-responsive": 0.05, "basal": 0.06}
    immune = {
        "GPNMB macrophage": 0.18,
        "CSN1S1 macrophage": 0.12,
        "monocyte": 0.05,
        "dendritic cell": 0.1,
        "neutrophil": 0.2,
        "eosinophil": 0.04,
        "mast cell": 0.03,
        "CD4 T cell": 0.1,
        "CD8 T cell": 0.07,
        "NK cell": 0.04,
        "B cell": 0.05,
        "plasma cell": 0.02,
    }
    stromal = {"fibroblast": 0.4, "pericyte": 0.2, "endothelial": 0.3, "adipocyte": 0.1}
    z_e, z_i, z_s = sum(epi.values()), sum(immune.values()), sum(stromal.values())
    out = {k: (1 - imm - 0.02) * v / z_e for k, v in epi.items()}
    out |= {k: imm * v / z_i for k, v in immune.items()}
    out |= {k: 0.02 * v / z_s for k, v in stromal.items()}
    return out


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("|".join(map(str, parts)).encode()))


def _genes(n_genes: int) -> list[str]:
    named = list(dict.fromkeys(
        _MITO + _RIBO + _HOUSEKEEPING + tuple(_MILK) + tuple(g for c in _CORES.values() for g in c)
        + tuple(g for t in SIM_TYPES.values() for g in t.canonical)
        + tuple(f"SIMP_{t.replace(' ', '_')}_{k}" for t in SIM_TYPES for k in range(_N_PRIVATE))
    ))  # fmt: skip
    return named + [f"SIMG{i:05d}" for i in range(1, max(n_genes - len(named), 200) + 1)]


def _programmes(genes: list[str], marker_fraction: float, sharing: float, seed: int):
    """Each type's mean profile, and its canonical genes with their per-gene share of cells 'on'."""
    idx = {g: i for i, g in enumerate(genes)}
    rng = _rng("background", seed)
    base = rng.gamma(0.3, 1.0, len(genes))
    for g in _HOUSEKEEPING:
        base[idx[g]] = rng.uniform(10, 40)
    for g in _RIBO:
        base[idx[g]] = rng.uniform(4, 12)
    named = (
        set(_MILK)
        | set(_MITO)
        | {g for c in _CORES.values() for g in c}
        | {g for t in SIM_TYPES.values() for g in t.canonical}
        | {g for g in genes if g.startswith("SIMP_")}
    )
    for g in named:
        base[idx[g]] = min(base[idx[g]], 0.01)
    base = base / base.sum()
    # the biology of this dataset: which canonical and core genes are truly expressed, how strongly
    expressed: dict[str, dict[str, float]] = {}
    for name, t in SIM_TYPES.items():
        r = _rng("type", name, seed)
        k = max(1, int(round(marker_fraction * len(t.canonical))))
        on = r.choice(len(t.canonical), size=k, replace=False)
        expressed[name] = {t.canonical[i]: 0.008 * r.lognormal(0, 0.5) for i in sorted(on)}
    cores = {}
    for comp, genes_c in _CORES.items():
        r = _rng("core", comp, seed)
        k = max(2, int(round(marker_fraction * len(genes_c))))
        on = r.choice(len(genes_c), size=k, replace=False)
        cores[comp] = {genes_c[i]: 0.006 * r.lognormal(0, 0.4) for i in sorted(on)}
    profiles, on_share = {}, {}
    for name, t in SIM_TYPES.items():
        r = _rng("profile", name, seed)
        p = base.copy() * 0.8
        core = dict(cores[t.compartment])
        if name == "basal":  # myoepithelial cells: little luminal keratin
            core = {g: w * (0.2 if g in ("KRT8", "KRT18", "CLDN3", "CLDN4", "CD24") else 1) for g, w in core.items()}
        if name == "neutrophil":
            core = {g: w * (0.4 if g == "PTPRC" else 1) for g, w in core.items()}
        for g, w in core.items():
            p[idx[g]] += w
        for k in range(_N_PRIVATE):
            p[idx[f"SIMP_{name.replace(' ', '_')}_{k}"]] += 0.004 * r.lognormal(0, 0.4)
        for g, w in expressed[name].items():
            p[idx[g]] += w
        if sharing > 0:
            for sib, ts in SIM_TYPES.items():
                if sib != name and ts.lineage == t.lineage:
                    for g, w in expressed[sib].items():
                        if g not in expressed[name]:
                            p[idx[g]] += sharing * w
        for g, w in _MILK.items():
            p[idx[g]] += t.milk * w
        if name == "CSN1S1 macrophage":  # milk taken up (Nyquist et al. 2022)
            p[idx["CSN1S1"]] += _UPTAKE * 0.5
            p[idx["CSN2"]] += _UPTAKE
        p = 0.96 * p / p.sum()
        p[[idx[g] for g in _MITO]] += 0.04 / len(_MITO)
        profiles[name] = p
        markers = [g for g in expressed[name]] + list(core)
        on_share[name] = (np.array([idx[g] for g in markers]), r.uniform(0.5, 0.95, len(markers)))
    ambient = 0.75 * profiles["LC2"] + 0.2 * profiles["LC1"] + 0.05 * np.mean(list(profiles.values()), axis=0)
    return profiles, on_share, ambient / ambient.sum()


def _heterotypic_pairs(types: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` pairs of cell indices, one epithelial and one immune cell each."""
    comp = np.array([SIM_TYPES[t].compartment for t in types])
    epi, imm = np.flatnonzero(comp == "epithelial"), np.flatnonzero(comp == "immune")
    if n and (not len(epi) or not len(imm)):
        raise ValueError("doublet_kind='heterotypic' needs epithelial and immune cells in the composition.")
    return np.column_stack([rng.choice(epi, size=n), rng.choice(imm, size=n)]) if n else np.zeros((0, 2), int)


def simulate_raw_sample(
    sample: str,
    *,
    donor: str,
    composition: dict[str, float] | None = None,
    days_postpartum: float = 30.0,
    n_cells: int = 300,
    n_empty: int = 2000,
    n_genes: int = 3000,
    marker_fraction: float = 1.0,
    sharing: float = 0.0,
    doublet_rate: float = 0.0,
    doublet_kind: str = "random",
    dying_rate: float = 0.03,
    ambient_umis: float | None = None,
    seed: int = 0,
) -> ad.AnnData:
    """Simulate the raw droplets of one milk sample (a clearly labelled simulation).

    Parameters
    ----------
    sample, donor
        Names; the donor fixes a gene-wise donor effect, the sample the draws.
    composition
        Type -> share (normalised; types not listed are absent); default
        :func:`default_composition` at ``days_postpartum``.
    days_postpartum
        Lactation time, for the default composition.
    n_cells
        Real singlet cells (doublets and dying cells come on top).
    n_empty
        Empty droplets (ambient RNA only); twice as many barely used barcodes are added.
    n_genes
        Size of the gene universe.
    marker_fraction, sharing
        The imperfections (module docstring); properties of the dataset (``seed``).
    doublet_rate, dying_rate
        Doublets and dying high-mitochondrial cells, shares of ``n_cells``.
    doublet_kind
        ``"random"``: each doublet joins two cells drawn at random (homotypic
        and heterotypic pairs, as in a droplet); ``"heterotypic"``: each joins
        one epithelial and one immune cell drawn at random from those
        compartments (the doublets that pass as immune cells carrying milk RNA
        or epithelial cells with immune genes).
    ambient_umis
        Median ambient UMIs per droplet; default calibrated on SCP1671.
    seed
        Seeds the dataset's biology and, with the sample name, the draws.

    Returns
    -------
    Raw droplets (integer counts in ``X``, float32 CSR) with the truth in
    ``obs["sim_status"]`` (cell, doublet, dying, empty), ``sim_compartment``,
    ``sim_cell_type`` and ``sim_doublet_of``.
    """
    comp = default_composition(days_postpartum) if composition is None else dict(composition)
    unknown = set(comp) - set(SIM_TYPES)
    if unknown:
        raise ValueError(f"unknown simulated types {sorted(unknown)}; known: {sorted(SIM_TYPES)}")
    if n_cells < 10:
        raise ValueError(f"n_cells must be at least 10, but {n_cells} was passed.")
    if doublet_kind not in ("random", "heterotypic"):
        raise ValueError(f"doublet_kind must be either 'random' or 'heterotypic', but {doublet_kind!r} was passed.")
    genes = _genes(n_genes)
    profiles, on_share, ambient = _programmes(genes, marker_fraction, sharing, seed)
    rng = _rng(sample, seed)
    donor_fx = np.exp(_rng("donor", donor, seed).normal(0, 0.25, len(genes)))
    names = [k for k, v in comp.items() if v > 0]
    w = np.array([comp[k] for k in names], dtype=float)
    types = rng.choice(names, size=n_cells, p=w / w.sum())
    amb_med = _AMBIENT_UMIS if ambient_umis is None else ambient_umis
    lib_fx = np.exp(rng.normal(0, 0.1))

    def cells(kinds, scale=1.0, mito=None) -> np.ndarray:
        out = np.zeros((len(kinds), len(genes)))
        for i, t in enumerate(kinds):
            p = profiles[t] * donor_fx
            mk, share = on_share[t]
            off = rng.random(len(mk)) > share  # this cell does not express these markers
            p = p.copy()
            p[mk[off]] = profiles[t][mk[off]] * 0.02
            p /= p.sum()
            if mito is not None:
                f = rng.uniform(*mito)
                mi = np.array([genes.index(g) for g in _MITO])
                p[mi] = 0
                p = (1 - f) * p / p.sum()
                p[mi] = f / len(mi)
            umis = np.exp(rng.normal(SIM_TYPES[t].log_umis, 0.35)) * lib_fx * scale
            out[i] = rng.poisson(umis * p * rng.gamma(4.0, 0.25, len(p)))
        return out

    def soup(n, median, sd=0.5) -> np.ndarray:
        tot = np.maximum(np.rint(np.exp(rng.normal(np.log(median), sd, n))), 0).astype(np.int64)
        return rng.multinomial(tot, ambient) if n else np.zeros((0, len(genes)))

    n_doub, n_dying = int(round(doublet_rate * n_cells)), int(round(dying_rate * n_cells))
    if doublet_kind == "random":
        pair = rng.choice(n_cells, size=(n_doub, 2))
    else:
        pair = _heterotypic_pairs(types, n_doub, rng)
    dying_types = rng.choice(names, size=n_dying, p=w / w.sum())
    blocks = [
        cells(types) + soup(n_cells, amb_med),
        cells(types[pair[:, 0]]) + cells(types[pair[:, 1]]) + soup(n_doub, amb_med),
        cells(dying_types, 0.35, (0.3, 0.7)) + soup(n_dying, amb_med),
        soup(n_empty, amb_med, 0.6),
        soup(2 * n_empty, max(amb_med / 4, 1.0), 0.9),
    ]
    X = sp.csr_matrix(np.vstack(blocks).astype(np.float32))
    n_real = n_cells + n_doub + n_dying
    keep = np.concatenate([np.ones(n_real, bool), np.asarray(X[n_real:].sum(axis=1)).ravel() > 0])
    X = X[keep]
    n_e = int(keep[n_real:].sum())
    status = ["cell"] * n_cells + ["doublet"] * n_doub + ["dying"] * n_dying + ["empty"] * n_e
    ctype = list(types) + ["doublet"] * n_doub + list(dying_types) + ["empty"] * n_e
    compartment = (
        [SIM_TYPES[t].compartment for t in types]
        + ["doublet"] * n_doub
        + [SIM_TYPES[t].compartment for t in dying_types]
        + ["empty"] * n_e
    )
    of = [""] * n_cells + [f"{types[a]}+{types[b]}" for a, b in pair] + [""] * (n_dying + n_e)
    order = rng.permutation(X.shape[0])
    obs = pd.DataFrame(
        {
            "sim_status": np.asarray(status)[order],
            "sim_compartment": np.asarray(compartment)[order],
            "sim_cell_type": np.asarray(ctype)[order],
            "sim_doublet_of": np.asarray(of)[order],
        },
        index=[f"{sample}_{i:06d}-1" for i in range(X.shape[0])],
    ).astype("category")
    var = pd.DataFrame(
        {"gene_ids": [f"ENSGSIMV{i:07d}" for i in range(len(genes))], "feature_types": "Gene Expression"}, index=genes
    )
    a = ad.AnnData(X=X[order], obs=obs, var=var)
    a.uns["simulation"] = {
        "note": "SIMULATED data from milkcells.simulation.simulate_raw_sample; not real milk.",
        "sample": sample,
        "donor": donor,
        "days_postpartum": float(days_postpartum),
        "n_cells": n_cells,
        "marker_fraction": marker_fraction,
        "sharing": sharing,
        "ambient_umis": amb_med,
        "seed": seed,
        "composition": {k: float(v) for k, v in comp.items()},
    }
    return a


def _epithelial_immune(obs: pd.DataFrame) -> np.ndarray:
    """Whether each droplet is a doublet of an epithelial and an immune cell (from ``sim_doublet_of``)."""
    pairs = obs["sim_doublet_of"].astype(str).str.split("+")
    return pairs.map(
        lambda p: len(p) == 2 and {SIM_TYPES[t].compartment for t in p if t in SIM_TYPES} == {"epithelial", "immune"}
    ).to_numpy(bool)


def doublet_removal(before: ad.AnnData, after: ad.AnnData) -> dict[str, float]:
    """How a doublet detector did on simulated droplets: ``before`` and ``after`` it (truth in ``obs``).

    Returns the numbers of epithelial-immune doublets and of singlets (``sim_status`` cell) in
    ``before``, the shares of epithelial-immune doublets and of all doublets removed, and the share
    of singlets lost.
    """
    kept = before.obs_names.isin(after.obs_names)
    status = before.obs["sim_status"].astype(str).to_numpy()
    ei, cell, doublet = _epithelial_immune(before.obs), status == "cell", status == "doublet"
    return {
        "epithelial_immune_doublets": int(ei.sum()),
        "singlets": int(cell.sum()),
        "removed_epithelial_immune": float((ei & ~kept).sum() / max(ei.sum(), 1)),
        "removed_doublets": float((doublet & ~kept).sum() / max(doublet.sum(), 1)),
        "singlets_lost": float((cell & ~kept).sum() / max(cell.sum(), 1)),
    }
