"""Reproduction report: Nyquist et al. 2022's composition-over-lactation results on SCP1671.

Runs milkcells' donor-aware composition model (replicates pooled, donor fixed
effects, overdispersion, within-donor permutation tests, Benjamini-Hochberg
q-values; see ``milkcells.composition_model``) on every dated sample of the
Single Cell Portal study SCP1671 (``scp1671_per_sample.tsv``: 50 of 59
samples, 13 donors) and prints each published result (Nyquist et al. 2022,
PNAS, Fig. 2B) beside ours, with a plain verdict: reproduced (same direction,
q < 0.05), direction only (same direction, q >= 0.05) or not reproduced.
Then the immune angle: the immune share per lactation stage and the immune
subtypes' shares of immune cells over lactation. With ``--out`` it writes
the tables and two figures (one line per donor).

    python scripts/nyquist_composition.py [path/to/scp1671_per_sample.tsv] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from milkcells import nyquist2022

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyquist2022" / "scp1671_per_sample.tsv"


def _fmt(x: float) -> str:
    return f"{x:.2g}"


def main(argv: list[str] | None = None) -> dict:
    """Print the report (and write tables and figures with ``--out``); return :func:`nyquist2022.reproduce`."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", default=str(DEFAULT), help="scp1671_per_sample.tsv")
    ap.add_argument("--out", default=None, help="folder for the tables and figures")
    ap.add_argument("--n-perm", type=int, default=9999, help="permutations per test")
    args = ap.parse_args(argv)
    res = nyquist2022.reproduce(args.path, n_perm=args.n_perm)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 120)
    print(
        f"SCP1671: {res['n_samples']} samples, {res['n_dated']} dated, from {res['n_donors']} donors; "
        f"{res['n_units']} donor-time units after pooling replicates."
    )
    print(
        "Model: share ~ donor + log2(days), quasi-binomial (Williams overdispersion), within-donor "
        "permutation p, BH q; odds ratios per doubling of days postpartum.\n"
    )
    r = res["results"]
    print("Published result vs ours")
    for _, row in r.iterrows():
        print(
            f"- {row['claim']}\n    published: {row['published']}\n"
            f"    ours: {row['direction']}, OR {row['odds_ratio']}, p = {_fmt(row['pvalue'])}, "
            f"q = {_fmt(row['qvalue'])}; naive Spearman on our samples R = {row['spearman_r']:+.3f} "
            f"(p = {_fmt(row['spearman_p'])})\n    verdict: {row['verdict'].upper()} ({row['why']})"
        )
    eff = res["effects"]
    cols = [
        "label",
        "n_donors_informative",
        "odds_ratio",
        "or_ci_low",
        "or_ci_high",
        "pvalue",
        "qvalue",
        "spearman_r",
        "spearman_p",
        "note",
    ]
    for level, what in (
        ("compartment", "Compartments (share of all cells; epithelial is the rest)"),
        ("cell_type", "Cell types (share of all cells)"),
        ("within_compartment", "Within compartments (immune subtypes: share of immune cells)"),
    ):
        print(f"\n{what}")
        print(eff.loc[eff["level"] == level, cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print("\nImmune share per lactation stage (typical donor, 95 % interval over donors)")
    for key in ("stages", "stages_coarse"):
        print(res[key].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.out:
        from milkcells import plots
        from milkcells.storage import save_figure, write_table

        out = Path(args.out)
        write_table(r, out / "nyquist_reproduction.tsv")
        write_table(eff, out / "composition_time.tsv")
        write_table(res["by_stage"], out / "composition_stage.tsv")
        write_table(res["immune_by_donor"], out / "immune_by_donor.tsv")
        table = res["table"]
        immune = sorted(
            table.loc[(table["level"] == "cell_type") & (table["compartment"] == "immune"), "label"].unique()
        )
        panels = [("compartment", "immune"), *[("within_compartment", t) for t in immune]]
        save_figure(
            plots.composition_over_days(
                table, eff, panels=panels, title="Immune cells in milk over lactation (SCP1671)"
            ),
            out / "immune_over_days.png",
        )
        save_figure(plots.composition_over_days(table, eff), out / "composition_over_days.png")
        print(f"\ntables and figures written to {out}/")
    return res


if __name__ == "__main__":
    main()
