"""Drift benchmark: `drift_report` on 1M current x 1M reference rows x 30 features (25 numeric,
5 categorical), against a straightforward per-column scipy/pandas implementation.

    python -m benchmarks.drift_bench            # 1M x 1M x 30; baseline on 5 numeric columns
    python -m benchmarks.drift_bench --quick    # 100k rows, baseline on every column

The data is synthetic and seeded: numeric columns cycle through normal, lognormal (demand-like
tail), Poisson counts (ties), 0/1 and uniform-with-1%-nulls, a fifth of them shifted in the
current frame; categorical columns have 5 to 200 levels, 1% nulls and two levels unseen in the
reference. Timed: `drift_report` end to end (frames in, table and summary out), best of
`--repeats`. The baseline (scipy.stats.ks_2samp, scipy.stats.wasserstein_distance, numpy
quantile edges, pandas value_counts + scipy jensenshannon, one column at a time) runs on every
categorical column and on `--baseline-numeric` numeric columns (one of each kind); its time for
all 25 is scaled by column count, and the ratio on just those columns is reported as well.
Parity: both implementations' statistics on the baseline's columns must agree within the bounds
ml_assets/monitoring/drift.py states. Reports: benchmarks/results/drift.md and drift.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from ml_assets.monitoring import drift

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_S = 2.0
KINDS = ("normal", "lognormal", "counts", "binary", "uniform_nulls")
LEVELS = (5, 10, 20, 50, 200)


def make_frames(rows: int, n_numeric: int, n_categorical: int,
                seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)

    def numeric(kind: str, shift: float, n: int) -> np.ndarray:
        if kind == "normal":
            return rng.normal(shift, 1.0, n)
        if kind == "lognormal":
            return rng.lognormal(np.log(9.0) + shift, 0.9, n)
        if kind == "counts":
            return rng.poisson(3.0 * (1 + shift), n).astype(np.float64)
        if kind == "binary":
            return (rng.random(n) < 0.15 + shift / 4).astype(np.float64)
        x = rng.uniform(shift, 1 + shift, n)
        x[rng.random(n) < 0.01] = np.nan
        return x

    def categorical(levels: int, unseen: bool, n: int) -> pl.Series:
        names = pl.Series([f"L{k:03d}" for k in range(levels)] + ["new_a", "new_b"])
        p = 1 / np.arange(1, levels + 3) ** 0.8  # Zipf-like mix
        p[levels:] = p[levels:] * unseen
        codes = rng.choice(levels + 2, n, p=p / p.sum())
        return names.gather(codes).scatter(np.flatnonzero(rng.random(n) < 0.01), None)

    frames = []
    for side in ("current", "reference"):
        cols: dict[str, Any] = {}
        for i in range(n_numeric):
            shift = 0.2 if side == "current" and i % 5 == 4 else 0.0
            cols[f"num_{i:02d}_{KINDS[i % len(KINDS)]}"] = numeric(KINDS[i % len(KINDS)], shift,
                                                                   rows)
        for i in range(n_categorical):
            cols[f"cat_{i}"] = categorical(LEVELS[i % len(LEVELS)], side == "current", rows)
        frames.append(pl.DataFrame(cols).with_columns(pl.selectors.float().fill_nan(None)))
    return frames[0], frames[1]


# --- the straightforward baseline: one column at a time, scipy and pandas --------------------


def baseline_numeric(cur: pd.Series, ref: pd.Series) -> dict[str, float]:
    from scipy.stats import ks_2samp, wasserstein_distance

    c, r = cur.dropna().to_numpy(), ref.dropna().to_numpy()
    edges = np.unique(np.quantile(r, np.linspace(0, 1, drift.BINS + 1), method="lower"))

    def shares(x: np.ndarray, missing: int) -> np.ndarray:  # same bins as drift.py, unsorted
        below = np.sum(x < edges[0])
        at_min = np.sum(x == edges[0])
        inner = np.bincount(np.searchsorted(edges, x[(x > edges[0]) & (x <= edges[-1])], "left"),
                            minlength=len(edges))[1:]
        counts = np.array([below, at_min, *inner, np.sum(x > edges[-1]), missing], float)
        return np.maximum(counts / counts.sum(), drift.EPSILON)

    p, q = shares(c, cur.isna().sum()), shares(r, ref.isna().sum())
    return {"psi": float(np.sum((p - q) * np.log(p / q))), "ks": ks_2samp(c, r).statistic,
            "wasserstein_norm": wasserstein_distance(c, r) / r.std()}


def baseline_categorical(cur: pd.Series, ref: pd.Series) -> dict[str, float]:
    from scipy.spatial.distance import jensenshannon

    both = pd.concat([cur.value_counts(dropna=False), ref.value_counts(dropna=False)],
                     axis=1).fillna(0)
    return {"js": float(jensenshannon(both.iloc[:, 0], both.iloc[:, 1], base=2))}


def run_baseline(cur: pd.DataFrame, ref: pd.DataFrame, numeric: list[str],
                 categorical: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    stats, seconds = {}, {"numeric": 0.0, "categorical": 0.0}
    for kind, cols, fn in (("numeric", numeric, baseline_numeric),
                           ("categorical", categorical, baseline_categorical)):
        for c in cols:
            started = time.perf_counter()
            stats[c] = fn(cur[c], ref[c])
            seconds[kind] += time.perf_counter() - started
    return stats, seconds


def parity(table: pl.DataFrame, base: dict[str, dict[str, float]],
           ref: pl.DataFrame) -> dict[str, Any]:
    """Max |ours - baseline| per statistic, and whether each is within drift.py's bound."""
    rows = {r["feature"]: r for r in table.iter_rows(named=True)}
    worst: dict[str, float] = {}
    ok = True
    for col, stats in base.items():
        bounds = {"psi": 1e-9, "js": 1e-9}
        if "ks" in stats:  # numeric: the grid KS and the midpoint-rule W1 (drift.py's bounds)
            valid = ref.get_column(col).drop_nulls()
            n = min(valid.len(), rows[col]["n_current"] * (1 - rows[col]["null_share_current"]))
            bounds["ks"] = 1 / (drift.KS_GRID - 1) + 1 / n
            spread = float(valid.max() - valid.min()) / float(valid.std())  # type: ignore[operator]
            bounds["wasserstein_norm"] = 2 * spread / n + 1e-9
        for stat, value in stats.items():
            diff = abs(rows[col][stat] - value)
            worst[stat] = max(worst.get(stat, 0.0), diff)
            ok &= diff <= bounds[stat]
    return {"equal": bool(ok), "max_abs_diff": worst, "columns": sorted(base)}


