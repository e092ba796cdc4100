"""Engines benchmark: the same feature run on polars, on Spark local[2] and in pandas.

    python -m benchmarks.engines_bench                        # 10M rows, all three engines
    python -m benchmarks.engines_bench --series 60 --days 400 --repeats 1   # smoke scale
    python -m benchmarks.engines_bench --engines polars,spark --pandas-series 2725

The input is features_bench's cached bronze world (`ensure_world`, not timed). A run is what the
`features` asset does for the whole history: polars and pandas through features_bench's own
runner (tables silver/features and silver/features_pandas); Spark through
spark_pipeline.materialize_window (silver/features_spark): the bronze snapshot's Parquet files
read by Spark, the window functions, Spark-written files committed with delta-rs. Each engine
runs in its own process: a cold run, then `--repeats` warm ones. Spark's session start (the JVM)
is timed apart. The tables are then read back and compared to the polars one. Reports:
benchmarks/results/engines.md and engines.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.features_bench import (
    ALLOCATOR_ENV,
    DEFAULT_DAYS,
    DEFAULT_SERIES,
    RESULTS,
    Scale,
    _child,
    _peak_rss_gb,
    default_cache,
    machine_info,
    run_child,
)

TABLES = {"polars": "silver/features", "spark": "silver/features_spark",
          "pandas": "silver/features_pandas"}
TOLERANCE = 1e-6  # the parity test's: absolute, every float column
SPARK = {"master": "local[2]", "shuffle_partitions": 8, "driver_memory": "6g"}
SMALL = "polars (pandas' world)"  # polars again, on pandas' smaller world (--pandas-series)
TARGET_SPARK_RATIO = 3.0  # polars at least 3x faster than Spark local


def _jvm_usage() -> dict[str, float]:
    """The JVM's peak RSS (VmHWM) and CPU seconds: Spark's driver is a child process."""
    import psutil

    out = {"peak_rss_gb": 0.0, "cpu_s": 0.0}
    for child in psutil.Process().children(recursive=True):
        try:
            if "java" not in child.name():
                continue
            with open(f"/proc/{child.pid}/status") as status:
                hwm = next(line for line in status if line.startswith("VmHWM:"))
            out["peak_rss_gb"] += int(hwm.split()[1]) * 1024 / 1e9
            cpu = child.cpu_times()
            out["cpu_s"] += cpu.user + cpu.system
        except (OSError, StopIteration, psutil.Error):
            continue
    return out


def _cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_spark(root: Path, start: dt.date, end: dt.date, runs: int,
              conf: dict[str, Any]) -> dict[str, Any]:
    """`runs` end-to-end Spark runs in this process (its JVM); the first is the cold one."""
    import shutil

    from deltalake import DeltaTable

    from ml_assets.features.spark_pipeline import materialize_window
    from ml_assets.features.transforms import FeatureSpec
    from resources.delta import DeltaStore
    from resources.spark import SparkEngine

    delta = DeltaStore(root=str(root / "delta"))
    shutil.rmtree(delta.uri(TABLES["spark"]), ignore_errors=True)
    began = time.perf_counter()
    spark = SparkEngine(**{k: v for k, v in conf.items() if k != "extra"},
                        conf={"spark.ui.enabled": "false", **conf.get("extra", {})}).session()
    session_s = time.perf_counter() - began
    results = []
    for i in range(runs):
        load = os.getloadavg()[0]
        cpu0, began = _jvm_usage()["cpu_s"] + _cpu_s(), time.perf_counter()
        written = materialize_window(spark, delta, FeatureSpec(), start, end, start,
                                     table=TABLES["spark"])
        total = time.perf_counter() - began
        assert written is not None
        results.append({"run": i, "total_s": total, "out_rows": written.rows,
                        "cpu_s": _jvm_usage()["cpu_s"] + _cpu_s() - cpu0,
                        "load_1min": [load, os.getloadavg()[0]]})
        # untimed vacuum: the replaced files go, so repeated runs do not fill the disk
        DeltaTable(delta.uri(TABLES["spark"])).vacuum(
            retention_hours=0, enforce_retention_duration=False, dry_run=False)
        print(f"  spark run {i}: {total:6.2f} s", flush=True)
    return {"engine": "spark", "session_s": session_s, "runs": results, "conf": conf,
            "peak_rss_gb": _peak_rss_gb() + _jvm_usage()["peak_rss_gb"]}


def compare(root: Path, a: str, b: str, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Table b against table a: same keys, columns, order and dtypes; nulls (and NaN) in the
    same places; floats within `tolerance`, everything else exact."""
    import polars as pl

    keys = ["date", "store_id", "item_id"]
    x = pl.scan_delta(str(root / "delta" / a)).collect().sort(keys)
    y = pl.scan_delta(str(root / "delta" / b)).collect().sort(keys)
    report: dict[str, Any] = {"tables": [a, b], "rows": [x.height, y.height],
                              "schema_equal": x.schema == y.schema, "tolerance": tolerance,
                              "columns": {}}
    ok = x.schema == y.schema and x.height == y.height
    ok = ok and x.select(keys).equals(y.select(keys))
    for name in x.columns if ok else []:
        u, v = x.get_column(name), y.get_column(name)
        col: dict[str, Any] = {"null_mismatches": int((u.is_null() != v.is_null()).sum())}
        if u.dtype.is_float():
            col["nan_mismatches"] = int((u.is_nan() != v.is_nan()).fill_null(False).sum())
            diff = (u - v).abs().fill_nan(0.0)
            col["max_abs_diff"] = float(diff.max() or 0.0)
            col["not_close"] = int((diff > tolerance).sum())
        else:
            col["not_close"] = int((u != v).fill_null(False).sum())
        ok = ok and not any(col[k] for k in ("null_mismatches", "not_close",
                                             "nan_mismatches") if k in col)
        report["columns"][name] = col
    report["equal"] = bool(ok)
    return report


