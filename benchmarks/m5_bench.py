"""M5-scale feature benchmark: the chunked polars feature build (ml_assets/features/chunked.py)
on ~59M bronze rows, time and peak RSS per series-chunk size.

    python -m benchmarks.m5_bench                                  # 30,490 series x 2,200 days
    python -m benchmarks.m5_bench --series 300 --days 400 --chunks 50,100 --check   # smoke

The bronze tables are generated once from the simulator, a block of days at a time (the whole
world in one frame would need ~10 GB), and cached under --cache. Each chunk size then runs in
its own process, so that its peak RSS (VmHWM) is its own; the window is the whole history, as a
single-run backfill of the `features` asset sees it. Report: benchmarks/results/m5.md (+ .json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.features_bench import (
    ALLOCATOR_ENV,
    START,
    Scale,
    _peak_rss_gb,
    cached_world,
    machine_info,
    run_child,
)

RESULTS = Path(__file__).resolve().parent / "results"
M5_SERIES = 30_490  # M5: 3,049 items x 10 stores
M5_DAYS = 2_200  # our items launch and retire (~92% of cells filled): 61.7M rows, a bit above M5
BLOCK_DAYS = 182  # days of bronze generated and written at a time (~5M rows at M5 scale)
TARGET_S, TARGET_RSS_GB = 60.0, 8.0
TABLE = "silver/features"




def ensure_world(scale: Scale, cache: Path) -> dict[str, Any]:
    """Bronze sales (the ingest's schema and date-ordered layout) and dimensions, written once:
    each block of days as its own Parquet files, then one commit."""
    return cached_world(scale, cache, lambda world, root: _write_world(world, root, scale))


def _write_world(world: Any, root: Path, scale: Scale) -> dict[str, Any]:
    import polars as pl

    from resources.delta import DeltaStore
    from resources.delta_files import Window, _write_files, commit_window, plan_window

    delta = DeltaStore(root=str(root / "delta"))
    uri = delta.uri("bronze/sales")
    os.makedirs(uri, exist_ok=True)
    landing = root / "landing" / "sales"
    adds, rows, schema = [], 0, None
    for a in range(0, scale.days, BLOCK_DAYS):
        lo = START + dt.timedelta(days=a)
        hi = min(lo + dt.timedelta(days=BLOCK_DAYS), scale.end)
        bronze = world.sales(lo, hi).with_columns(
            pl.col("units_sold").cast(pl.Float64),
            (pl.lit(f"{landing}/sales_") + pl.col("date").cast(pl.Utf8) + pl.lit(".csv"))
            .alias("source_file"),
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("date").alias("row_number"),
        )
        adds += _write_files(uri, bronze, ["date", "store_id", "item_id"], None)
        rows += bronze.height
        schema = schema or bronze.clear().to_arrow().schema
        del bronze
    from deltalake import Schema

    assert schema is not None
    commit_window(plan_window(uri, Window("date", START, scale.end)), adds,
                  Schema.from_arrow(schema))
    delta.overwrite("bronze/stores", world.stores)
    delta.overwrite("bronze/items", world.items)
    delta.overwrite("bronze/calendar", world.calendar(START - dt.timedelta(days=366),
                                                       scale.end + dt.timedelta(days=366)))
    return {"rows": rows, "series": scale.n_stores * scale.n_items, "bronze_files": len(adds),
            "setup_peak_rss_gb": _peak_rss_gb()}


def run_chunked(root: Path, start: dt.date, end: dt.date, per_chunk: int,
                check: bool) -> dict[str, Any]:
    """One chunked feature build of the whole window into a fresh feature table."""
    from ml_assets.features.chunked import build_features_chunked
    from ml_assets.features.transforms import FeatureSpec
    from resources.delta import DeltaStore

    delta = DeltaStore(root=str(root / "delta"))
    shutil.rmtree(root / "delta" / TABLE, ignore_errors=True)
    import_rss = _peak_rss_gb()
    load = os.getloadavg()[0]
    t0, cpu0 = time.perf_counter(), os.times()
    written = build_features_chunked(delta, FeatureSpec(), start, end, history_start=start,
                                     series_per_chunk=per_chunk, table=TABLE)
    wall, cpu1 = time.perf_counter() - t0, os.times()
    assert written is not None
    out: dict[str, Any] = {
        "series_per_chunk": per_chunk, "chunks": written.chunks, "rows": written.rows,
        "version": written.version, "s": wall, "rows_per_s": written.rows / wall,
        "cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        "phases": written.seconds, "phase_cpu_s": written.cpu_seconds,
        "peak_rss_gb": _peak_rss_gb(), "import_rss_gb": import_rss,
        "load_1min": [load, os.getloadavg()[0]],
        "files": len(list((root / "delta" / TABLE).glob("*.parquet"))),
        "bytes": sum(p.stat().st_size for p in (root / "delta" / TABLE).glob("*.parquet")),
    }
    if check:  # the whole window in memory: small scales only
        out["equal_to_unchunked"] = _equal_to_unchunked(delta, start, end)
    return out


def _equal_to_unchunked(delta: Any, start: dt.date, end: dt.date) -> bool:
    import polars as pl

    from ml_assets.features.assets import read_feature_inputs
    from ml_assets.features.transforms import FeatureSpec, build_features

    spec, keys = FeatureSpec(), ["date", "store_id", "item_id"]
    inputs = read_feature_inputs(delta, start, end, spec, start)
    whole = build_features(inputs.pop("sales"), spec, **inputs).filter(
        pl.col("date").is_between(pl.lit(start), pl.lit(end), closed="left"))
    return delta.read(TABLE).sort(keys).equals(whole.sort(keys))


def _child(job: dict[str, Any], out: Path, env: dict[str, str]) -> dict[str, Any]:
    return run_child("benchmarks.m5_bench", job, out, env)


def _seconds(value: float | None) -> str:
    return "in read" if value is None else f"{value:.1f}"  # runs from before the split


def render(result: dict[str, Any]) -> str:
    w, m = result["world"], result["machine"]
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    lines = [
        "# M5-scale features: chunked polars build, time and peak RSS", "",
        f"Generated {result['generated']} by "
        f"`{' '.join(['python -m benchmarks.m5_bench', *result['argv']])}`.", "",
        f"Data: the simulated world, {w['n_stores']} stores x {w['n_items']} items over "
        f"{w['days']} days = **{w['rows']:,} bronze rows** ({w['series']:,} series), "
        f"{w['bronze_files']} bronze Parquet files in date order (as the ingest writes them). "
        "The window is the whole history (a single-run backfill), full default `FeatureSpec()`. "
        "A run is `build_features_chunked`: one streaming scan of the window's bronze rows "
        "(keys as Categorical), then per chunk of series: its rows filtered out, "
        "`build_features`, its Parquet files written; one Delta commit at the end. "
        "Each chunk size in its own process; peak RSS = VmHWM.", "",
        "| series/chunk | chunks | rows | wall s | rows/s | CPU s | peak RSS GB "
        "| scan s | read s | compute s | write s | commit s | load before/after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["runs"]:
        p = r["phases"]
        lines.append(
            f"| {r['series_per_chunk']:,} | {r['chunks']} | {r['rows']:,} | {r['s']:.1f} "
            f"| {r['rows_per_s'] / 1e6:.2f}M | {r['cpu_s']:.1f} | {r['peak_rss_gb']:.2f} "
            f"| {_seconds(p.get('scan'))} | {p['read']:.1f} "
            f"| {p['compute']:.1f} "
            f"| {p['write']:.1f} "
            f"| {p['commit']:.1f} | {r['load_1min'][0]:.1f} / {r['load_1min'][1]:.1f} |")
    timed = [r for r in result["runs"] if "phase_cpu_s" in r]
    if timed:
        lines += ["", "## Where the time goes", "",
                  "CPU seconds are user + system over all threads of the process; wall seconds "
                  "above CPU seconds / cores mean the process waited for a CPU.", "",
                  "| series/chunk | phase | wall s | CPU s |", "|---:|---|---:|---:|"]
        for r in timed:
            for phase, wall in r["phases"].items():
                lines.append(f"| {r['series_per_chunk']:,} | {phase} | {wall:.1f} "
                             f"| {r['phase_cpu_s'][phase]:.1f} |")
    best = min(result["runs"], key=lambda r: r["s"])
    small = min((r for r in result["runs"] if r["peak_rss_gb"] <= TARGET_RSS_GB),
                key=lambda r: r["s"], default=None)
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---:|:---:|",
              f"| <= {TARGET_S:.0f} s (fastest chunk size) | {best['s']:.1f} s "
              f"| {yes(best['s'] <= TARGET_S)} |"]
    if small is not None:
        lines.append(f"| <= {TARGET_S:.0f} s with peak RSS <= {TARGET_RSS_GB:.0f} GB "
                     f"| {small['s']:.1f} s at {small['peak_rss_gb']:.2f} GB "
                     f"({small['series_per_chunk']:,} series/chunk) "
                     f"| {yes(small['s'] <= TARGET_S)} |")
    checks = [r["equal_to_unchunked"] for r in result["runs"] if "equal_to_unchunked" in r]
    if checks:
        lines.append(f"| equal to the unchunked build | {all(checks)} | {yes(all(checks))} |")
    lines += ["", "## Machine", "",
              f"{m['cores']} cores ({m['cores_usable']} usable), {m['cpu']}, {m['ram_gb']} GB "
              f"RAM. python {m['python']}, polars {m['polars']}, numpy {m['numpy']}, pyarrow "
              f"{m['pyarrow']}, deltalake {m['deltalake']}. Environment: "
              + ", ".join(f"`{k}={v}`" for k, v in m["env"].items() if v) + ".", "",
              "The machine is shared with other workers: a 1-minute load average above the "
              "core count (see the table) means other processes took CPU from these runs, so "
              "wall times are upper bounds.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=M5_SERIES)
    parser.add_argument("--days", type=int, default=M5_DAYS)
    parser.add_argument("--chunks", default="2000,4000,8000",
                        help="series per chunk, comma separated: one run each")
    parser.add_argument("--check", action="store_true",
                        help="also compare with the unchunked build (needs it to fit in RAM)")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "retail_ml_bench" / "m5")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="m5")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        job = json.loads(args.child)
        if job["kind"] == "setup":
            out = ensure_world(Scale(**job["scale"]), Path(job["cache"]))
        else:
            out = run_chunked(Path(job["root"]), dt.date.fromisoformat(job["start"]),
                              dt.date.fromisoformat(job["end"]), job["per_chunk"], job["check"])
        Path(args.child_out).write_text(json.dumps(out))
        return None

    scale = Scale(series=args.series, days=args.days)
    env = {**ALLOCATOR_ENV, **os.environ}
    print(f"m5 benchmark: {scale.n_stores} stores x {scale.n_items} items x {scale.days} days, "
          f"cache {args.cache}", flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        world = _child({"kind": "setup", "scale": asdict(scale), "cache": str(args.cache)},
                       Path(tmp) / "setup.json", env)
        print(f"  bronze: {world['rows']:,} rows (setup {world['setup_s']} s)", flush=True)
        for per_chunk in [int(c) for c in args.chunks.split(",") if c.strip()]:
            r = _child({"kind": "run", "root": world["root"], "start": world["start"],
                        "end": world["end"], "per_chunk": per_chunk, "check": args.check},
                       Path(tmp) / f"run{per_chunk}.json", env)
            runs.append(r)
            print(f"  {per_chunk:>6} series/chunk: {r['s']:6.1f} s  peak RSS "
                  f"{r['peak_rss_gb']:.2f} GB  " + "  ".join(
                      f"{k} {v:.1f}" for k, v in r["phases"].items()), flush=True)
    result = {"generated": dt.datetime.now().isoformat(timespec="seconds"),
              "argv": sys.argv[1:] if argv is None else argv, "world": world,
              "machine": machine_info(env), "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"{args.name}.md").write_text(render(result))
    print(f"  report: {args.out / args.name}.md", flush=True)
    return result


if __name__ == "__main__":
    main()
