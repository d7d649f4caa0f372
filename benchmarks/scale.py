"""Atlas scale on one workstation: the workflow beside a plain scanpy script, at several sizes.

**The data are simulated** (:func:`milkcells.demo.simulate_milk_sample`): per size, 12
samples from 6 donors, already cell-called (no empty droplets, but with the simulator's
doublets and dying cells), 20,000 genes. Each sample is drawn in chunks of at most 2,000 cells
(each chunk its own seed) and cached under ``--workdir``, so a rerun simulates nothing.

Per size it runs

- the whole workflow (``snakemake --cores <all>``, a fresh output directory), and
- ``benchmarks/plain_scanpy.py`` (a scanpy tutorial script: QC, normalise, batch-aware HVG,
  scale, PCA, neighbours, UMAP, Leiden, Wilcoxon markers, write h5ad) on the same files,

one after the other, never at once (and first times reading the input matrices and one pass
over their non-zeros: the floor of any analysis of these files), and measures each one's wall time and peak memory (the
summed resident set size of the whole process tree, polled every 0.2 s; also each rule's largest
job's peak and the machine's mean load average, since other work on the machine slows a run). A run
whose process tree passes ``--mem-cap`` (default 85 % of the machine's memory) is stopped: for the
plain script that is reported as a result (it does not fit), for the workflow as a failure. It
prints per size
both figures, their ratio, the workflow's time per rule (summed over the rule's jobs, from
Snakemake's log) and the agreement of the calls with the simulation's truth
(:func:`milkcells.demo.truth_agreement`: compartment accuracy, cell-type macro-F1, ARI; for
the plain script, the ARI of its Leiden clusters against the true types). At the end it fits the
exponent of time against cells over the sizes >= 50,000 and writes

- ``<out>`` (default ``<workdir>/scale.tsv``): one row per size,
- ``<out stem>_rules.tsv``: per size and rule: jobs, summed and longest job time, the largest
  job's peak RSS and input size (MB, the largest seen during the run, since most inputs are
  ``temp()`` files; what ``workflow/rules/common.smk`` sizes resources from),
- ``<out stem>.png``: time and peak memory against cells, both tools.

numba's on-disk cache is kept in ``<workdir>/numba_cache`` (as ``make run`` keeps it in
``.cache/numba``): the first size pays the compilation once.

From a clean clone::

    make install
    .venv/bin/python benchmarks/scale.py                                  # 10k, 50k, 110k, 250k cells
    .venv/bin/python benchmarks/scale.py --sizes 10000 50000 --workdir /tmp/scale
    .venv/bin/python benchmarks/scale.py --sizes 3000 --no-plain          # a quick check

On 2 cores (README), one run at 3002446: 110,000 cells 536 s / 7.1 GB against plain scanpy's
599 s / 17.1 GB (ratio 0.89); 250,000 cells 1,506 s / 15.5 GB (plain scanpy stopped at the memory
cap, 21.7 GB); time exponent 1.02 from 50,000 to 250,000 cells.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = (10_000, 50_000, 110_000, 250_000)
N_DONORS = 6
CHUNK = 2000


# ---------------------------------------------------------------------------------------------
# input


def sample_design(n_samples: int) -> pd.DataFrame:
    """Donors each with an early and a late sample (days postpartum), batches = donors."""
    rows = []
    for i in range(n_samples):
        donor = f"SIM{i % N_DONORS + 1}"
        days = (5 + 3 * (i % N_DONORS)) if i < N_DONORS else (90 + 20 * (i % N_DONORS))
        rows.append(
            {
                "sample": f"{donor}_d{days:03d}",
                "donor": donor,
                "batch": f"batch_{donor}",
                "sample_type": "milk",
                "days_postpartum": days,
            }
        )
    return pd.DataFrame(rows)


def _chunk(args):
    from milkcells import demo

    sample, donor, days, n, k, n_genes, seed = args
    a = demo.simulate_milk_sample(
        sample, donor=donor, days_postpartum=days, n_cells=n, n_empty=0, n_genes=n_genes, seed=seed * 1000 + k
    )
    a.obs_names = [f"{bc}-{k}" for bc in a.obs_names]
    return a


def simulate(size: int, folder: Path, *, n_samples: int, n_genes: int, workers: int, seed: int = 0) -> pd.DataFrame:
    """Write the samples of one size to ``folder`` (cached); return the sample sheet."""
    import anndata as ad
    import scipy.sparse as sp

    folder.mkdir(parents=True, exist_ok=True)
    design = sample_design(n_samples)
    # sample sizes vary (0.6x to 1.4x the mean), as real samples do; they sum to `size`
    w = np.linspace(0.6, 1.4, n_samples)[np.random.default_rng(seed).permutation(n_samples)]
    # the simulator adds 5 % doublets and 4 % dying cells to n_cells
    n_cells = np.maximum(np.round(w / w.sum() * size / 1.09).astype(int), 20)
    design["n_cells"] = n_cells
    design["path"] = [str(folder / f"{s}.h5ad") for s in design["sample"]]
    stamp = folder / "design.json"
    want = {"size": size, "n_genes": n_genes, "n_samples": n_samples, "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()) == want and all(Path(p).exists() for p in design["path"]):
        return design
    jobs = []
    for r in design.itertuples():
        sizes = [CHUNK] * (r.n_cells // CHUNK) + ([r.n_cells % CHUNK] if r.n_cells % CHUNK else [])
        if len(sizes) > 1 and sizes[-1] < 10:
            sizes[-2] += sizes.pop()
        jobs += [(r.sample, r.donor, r.days_postpartum, n, k, n_genes, seed) for k, n in enumerate(sizes)]
    parts: dict[str, list] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for job, a in zip(jobs, pool.map(_chunk, jobs), strict=True):
            parts.setdefault(job[0], []).append(a)
    for r in design.itertuples():
        a = ad.concat(parts.pop(r.sample), merge="first")
        a.X = sp.csr_matrix(a.X, dtype=np.float32)
        a.uns["simulation"] = {
            "note": "SIMULATED data (milkcells.demo.simulate_milk_sample), not real milk",
            "n_cells": int(r.n_cells),
            "chunks_of": CHUNK,
        }
        a.write_h5ad(r.path)
    stamp.write_text(json.dumps(want))
    return design


# ---------------------------------------------------------------------------------------------
# measuring


def run_measured(cmd: list[str], *, cwd: Path, log: Path, env: dict, mem_cap_gb: float | None = None, watch=()) -> dict:
    """Run ``cmd``; wall time and peak summed RSS of its process tree (polled every 0.2 s).

    With ``mem_cap_gb`` the tree is killed when its RSS passes the cap (``capped`` in the result:
    a run that would not fit in the machine's memory, stopped before the kernel's OOM killer picks
    a victim). ``watch``: paths whose largest size seen during the run is returned (``sizes``;
    temporary files are gone once the run ends).
    """
    import signal

    import psutil

    t0 = time.perf_counter()
    peak = 0
    capped = False
    watch = [Path(w) for w in watch]
    sizes: dict[Path, int] = {}
    disk_peak = 0  # the watched files' summed size, at its largest
    polls = 0
    per_job: dict[int, list] = {}  # pid -> [script, peak rss]
    loads: list[float] = []  # the machine's 1-min load average: other work on the machine slows the run
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            rss = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                procs = []
            for p in procs:
                try:
                    r = p.memory_info().rss
                    rss += r
                    if p.pid not in per_job:
                        script = next((Path(a).name for a in p.cmdline() if ".snakemake/scripts/" in a), "")
                        # Snakemake's copy of a rule's script: tmpXXXX.<script>.py
                        per_job[p.pid] = [script.split(".", 1)[-1].removesuffix(".py") if script else "", 0]
                    per_job[p.pid][1] = max(per_job[p.pid][1], r)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak = max(peak, rss)
            loads.append(os.getloadavg()[0])
            if mem_cap_gb is not None and rss > mem_cap_gb * 1e9 and not capped:
                capped = True
                for q in reversed(procs):
                    try:
                        q.send_signal(signal.SIGKILL)
                    except psutil.NoSuchProcess:
                        pass
            if watch and polls % 5 == 0:
                now = 0
                for w in watch:
                    try:
                        size = w.stat().st_size
                    except OSError:
                        continue
                    sizes[w] = max(sizes.get(w, 0), size)
                    now += size
                disk_peak = max(disk_peak, now)
            polls += 1
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    for w in watch:  # the files still there at the end
        if w.exists():
            sizes[w] = max(sizes.get(w, 0), w.stat().st_size)
    jobs = pd.DataFrame([v for v in per_job.values() if v[0]], columns=["script", "rss"])
    script_peak = (jobs.groupby("script")["rss"].max() / 1e6).round(0).to_dict() if len(jobs) else {}
    return {
        "returncode": proc.returncode,
        "wall_s": wall,
        "peak_rss_gb": peak / 1e9,
        "script_peak_mb": script_peak,
        "load": float(np.mean(loads)) if loads else float("nan"),
        "capped": capped,
        "sizes": sizes,
        "disk_peak_gb": disk_peak / 1e9,
    }


_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")


def rule_times(log: Path) -> pd.DataFrame:
    """Per job: rule, start and end, parsed from a Snakemake log."""
    stamp = None
    start: dict[str, tuple[str, datetime]] = {}
    rows = []
    current_rule = None
    for line in log.read_text(errors="replace").splitlines():
        m = _STAMP.match(line)
        if m:
            stamp = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
            continue
        m = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line)
        if m:
            current_rule = m.group(1)
            continue
        m = re.match(r"^\s+jobid: (\d+)", line)
        if m and current_rule and stamp is not None:
            start[m.group(1)] = (current_rule, stamp)
            current_rule = None
            continue
        m = re.match(r"^Finished job(?:id)?:? (\d+)", line)
        if m and m.group(1) in start and stamp is not None:
            rule, t0 = start.pop(m.group(1))
            rows.append({"rule": rule, "seconds": (stamp - t0).total_seconds()})
    return pd.DataFrame(rows, columns=["rule", "seconds"])


def agreement(path: Path) -> dict:
    import anndata as ad

    from milkcells import demo

    a = ad.read_h5ad(path, backed="r")
    res = demo.truth_agreement(a)
    a.file.close()
    return {
        "n_cells_kept": res["n_kept"],
        "compartment_accuracy": res["compartment_accuracy"],
        "cell_type_macro_f1": res["cell_type_macro_f1"],
        "cell_type_ari": res["cell_type_ari"],
    }


def plain_agreement(path: Path) -> float:
    import anndata as ad
    from sklearn.metrics import adjusted_rand_score

    a = ad.read_h5ad(path, backed="r")
    obs = a.obs
    a.file.close()
    single = obs["sim_status"].astype(str) == "cell"
    return float(
        adjusted_rand_score(obs.loc[single, "sim_cell_type"].astype(str), obs.loc[single, "leiden"].astype(str))
    )


# ---------------------------------------------------------------------------------------------


def run_size(size: int, args, env: dict) -> tuple[dict, pd.DataFrame]:
    base = Path(args.workdir) / f"cells_{size}"
    t0 = time.perf_counter()
    design = simulate(size, base / "input", n_samples=args.samples, n_genes=args.genes, workers=args.cores)
    sim_s = time.perf_counter() - t0
    n_input = int(sum(_n_obs(p) for p in design["path"]))
    sheet = base / "samples.tsv"
    design.drop(columns=["n_cells"]).to_csv(sheet, sep="\t", index=False)
    read_s, nnz = read_and_pass(design["path"])
    row: dict = {
        "cells": size,
        "cells_input": n_input,
        "samples": args.samples,
        "cells_per_sample_max": int(design["n_cells"].max() * 1.09),
        "simulate_s": round(sim_s, 1),
        "nonzeros": nnz,
        "read_and_pass_s": round(read_s, 1),
    }
    print(
        f"\n== {size:,} cells ({n_input:,} barcodes in {args.samples} samples, {nnz:,} non-zeros; simulated "
        f"in {sim_s:.0f} s; reading the matrices and one pass over their non-zeros: {read_s:.1f} s)",
        flush=True,
    )
    out = base / "milkcells_out"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(base),
        "--cores",
        str(args.cores),
        "--config",
        f"samples={sheet}",
        f"outdir={out}",
        "--rerun-incomplete",
        "--nolock",
    ]
    inputs = rule_inputs(out, design)
    m = run_measured(
        cmd,
        cwd=base,
        log=base / "milkcells.log",
        env=env,
        mem_cap_gb=args.mem_cap,
        watch=sorted({p for paths in inputs.values() for p in paths}),
    )
    if m["capped"]:
        raise SystemExit(f"the workflow passed the memory cap ({args.mem_cap:.1f} GB) at {size} cells and was stopped")
    if m["returncode"]:
        raise SystemExit(f"the workflow failed at {size} cells; see {base / 'milkcells.log'}")
    row.update(
        {
            "milkcells_wall_s": round(m["wall_s"], 1),
            "milkcells_peak_gb": round(m["peak_rss_gb"], 2),
            "milkcells_load": round(m["load"], 2),
            # the h5ad files at their largest at once (inputs, intermediates, outputs): the scratch a run needs
            "milkcells_disk_peak_gb": round(m["disk_peak_gb"], 2),
            "milkcells_out_gb": round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e9, 2),
        }
    )
    row.update(agreement(out / "annotated.h5ad"))
    jobs = rule_times(base / "milkcells.log")
    rules = (
        jobs.groupby("rule")["seconds"]
        .agg(jobs="count", total_s="sum", max_s="max")
        .reset_index()
        .sort_values("total_s", ascending=False)
    )
    rules.insert(0, "cells", size)
    rules["peak_mb"] = rules["rule"].map(m["script_peak_mb"])
    rules["input_mb"] = rules["rule"].map(input_sizes(inputs, m["sizes"]))
    print(
        f"milkcells: {m['wall_s']:.0f} s, peak {m['peak_rss_gb']:.2f} GB (mean load {m['load']:.1f}), h5ad files "
        f"{row['milkcells_disk_peak_gb']:.1f} GB at most, output {row['milkcells_out_gb']:.1f} GB; compartments "
        f"{row['compartment_accuracy']:.3f} correct, cell-type macro-F1 {row['cell_type_macro_f1']:.3f}, "
        f"ARI {row['cell_type_ari']:.3f}",
        flush=True,
    )
    if not args.keep:
        for h5 in out.rglob("*.h5ad"):
            h5.unlink()
    print("  rule time (s, summed over jobs; longest job); largest job's peak RSS and input (MB):")
    for r in rules.itertuples():
        print(
            f"    {r.rule:24s} {r.jobs:3d} x  {r.total_s:7.0f}  ({r.max_s:4.0f})  {r.peak_mb:7.0f}  {r.input_mb:7.0f}"
        )
    if args.plain:
        h5 = base / "plain.h5ad"
        m = run_measured(
            [sys.executable, str(REPO / "benchmarks" / "plain_scanpy.py"), str(h5), *design["path"]],
            cwd=base,
            log=base / "plain.log",
            env=env,
            mem_cap_gb=args.mem_cap,
        )
        if m["capped"] or m["returncode"] == -9:
            # the plain script does not fit in this machine's memory at this size: a result, not an error
            # (stopped at the cap, or killed by the kernel's OOM killer when it jumped past it between polls)
            how = f"memory cap {args.mem_cap:.1f} GB" if m["capped"] else "killed (SIGKILL: the kernel's OOM killer)"
            row.update(
                {
                    "plain_wall_s": float("nan"),
                    "plain_peak_gb": round(m["peak_rss_gb"], 2),
                    "plain_load": round(m["load"], 2),
                    "ratio": float("nan"),
                    "plain_cluster_ari": float("nan"),
                    "plain_note": f"stopped at {m['peak_rss_gb']:.1f} GB after {m['wall_s']:.0f} s ({how})",
                }
            )
            print(f"plain scanpy: {row['plain_note']}: it does not fit in this machine's memory", flush=True)
            h5.unlink(missing_ok=True)
            return row, rules
        if m["returncode"]:
            raise SystemExit(f"the plain scanpy script failed at {size} cells; see {base / 'plain.log'}")
        row.update(
            {
                "plain_wall_s": round(m["wall_s"], 1),
                "plain_peak_gb": round(m["peak_rss_gb"], 2),
                "plain_load": round(m["load"], 2),
                "ratio": round(row["milkcells_wall_s"] / m["wall_s"], 2),
                "plain_cluster_ari": round(plain_agreement(h5), 3),
            }
        )
        print(
            f"plain scanpy: {m['wall_s']:.0f} s, peak {m['peak_rss_gb']:.2f} GB (mean load {m['load']:.1f}); "
            f"ratio {row['ratio']:.2f}; "
            f"ARI of its clusters {row['plain_cluster_ari']:.3f}",
            flush=True,
        )
        if not args.keep:
            h5.unlink(missing_ok=True)
    return row, rules


def rule_inputs(out: Path, design: pd.DataFrame) -> dict[str, list[Path]]:
    """Each rule's input files (its largest job's) in an output directory."""
    samples = [out / "samples" / s for s in design["sample"]]
    inter = out / "intermediate"
    biggest = Path(design["path"][design["n_cells"].idxmax()])
    big = out / "samples" / design["sample"][design["n_cells"].idxmax()]
    annotated = [out / "annotated.h5ad"]
    singlets = [s / "singlets.h5ad" for s in samples]
    ambient = [inter / "ambient_corrected.h5ad"]
    pre = [inter / "preprocessed.h5ad"]
    return {
        "call_cells": [biggest],
        "qc": [big / "called.h5ad"],
        "preprocess": singlets,
        "qc_summary": singlets,
        "integrate": pre,
        "cluster": [inter / "integrated.h5ad"],
        "umap": [inter / "clustered.h5ad"],
        "markers": [inter / "clustered.h5ad"] + pre,
        "annotate_compartments": [inter / "clustered.h5ad"] + pre,
        "ambient": [inter / "compartments_called.h5ad"] + pre,
        "gene_scale": ambient,
        "subcluster": ambient + pre,
        "compartment_umap": [inter / "compartments" / "epithelial.h5ad", inter / "umap.h5ad"],
        "annotated": ambient
        + pre
        + [inter / "umap.h5ad"]
        + [inter / "compartments" / f"{c}.h5ad" for c in ("epithelial", "immune", "stromal")],
        "composition": annotated,
        "agreement": annotated,
        "plot_umap": annotated,
        "plot_markers": annotated,
    }


def input_sizes(inputs: dict[str, list[Path]], sizes: dict[Path, int]) -> dict[str, float]:
    """Each rule's input size in MB, from the largest size of each file seen during the run."""
    return {
        rule: round(sum(sizes.get(p, 0) for p in paths) / 1e6, 1) if any(p in sizes for p in paths) else float("nan")
        for rule, paths in inputs.items()
    }


