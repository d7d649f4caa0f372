"""Figures. Every function returns a :class:`~matplotlib.figure.Figure`."""

from __future__ import annotations

import anndata as ad
import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scanpy as sc  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .markertable import COMPARTMENTS, load_marker_table, marker_sets  # noqa: E402

__all__ = [
    "umap",
    "marker_dotplot",
    "qc_distributions",
    "composition_bars",
    "confusion_heatmap",
    "shares_over_time",
    "composition_over_days",
]


def umap(adata: ad.AnnData, color: str, *, ax=None, title: str | None = None) -> Figure:
    """UMAP coloured by an ``obs`` column."""
    if "X_umap" not in adata.obsm:
        raise ValueError("umap needs obsm['X_umap']")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 5))
    else:
        fig = ax.figure
    sc.pl.umap(
        adata,
        color=color,
        ax=ax,
        show=False,
        title=title or color,
        frameon=False,
        size=max(120000 / max(adata.n_obs, 1), 3),
    )
    return fig


def marker_dotplot(adata: ad.AnnData, *, groupby: str = "cell_type", marker_table=None, n_per_set: int = 4) -> Figure:
    """Dot plot of the top curated markers of each cell type present."""
    table = load_marker_table(marker_table)
    present = set(adata.obs[groupby].astype(str))
    genes: dict[str, list[str]] = {}
    parents = [None, *sorted(set(table.loc[table["parent"] != "", "parent"]))]
    for comp in COMPARTMENTS:
        for parent in parents:  # cell types, then subtypes
            sets = marker_sets(adata, table=table, level="cell_type", compartment=comp, parent=parent, min_genes=1)
            for label, gs in sets.items():
                if label in present:
                    genes[label] = gs[:n_per_set]
    if not genes:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "no typed cells", ha="center")
        ax.axis("off")
        return fig
    seen: set[str] = set()
    dedup = {}
    for k, v in genes.items():
        keep = [g for g in v if g not in seen]
        seen.update(keep)
        if keep:
            dedup[k] = keep
    dp = sc.pl.dotplot(adata, dedup, groupby=groupby, show=False, return_fig=True)
    dp.make_figure()
    return dp.fig


def qc_distributions(records: dict[str, dict]) -> Figure:
    """Draw per sample the barcode-rank curve and the QC histograms.

    The curve carries the calling threshold; the histograms of total counts, detected genes and
    mitochondrial % carry the QC thresholds.
    """
    samples = list(records)
    fig, axes = plt.subplots(len(samples), 4, figsize=(16, 2.8 * len(samples)), squeeze=False)
    for i, s in enumerate(samples):
        rec = records[s]
        cc, q = rec.get("cell_calling", {}), rec.get("qc", {})
        ax = axes[i, 0]
        if "curve_rank" in cc:
            ax.loglog(cc["curve_rank"], cc["curve_total"], lw=1.5)
            ax.axhline(cc["threshold"], color="red", ls="--", lw=1, label=f"called >= {cc['threshold']:.0f}")
            ax.legend(fontsize=7)
        flagged = any(r.get("flags") for r in (cc, q))
        ax.set(
            xlabel="barcode rank",
            ylabel="total UMIs",
            title=f"{s}: {cc.get('input_type', '')} input, {cc.get('method_used', '')}"
            + (" (FLAGGED)" if flagged else ""),
        )
        m = q.get("metrics", {})
        th = q.get("thresholds", {})
        for j, (key, lo, hi, lab, log) in enumerate(
            [
                ("total_counts", "min_counts", "max_counts", "total UMIs", True),
                ("n_genes_by_counts", "min_genes", "max_genes", "detected genes", True),
                ("pct_counts_mt", None, "max_pct_mito", "mitochondrial %", False),
            ],
            start=1,
        ):
            ax = axes[i, j]
            if key in m:
                v = np.asarray(m[key], dtype=float)
                bins = np.geomspace(max(v.min(), 1), max(v.max(), 2), 50) if log else 50
                ax.hist(v, bins=bins, color="0.6")
                if log:
                    ax.set_xscale("log")
                for t in (lo, hi):
                    if t and t in th and np.isfinite(th[t]):
                        ax.axvline(th[t], color="red", ls="--", lw=1)
            ax.set(xlabel=lab, ylabel="cells")
    fig.tight_layout()
    return fig