def _spark_child(job: dict[str, Any], out: Path, env: dict[str, str]) -> dict[str, Any]:
    return run_child("benchmarks.engines_bench", job, out, env)


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    runs = result["runs"]
    warm = runs[1:] or runs
    rows = runs[0]["out_rows"]
    total = statistics.median(r["total_s"] for r in warm)

    def cpu(run: dict[str, Any]) -> float:  # features_bench's runs count CPU per phase
        return run["cpu_s"] if "cpu_s" in run else sum(p["cpu_s"]
                                                        for p in run["phases"].values())
    return {"rows": rows, "total_s": total, "cold_total_s": runs[0]["total_s"],
            "cpu_s": statistics.median(cpu(r) for r in warm), "cold_cpu_s": cpu(runs[0]),
            "rows_per_s": rows / total, "cold_rows_per_s": rows / runs[0]["total_s"],
            "runs_timed": len(warm), "peak_rss_gb": result["peak_rss_gb"],
            "session_s": result.get("session_s", 0.0)}


def ratios(s: dict[str, Any]) -> dict[str, Any]:
    """How many times longer than polars on the same world (> 1: polars is faster)."""
    out: dict[str, Any] = {}
    if "polars" in s and "spark" in s:
        p, k = s["polars"], s["spark"]
        out["spark"] = {"warm": k["total_s"] / p["total_s"],
                        "warm_cpu": k["cpu_s"] / p["cpu_s"],
                        "cold": k["cold_total_s"] / p["cold_total_s"],
                        "cold_with_session": (k["cold_total_s"] + k["session_s"])
                        / p["cold_total_s"]}
    base = s.get(SMALL, s.get("polars"))
    if "pandas" in s and base is not None:
        out["pandas"] = {"warm": s["pandas"]["total_s"] / base["total_s"],
                         "warm_cpu": s["pandas"]["cpu_s"] / base["cpu_s"],
                         "cold": s["pandas"]["cold_total_s"] / base["cold_total_s"]}
    return out