def read_and_pass(paths) -> tuple[float, int]:
    """Seconds to read every input matrix and make one pass over its non-zeros, and the non-zeros.

    The time is the floor any analysis of these files pays.
    """
    import anndata as ad

    t0 = time.perf_counter()
    nnz, total = 0, 0.0
    for p in paths:
        X = ad.read_h5ad(p).X
        nnz += int(X.nnz)
        total += float(np.log1p(X.data).sum())  # one arithmetic pass over the non-zeros
    return time.perf_counter() - t0, nnz


def _n_obs(path: str) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return int(f["X"].attrs["shape"][0]) if "shape" in f["X"].attrs else int(f["X"].shape[0])


def exponent(table: pd.DataFrame, col: str, *, min_cells: int = 50_000) -> float:
    t = table[(table["cells"] >= min_cells) & table[col].notna()]
    if len(t) < 2:
        return float("nan")
    return float(np.polyfit(np.log(t["cells"]), np.log(t[col]), 1)[0])


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for tool, style in (("milkcells", "o-"), ("plain", "s--")):
        if f"{tool}_wall_s" not in table:
            continue
        label = "milkcells workflow" if tool == "milkcells" else "plain scanpy script"
        axes[0].plot(table["cells"], table[f"{tool}_wall_s"] / 60, style, label=label)
        axes[1].plot(table["cells"], table[f"{tool}_peak_gb"], style, label=label)
    axes[0].set_ylabel("wall time (min)")
    axes[1].set_ylabel("peak memory, process tree (GB)")
    for ax in axes:
        ax.set_xlabel("cells")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"simulated milk, {os.cpu_count()} cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="total cells per run")
    p.add_argument("--samples", type=int, default=12)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--workdir", default=str(REPO / "benchmarks" / "scale_runs"))
    p.add_argument("--out", default=None, help="TSV (default <workdir>/scale.tsv)")
    p.add_argument("--no-plain", dest="plain", action="store_false", help="skip the plain scanpy script")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the h5ad files of each size (default: deleted once measured, keeping tables, "
        "figures and logs: 250,000 cells' outputs take ~30 GB)",
    )
    p.add_argument(
        "--mem-cap",
        type=float,
        default=None,
        help="GB of the process tree at which a run is stopped (default 85 %% of the machine's memory)",
    )
    args = p.parse_args(argv)
    if args.mem_cap is None:
        import psutil

        args.mem_cap = 0.85 * psutil.virtual_memory().total / 1e9
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.workdir = str(work)
    out = Path(args.out) if args.out else work / "scale.tsv"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(work / "numba_cache"))
    env.setdefault("MPLCONFIGDIR", str(work / "mplconfig"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    rows, rules = [], []
    for size in args.sizes:
        row, r = run_size(size, args, env)
        rows.append(row)
        rules.append(r)
        table = pd.DataFrame(rows)
        table.to_csv(out, sep="\t", index=False)  # after every size: a partial run leaves its figures
        pd.concat(rules).to_csv(out.with_name(out.stem + "_rules.tsv"), sep="\t", index=False)
    table = pd.DataFrame(rows)
    print("\n" + table.to_string(index=False))
    for col in ("milkcells_wall_s", "plain_wall_s"):
        if col in table:
            e = exponent(table, col)
            if e == e:
                print(f"{col}: time ~ cells^{e:.2f} over the sizes >= 50,000")
    plot(table, out.with_suffix(".png"))
    print(f"written: {out}, {out.with_name(out.stem + '_rules.tsv')}, {out.with_suffix('.png')}")
    return table


if __name__ == "__main__":
    main()