def composition_bars(table: pd.DataFrame, *, level: str = "cell_type", groupby: str = "sample") -> Figure:
    """Stacked bars of each sample's shares (samples ordered by days postpartum)."""
    df = table[table["level"] == level]
    wide = df.pivot_table(index=groupby, columns="label", values="fraction", aggfunc="sum").fillna(0)
    if "days_postpartum" in df:
        order = df.groupby(groupby)["days_postpartum"].first().sort_values(na_position="last").index
        wide = wide.loc[[o for o in order if o in wide.index]]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(wide) + 3), 4.5))
    bottom = np.zeros(len(wide))
    cmap = plt.get_cmap("tab20")
    for k, col in enumerate(wide.columns):
        ax.bar(wide.index.astype(str), wide[col], bottom=bottom, label=col, color=cmap(k % 20))
        bottom += wide[col].to_numpy()
    ax.set(ylabel="fraction of cells", title=f"{level.replace('_', ' ')} composition per sample")
    ax.tick_params(axis="x", rotation=60)
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def confusion_heatmap(confusion: pd.DataFrame, *, title: str = "author labels vs milkcells calls") -> Figure:
    """Row-normalised confusion matrix (rows: author labels, columns: calls), counts annotated."""
    frac = confusion.div(confusion.sum(axis=1).replace(0, 1), axis=0)
    fig, ax = plt.subplots(figsize=(0.55 * frac.shape[1] + 3, 0.45 * frac.shape[0] + 2))
    im = ax.imshow(frac.to_numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(frac.shape[1]), frac.columns, rotation=60, ha="right")
    ax.set_yticks(range(frac.shape[0]), frac.index)
    for i in range(frac.shape[0]):
        for j in range(frac.shape[1]):
            n = int(confusion.iat[i, j])
            if n:
                ax.text(
                    j,
                    i,
                    str(n),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if frac.iat[i, j] > 0.5 else "black",
                )
    ax.set(xlabel="milkcells cell type", ylabel="author label (mapped)", title=title)
    fig.colorbar(im, ax=ax, label="fraction of the author label")
    fig.tight_layout()
    return fig