def render(r: dict[str, Any]) -> str:
    s, m, conf = r["summary"], r["machine"], r["spark_conf"]
    main_world = r["worlds"]["main"]
    lines = [
        "# Engines benchmark: polars vs Spark local vs pandas",
        "",
        f"Generated {r['generated']} by "
        f"`{' '.join(['python -m benchmarks.engines_bench', *r['argv']])}`.",
        "",
        "A run is what the `features` asset does for the whole history: bronze Delta → the "
        "full default `FeatureSpec()` (daily, H = 28, 35 columns) → a window replacement in "
        "the feature Delta table. polars and pandas as in results/features.md; Spark: "
        "`spark_pipeline.materialize_window` (Spark reads the bronze snapshot's Parquet files "
        "listed by delta-rs, computes the features with window functions, writes Parquet; the "
        "driver commits the files with delta-rs). Each engine in its own process; **cold** = "
        "its first run, **warm** = the median of the next ones. Spark's cold run excludes the "
        "session start (JVM), shown apart.",
        "",
        f"Data: features_bench's simulated world, {main_world['rows']:,} bronze rows "
        f"({main_world['series']:,} series x {main_world['days']:,} days).",
        "",
        "| engine | rows | warm s | cold s | session start s | rows/s warm | CPU s warm "
        "| peak RSS GB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in s.items():
        session = f"{e['session_s']:.1f}" if name == "spark" else ""
        lines.append(f"| {name} | {e['rows']:,} | {e['total_s']:.1f} | {e['cold_total_s']:.1f} "
                     f"| {session} | {e['rows_per_s'] / 1e6:.2f}M | {e['cpu_s']:.0f} "
                     f"| {e['peak_rss_gb']:.1f} |")
    lines += ["", "CPU s: user + system over all threads (for Spark, the JVM's and the Python "
              "driver's), which other processes on a shared machine disturb less than wall "
              "time. Peak RSS: the engine process's high-water mark; for Spark, the Python "
              "driver's plus the JVM's.", "", "## Ratios (time / polars time, same world)", "",
              "| engine | warm | CPU warm | cold | cold + session start | target | met |",
              "|---|---:|---:|---:|---:|---|:---:|"]
    q = r["ratios"]
    if "spark" in q:
        ok = q["spark"]["warm"] >= TARGET_SPARK_RATIO
        lines.append(f"| Spark {conf['master']} | {q['spark']['warm']:.1f}x "
                     f"| {q['spark']['warm_cpu']:.1f}x | {q['spark']['cold']:.1f}x "
                     f"| {q['spark']['cold_with_session']:.1f}x | polars >= "
                     f"{TARGET_SPARK_RATIO:.0f}x faster | {'yes' if ok else '**no**'} |")
    if "pandas" in q:
        lines.append(f"| pandas | {q['pandas']['warm']:.1f}x | {q['pandas']['warm_cpu']:.1f}x "
                     f"| {q['pandas']['cold']:.1f}x | | | |")
    if "pandas" in r["worlds"]:
        w = r["worlds"]["pandas"]
        lines += ["", f"pandas ran on a smaller world, {w['rows']:,} rows ({w['series']:,} "
                  "series), to fit in memory beside the other processes on this machine; its "
                  f"ratio is against polars on that same world (`{SMALL}`)."]
    lines += ["", "## Parity", "", f"Each table read back and sorted by key, against polars': "
              f"same keys, columns, order and dtypes; nulls and NaN in the same places; floats "
              f"within {TOLERANCE:g} (absolute), all else exact.", "",
              "| engine | rows | schema equal | equal | columns not bit-equal (max abs diff) |",
              "|---|---:|:---:|:---:|---|"]
    for name, c in (r["parity"] or {"by_engine": {}})["by_engine"].items():
        inexact = ", ".join(f"{k} ({v['max_abs_diff']:.1g})" for k, v in c["columns"].items()
                            if v.get("max_abs_diff"))
        lines.append(f"| {name} | {c['rows'][1]:,} | {c['schema_equal']} | "
                     f"{'yes' if c['equal'] else '**NO**'} | {inexact or 'none'} |")
    lines += ["", "## Setup", "",
              f"Spark {conf['master']}, `spark.sql.shuffle.partitions={conf['shuffle_partitions']}`"
              f", driver memory {conf['driver_memory']}"
              + "".join(f", `{k}={v}`" for k, v in conf.get('extra', {}).items())
              + ", no Delta connector (the Parquet path). "
              f"{m['cores']} cores, {m['cpu']}, {m['ram_gb']} GB RAM; python {m['python']}, "
              f"polars {m['polars']}, pandas {m['pandas']}, deltalake {m['deltalake']}.", "",
              f"1-minute load average before and after each engine: {r['load']}. The machine "
              "is shared with other jobs: a load above 2 means other processes took CPU from "
              "these runs.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=DEFAULT_SERIES)
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS)
    parser.add_argument("--pandas-series", type=int, default=None,
                        help="run pandas on a smaller world of this many series (memory)")
    parser.add_argument("--repeats", type=int, default=2, help="warm runs per engine")
    parser.add_argument("--engines", default="polars,spark,pandas")
    parser.add_argument("--shuffle-partitions", type=int, default=SPARK["shuffle_partitions"])
    parser.add_argument("--driver-memory", default=SPARK["driver_memory"])
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                        help="a further Spark setting (repeatable)")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # inside the Spark process, or the comparison's
        job = json.loads(args.child)
        root = Path(job["root"])
        out = (compare(root, job["a"], job["b"]) if job["kind"] == "compare" else
               run_spark(root, dt.date.fromisoformat(job["start"]),
                         dt.date.fromisoformat(job["end"]), job["runs"], job["conf"]))
        Path(args.child_out).write_text(json.dumps(out))
        return None

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    env = {**ALLOCATOR_ENV, **os.environ}
    cache = (args.cache or default_cache()).resolve()
    conf = {**SPARK, "shuffle_partitions": args.shuffle_partitions,
            "driver_memory": args.driver_memory,
            "extra": dict(kv.split("=", 1) for kv in args.spark_conf)}
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    parity: dict[str, Any] = {}
    worlds: dict[str, Any] = {}
    loads = [round(os.getloadavg()[0], 1)]
    with tempfile.TemporaryDirectory() as tmp:
        def world(series: int) -> dict[str, Any]:
            scale = Scale(series=series, days=args.days)
            return _child({"kind": "setup", "scale": asdict(scale), "cache": str(cache)},
                          Path(tmp) / f"setup{series}.json", env)

        def run(label: str, engine: str, w: dict[str, Any]) -> None:
            job = {"kind": engine, "root": w["root"], "start": w["start"], "end": w["end"],
                   "runs": args.repeats + 1, "conf": conf}
            out = Path(tmp) / f"{label}.json"
            if engine == "spark":
                results[label] = {**_spark_child(job, out, env), "world": w}
            else:  # features_bench's runner; pandas without huge pages, as build_features
                engine_env = {**env, "NUMPY_MADVISE_HUGEPAGE": "0"} if engine == "pandas" \
                    else env
                results[label] = {**_child(job, out, engine_env), "world": w}
                for r in results[label]["runs"]:
                    r["out_rows"] = r["rows"]
            loads.append(round(os.getloadavg()[0], 1))

        def check(label: str, w: dict[str, Any], a: str, b: str) -> None:
            parity[label] = _spark_child({"kind": "compare", "root": w["root"], "a": a, "b": b},
                                         Path(tmp) / f"cmp_{label}.json", env)

        worlds["main"] = world(args.series)
        print(f"engines benchmark: {worlds['main']['rows']:,} bronze rows", flush=True)
        for engine in engines:
            if engine == "pandas" and args.pandas_series:  # with polars on the same world
                worlds["pandas"] = world(args.pandas_series)
                run(SMALL, "polars", worlds["pandas"])
                run("pandas", "pandas", worlds["pandas"])
                check("pandas", worlds["pandas"], TABLES["polars"], TABLES["pandas"])
            else:
                run(engine, engine, worlds["main"])
        if {"polars", "spark"} <= set(results):
            check("spark", worlds["main"], TABLES["polars"], TABLES["spark"])
        if {"polars", "pandas"} <= set(results) and "pandas" not in parity:
            check("pandas", worlds["main"], TABLES["polars"], TABLES["pandas"])
    summary = {name: summarize(r) for name, r in results.items()}
    result: dict[str, Any] = {
        "generated": dt.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv, "worlds": worlds,
        "machine": machine_info(env), "spark_conf": conf, "summary": summary,
        "engines": results, "load": loads,
        "parity": {"equal": all(p["equal"] for p in parity.values()), "by_engine": parity}
        if parity else None,
    }
    result["ratios"] = ratios(summary)
    md, js = args.out / "engines.md", args.out / "engines.json"
    result["reports"] = [str(md), str(js)]
    md.write_text(render(result))
    js.write_text(json.dumps(result, indent=2))
    print(f"  report: {md}\n  data:   {js}", flush=True)
    return result


if __name__ == "__main__":
    res = main()
    sys.exit(1 if res is not None and res["parity"] and not res["parity"]["equal"] else 0)