def render(r: dict[str, Any]) -> str:
    yes = "yes" if r["seconds"] <= TARGET_S else "**no**"
    b = r["baseline"]
    return "\n".join([
        "# Drift benchmark: `drift_report`, current x reference x features", "",
        f"Generated {r['generated']} by `python -m benchmarks.drift_bench "
        f"{' '.join(r['argv'])}`.", "",
        f"Data: {r['rows']:,} current x {r['rows']:,} reference rows, {r['numeric']} numeric + "
        f"{r['categorical']} categorical features (synthetic, seeded; see the module docstring). "
        f"Statistics: PSI, KS, W1/std per numeric column, JS and PSI per categorical one.", "",
        "| measure | value |", "|---|---:|",
        f"| drift_report, best of {r['repeats']} (default threads) | **{r['seconds']:.3f} s** |",
        f"| drift_report, one thread | {r['seconds_one_thread']:.3f} s |",
        f"| target <= {TARGET_S:.0f} s met | {yes} |",
        f"| baseline (scipy/pandas per column), all columns{b['scaled_note']} "
        f"| {b['seconds_all']:.1f} s |",
        f"| speed-up vs baseline, all columns | {r['speedup']:.0f}x |",
        f"| speed-up vs baseline on its {len(r['parity']['columns'])} columns, measured "
        f"| {r['speedup_subset']:.0f}x |",
        f"| features drifted / alarm | {r['share_drifted']:.0%} / {r['alarm']} |", "",
        f"Parity on the baseline's columns: max |diff| {json.dumps(r['parity']['max_abs_diff'])}"
        f"; within drift.py's stated bounds: {r['parity']['equal']}.", "",
        f"Machine: {r['machine']['cores']} cores, {r['machine']['cpu']}; python "
        f"{r['machine']['python']}, polars {pl.__version__}, numpy {np.__version__}. 1-minute "
        f"load average before/after: {r['load']} (a shared machine: above the core count, "
        "other processes took CPU from these runs).", ""])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, into results/quick")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--numeric", type=int, default=25)
    parser.add_argument("--categorical", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-numeric", type=int, default=None,
                        help="numeric columns the baseline runs on (default 5; --quick: all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    n_base = args.baseline_numeric or (args.numeric if args.quick else len(KINDS))
    loads = [round(os.getloadavg()[0], 1)]

    cur, ref = make_frames(rows, args.numeric, args.categorical)
    numeric = [c for c in cur.columns if c.startswith("num_")]
    categorical = [c for c in cur.columns if c.startswith("cat_")]
    timings, report = [], None
    for _ in range(args.repeats):
        started = time.perf_counter()
        report = drift.drift_report(cur, ref, numeric, categorical)
        timings.append(time.perf_counter() - started)
    started = time.perf_counter()
    drift.drift_report(cur, ref, numeric, categorical, workers=1)
    one_thread = time.perf_counter() - started
    assert report is not None

    subset = numeric[:n_base]
    base_stats, base_s = run_baseline(cur.select(subset + categorical).to_pandas(),
                                      ref.select(subset + categorical).to_pandas(), subset,
                                      categorical)
    started = time.perf_counter()
    drift.drift_report(cur, ref, subset, categorical)
    ours_subset = time.perf_counter() - started
    base_all = base_s["numeric"] * len(numeric) / max(len(subset), 1) + base_s["categorical"]
    loads.append(round(os.getloadavg()[0], 1))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "unknown") if os.path.exists(
                    "/proc/cpuinfo") else platform.processor()
    result: dict[str, Any] = {
        "generated": dt.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv, "rows": rows,
        "numeric": len(numeric), "categorical": len(categorical), "repeats": args.repeats,
        "seconds": min(timings), "timings": timings, "seconds_one_thread": one_thread,
        "target_met": min(timings) <= TARGET_S,
        "baseline": {"seconds_measured": base_s, "numeric_columns": len(subset),
                     "seconds_all": base_all,
                     "scaled_note": "" if len(subset) == len(numeric) else
                     f" (numeric part scaled from {len(subset)} of {len(numeric)} columns)"},
        "speedup": base_all / min(timings),
        "speedup_subset": sum(base_s.values()) / ours_subset,
        "share_drifted": report.summary.share_drifted, "alarm": report.summary.alarm,
        "parity": parity(report.table, base_stats, ref), "load": loads,
        "machine": {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version()},
    }
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "drift.md", out / "drift.json"
    md.write_text(render(result))
    result["reports"] = [str(md), str(js)]
    result["headline"] = (f"{rows:,} x {rows:,} rows x {len(numeric) + len(categorical)} "
                          f"features in {result['seconds']:.2f} s (target {TARGET_S:.0f} s), "
                          f"{result['speedup']:.0f}x the scipy/pandas baseline"
                          + ("" if result["parity"]["equal"] else ", PARITY FAILED"))
    js.write_text(json.dumps(result, indent=2, default=str))
    print(f"  {result['headline']}\n  report: {md}", flush=True)
    return result


if __name__ == "__main__":
    main()