def shares_over_time(table: pd.DataFrame, *, level: str = "cell_type", groupby: str = "sample") -> Figure:
    """Each label's per-sample share against days postpartum (one panel per label)."""
    df = table[(table["level"] == level) & table["days_postpartum"].notna()]
    labels = sorted(df["label"].unique())
    if not labels:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "no sample has days_postpartum", ha="center")
        ax.axis("off")
        return fig
    ncol = min(4, len(labels))
    nrow = int(np.ceil(len(labels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
    for ax, label in zip(axes.ravel(), labels, strict=False):
        d = df[df["label"] == label]
        donors = d["donor"].astype(str) if "donor" in d else pd.Series("", index=d.index)
        for k, (donor, dd) in enumerate(d.groupby(donors)):
            ax.plot(
                dd["days_postpartum"],
                dd["fraction"],
                "o-",
                ms=4,
                lw=0.8,
                label=donor,
                color=plt.get_cmap("tab10")(k % 10),
            )
        ax.set(title=label, xlabel="days postpartum", ylabel="share")
    for ax in axes.ravel()[len(labels) :]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=6, title="donor", title_fontsize=6)
    fig.tight_layout()
    return fig


def _effect_text(effects: pd.DataFrame | None, level: str, label: str) -> str:
    """The model's effect of one share as a short panel subtitle."""
    if effects is None or not len(effects):
        return ""
    hit = effects[(effects["level"] == level) & (effects["label"] == label)]
    if not len(hit):
        return ""
    e = hit.iloc[0]
    if not np.isfinite(e.get("estimate", np.nan)):
        return "not estimable"
    unit = "per doubling of days" if e.get("time_scale", "log2") == "log2" else "per 30 days"
    ci = (
        f"({e['or_ci_low']:.2f}-{e['or_ci_high']:.2f})"
        if np.isfinite(e["or_ci_low"]) and np.isfinite(e["or_ci_high"]) and e["or_ci_low"] > 0
        else "(interval unbounded)"
    )
    return f"OR {e['odds_ratio']:.2f} {unit}\n{ci}, q = {e['qvalue']:.2g}"


def composition_over_days(
    table: pd.DataFrame,
    effects: pd.DataFrame | None = None,
    *,
    panels: list[tuple[str, str]] | None = None,
    groupby: str = "sample",
    title: str | None = None,
) -> Figure:
    """Shares against days postpartum, one line per donor, with the donor-aware model's effect.

    Parameters
    ----------
    table
        :func:`~milkcells.composition.composition_table` output.
    effects
        :func:`~milkcells.composition.composition_over_time` output: each
        panel's title gives the odds ratio, its 95 % interval and q.
    panels
        ``(level, label)`` pairs; ``level`` is ``compartment`` or
        ``cell_type`` (share of all cells) or ``within_compartment`` (share of
        the label's compartment). Default: the compartments but the epithelial
        one, then every cell type.
    groupby
        The sample column.
    title
        Figure title.

    Returns
    -------
    The figure: days on a log axis, lactation stages shaded (named on top),
    replicates of a donor and time pooled, marker area growing with the cells
    behind each share.
    """
    from .lactation import STAGES

    if "days_postpartum" not in table or table["days_postpartum"].isna().all():
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "no sample has days_postpartum", ha="center")
        ax.axis("off")
        return fig
    t = table[table["days_postpartum"].notna()].copy()
    t["donor"] = t["donor"].astype(str) if "donor" in t else t[groupby].astype(str)
    comp = (
        t[t["level"] == "compartment"]
        .pivot_table(index=groupby, columns="label", values="n_cells", aggfunc="sum")
        .fillna(0)
    )
    meta = t.groupby(groupby)[["donor", "days_postpartum"]].first()
    if panels is None:
        panels = [("compartment", c) for c in comp.columns if c not in ("epithelial", "unassigned")]
        panels += [
            ("cell_type", c)
            for c in sorted(t.loc[t["level"] == "cell_type", "label"].unique())
            if "unassigned" not in c
        ]
    donors = sorted(meta["donor"].unique())
    colour = {d: plt.get_cmap("tab20" if len(donors) > 10 else "tab10")(k % 20) for k, d in enumerate(donors)}
    ncol = min(4, len(panels))
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 3.0 * nrow), squeeze=False)
    lo, hi = meta["days_postpartum"].min(), meta["days_postpartum"].max()
    edges = [0.5, *[b for _, b in STAGES[:-1]], max(hi * 1.5, 400)]
    for ax, (level, label) in zip(axes.ravel(), panels, strict=False):
        src_level = "compartment" if level == "compartment" else "cell_type"
        rows = t[(t["level"] == src_level) & (t["label"] == label)]
        num = rows.groupby(groupby)["n_cells"].sum().reindex(comp.index).fillna(0)
        if level == "within_compartment":
            den = comp[rows["compartment"].iloc[0]] if len(rows) else comp.sum(axis=1)
        else:
            den = comp.sum(axis=1)
        d = meta.assign(num=num, den=den).groupby(["donor", "days_postpartum"])[["num", "den"]].sum().reset_index()
        d = d[d["den"] > 0]
        for k in range(0, len(STAGES), 2):
            ax.axvspan(edges[k], edges[k + 1], color="0.93", lw=0, zorder=0)
        big = max(float(d["den"].max()), 1.0) if len(d) else 1.0
        for donor, dd in d.groupby("donor"):
            xs, ys = dd["days_postpartum"].clip(lower=1), 100 * dd["num"] / dd["den"]
            ax.plot(xs, ys, "-", lw=1, color=colour[donor], label=donor)
            ax.scatter(xs, ys, s=4 + 40 * np.sqrt(dd["den"] / big), color=colour[donor], zorder=3, lw=0)
        ax.set_xscale("log")
        ax.set_xlim(max(lo * 0.7, 0.8), hi * 1.4)
        what = (
            "% of all cells"
            if level != "within_compartment"
            else f"% of {rows['compartment'].iloc[0]} cells"
            if len(rows)
            else "%"
        )
        sub = _effect_text(effects, level, label)
        name = f"{label} (share of all cells)" if level == "compartment" else label
        ax.set_title(f"{name}\n{sub}" if sub else name, fontsize=8.5)
        ax.set(xlabel="days postpartum (log scale)", ylabel=what)
        ax.set_ylim(bottom=0)
    first = axes.ravel()[0]
    for ax in axes[0][: len(panels)]:
        top = ax.secondary_xaxis("top")
        mids = [np.sqrt(max(edges[k], 0.8) * edges[k + 1]) for k in range(len(STAGES))]
        shown = [(m, s) for m, (s, _) in zip(mids, STAGES, strict=True) if ax.get_xlim()[0] <= m <= ax.get_xlim()[1]]
        top.set_xticks(
            [m for m, _ in shown], [s.replace("transitional", "trans.") for _, s in shown], fontsize=5.5, color="0.45"
        )
        top.tick_params(length=0, pad=1)
        top.minorticks_off()
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    handles, names = first.get_legend_handles_labels()
    fig.legend(
        handles,
        names,
        title="donor",
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=7,
        title_fontsize=7,
        frameon=False,
    )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
