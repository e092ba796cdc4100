"""Feature benchmark: bronze Delta → full default feature set → feature Delta, end to end.

    python -m benchmarks.features_bench                      # 10M rows (5,450 series x 2,000 days)
    python -m benchmarks.features_bench --series 200 --days 400   # smoke run, well under a minute

The simulated world is built once and its bronze tables are cached (not timed). Each engine then
runs in its own process, so that its peak RSS is its own: a first run (reported as "cold": a fresh
process, as a Dagster run worker sees it; it creates the feature table) and `--repeats` more
(their median is reported as "warm"; each replaces the table's window). A run is what the
`features` asset does (ml_assets/features/assets.py): `read_feature_inputs` (Delta scan,
collect), `build_features` + the window filter, then `DeltaStore.replace_window` into
`silver/features`. The pandas baseline reads through the same scan and `to_pandas`, computes
benchmarks/pandas_reference.py, converts back and writes through the same `replace_window` (into
`silver/features_pandas`). Both tables are then read back and compared. Reports:
benchmarks/results/features.md and features.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
START = dt.date(2019, 1, 1)
DEFAULT_SERIES = 5_450  # x 2,000 days: 10.03M rows (items launch and retire: ~92% of cells)
DEFAULT_DAYS = 2_000
SETUP_VERSION = 1  # bump when the cached bronze layout changes
TARGET_ROWS_PER_S = 2_000_000
TARGET_SPEEDUP = 5.0
RTOL = ATOL = 1e-9
# What `make bench` exports (see Makefile); set here too so a direct run measures the same thing.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "4294967296"}
TABLES = {"polars": "silver/features", "pandas": "silver/features_pandas"}


@dataclass(frozen=True)
class Scale:
    series: int = DEFAULT_SERIES
    days: int = DEFAULT_DAYS
    seed: int = 7

    @property
    def n_stores(self) -> int:
        return min(10, self.series)

    @property
    def n_items(self) -> int:
        return math.ceil(self.series / self.n_stores)

    @property
    def end(self) -> dt.date:
        return START + dt.timedelta(days=self.days)

    @property
    def key(self) -> str:
        return f"s{self.n_stores}x{self.n_items}-d{self.days}-seed{self.seed}-v{SETUP_VERSION}"


def default_cache() -> Path:
    home = os.environ.get("RETAIL_ML_HOME")
    if home:
        return Path(home).expanduser().resolve() / "bench" / "features"
    return Path(tempfile.gettempdir()) / "retail_ml_bench" / "features"


# --- setup (not timed) ---------------------------------------------------------------------------


def cached_world(scale: Scale, cache: Path, write: Callable[[Any, Path], dict[str, Any]]
                 ) -> dict[str, Any]:
    """The world of `scale` under cache/<scale.key>, written by `write(world, root)` once: its
    metadata (plus root and setup seconds) is kept in ready.json, which later runs read."""
    root = cache / scale.key
    marker = root / "ready.json"
    if marker.exists():
        return json.loads(marker.read_text())
    from ml_assets.simulation import World, WorldConfig

    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    world = World(WorldConfig(seed=scale.seed, n_stores=scale.n_stores, n_items=scale.n_items,
                              start_date=START))
    meta = {**write(world, root), "n_stores": scale.n_stores, "n_items": scale.n_items,
            "days": scale.days, "start": START.isoformat(), "end": scale.end.isoformat(),
            "root": str(root), "setup_s": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(meta, indent=2))
    return meta


def ensure_world(scale: Scale, cache: Path) -> dict[str, Any]:
    """Bronze sales and dimension tables of the simulated world, written once per scale."""
    return cached_world(scale, cache, lambda world, root: _write_world(world, root, scale))


def _write_world(world: Any, root: Path, scale: Scale) -> dict[str, Any]:
    import polars as pl

    from resources.delta import DeltaStore

    sales = world.sales(START, scale.end)
    landing = root / "landing" / "sales"
    bronze = sales.with_columns(  # bronze's schema: typed units, plus each row's landing file
        pl.col("units_sold").cast(pl.Float64),
        (pl.lit(f"{landing}/sales_") + pl.col("date").cast(pl.Utf8) + pl.lit(".csv"))
        .alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("date").alias("row_number"),
    )
    delta = DeltaStore(root=str(root / "delta"))
    delta.replace_window("bronze/sales", bronze, "date", START, scale.end,
                         ["date", "store_id", "item_id"])
    delta.overwrite("bronze/stores", world.stores)
    delta.overwrite("bronze/items", world.items)
    delta.overwrite("bronze/calendar", world.calendar(START - dt.timedelta(days=366),
                                                       scale.end + dt.timedelta(days=366)))
    return {"rows": sales.height, "series": sales.select("store_id", "item_id").n_unique(),
            "bronze_files": len(list((root / "delta" / "bronze" / "sales").glob("*.parquet")))}


# --- one engine, inside its own process -------------------------------------------------------


def _peak_rss_gb() -> float:
    """This process's peak RSS. VmHWM starts afresh at exec; ru_maxrss would carry over the peak
    of the parent the process was forked from."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


def _usage() -> dict[str, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": time.perf_counter(), "user": r.ru_utime, "sys": r.ru_stime,
            "faults": r.ru_minflt, "maxrss_gb": _peak_rss_gb()}


def _phase(fn: Callable[[], Any], into: dict[str, Any], name: str) -> Any:
    before = _usage()
    value = fn()
    after = _usage()
    into[name] = {"s": after["wall"] - before["wall"],
                  "cpu_s": after["user"] + after["sys"] - before["user"] - before["sys"],
                  "sys_s": after["sys"] - before["sys"],
                  "page_faults": int(after["faults"] - before["faults"]),
                  "peak_rss_gb_so_far": after["maxrss_gb"]}
    return value


def _engine_steps(engine: str, root: Path, start: dt.date, end: dt.date):
    """(read, compute, write) callables of one run, exactly as the features asset chains them."""
    import polars as pl

    from ml_assets.features.assets import FEATURES_TABLE, read_feature_inputs
    from ml_assets.features.transforms import FeatureSpec, build_features
    from resources.delta import DeltaStore

    assert FEATURES_TABLE == TABLES["polars"]
    delta = DeltaStore(root=str(root / "delta"))
    spec = FeatureSpec()  # the full default feature set
    window = pl.col("date").is_between(pl.lit(start), pl.lit(end), closed="left")
    keys = ["date", "store_id", "item_id"]

    if engine == "polars":
        def read():
            return read_feature_inputs(delta, start, end, spec, history_start=start)

        def compute(inputs):
            # `inputs` keeps the sales frame alive through the write, as the asset's local does
            dims = {k: v for k, v in inputs.items() if k != "sales"}
            return build_features(inputs["sales"], spec, **dims).filter(window)

        def write(table):
            return delta.replace_window(TABLES[engine], table, "date", start, end, keys)
        return read, compute, write

    import pandas as pd

    from benchmarks.pandas_reference import build_features_pandas

    def read_pd():
        inputs = read_feature_inputs(delta, start, end, spec, history_start=start)
        assert inputs.pop("first_sale") is None  # the whole history is read
        return {k: None if v is None else v.to_pandas() for k, v in inputs.items()}

    def compute_pd(inputs):
        dims = {k: v for k, v in inputs.items() if k != "sales"}
        out = build_features_pandas(inputs["sales"], spec, **dims)
        inside = (out["date"] >= pd.Timestamp(start)) & (out["date"] < pd.Timestamp(end))
        return out[inside]

    def write_pd(table):
        frame = pl.from_pandas(table).with_columns(pl.col("date").cast(pl.Date))
        return delta.replace_window(TABLES[engine], frame, "date", start, end, keys)
    return read_pd, compute_pd, write_pd


def _drop_replaced_files(table_dir: Path) -> None:
    """Deletes the files the last commit removed from the table (a vacuum, not timed), so that
    repeated runs do not fill the disk."""
    from deltalake import DeltaTable

    live = set(DeltaTable(str(table_dir)).file_uris())
    for path in table_dir.glob("*.parquet"):
        if str(path) not in live and path.as_uri() not in live:
            path.unlink()


def run_engine(engine: str, root: Path, start: dt.date, end: dt.date, runs: int,
               profile: Path | None = None) -> dict[str, Any]:
    """`runs` end-to-end runs in this process; the first is the cold one."""
    import psutil

    read, compute, write = _engine_steps(engine, root, start, end)
    baseline = _usage()  # after the imports
    table_dir = root / "delta" / TABLES[engine]
    shutil.rmtree(table_dir, ignore_errors=True)  # the first run creates the table
    results = []
    for i in range(runs):
        profiler = None
        if profile is not None and i == runs - 1:
            try:
                from pyinstrument import Profiler
            except ImportError:
                print("  --profile needs pyinstrument (pip install pyinstrument)", flush=True)
            else:
                profiler = Profiler(interval=0.005)
                profiler.start()
        phases: dict[str, Any] = {}
        load_before = os.getloadavg()[0]
        inputs = _phase(read, phases, "read")
        rows = inputs["sales"].shape[0]
        table = _phase(partial(compute, inputs), phases, "compute")
        out_rows, out_cols = table.shape
        _phase(partial(write, table), phases, "write")
        if profiler is not None:
            profiler.stop()
            profile.write_text(profiler.output_text(unicode=True, color=False))
        del inputs, table
        _drop_replaced_files(table_dir)
        total = sum(p["s"] for p in phases.values())
        results.append({"run": i, "rows": rows, "out_rows": out_rows, "out_cols": out_cols,
                        "total_s": total, "rows_per_s": rows / total, "phases": phases,
                        "rss_after_gb": psutil.Process().memory_info().rss / 1e9,
                        "load_1min": [load_before, os.getloadavg()[0]]})
        print(f"  {engine} run {i}: {total:6.2f} s  " + "  ".join(
            f"{k} {v['s']:.2f}" for k, v in phases.items()), flush=True)
    return {"engine": engine, "runs": results, "import_rss_gb": baseline["maxrss_gb"],
            "peak_rss_gb": _usage()["maxrss_gb"]}


# --- parity ------------------------------------------------------------------------------------


def compare_tables(root: Path, rtol: float = RTOL, atol: float = ATOL) -> dict[str, Any]:
    """Reads both feature tables back and checks them equal: keys, columns, dtypes, nulls, and
    values (exact, or within rtol/atol for floats)."""
    import polars as pl

    keys = ["date", "store_id", "item_id"]
    # polars' own Delta reader, as DeltaStore.read uses: importing `resources` costs seconds
    a = pl.scan_delta(str(root / "delta" / TABLES["polars"])).collect().sort(keys)
    b = pl.scan_delta(str(root / "delta" / TABLES["pandas"])).collect().sort(keys)
    report: dict[str, Any] = {"rows": [a.height, b.height], "columns_equal": a.columns == b.columns,
                              "dtype_mismatches": [], "columns": {}, "rtol": rtol, "atol": atol}
    if a.columns != b.columns:
        report["columns"] = {"only_polars": sorted(set(a.columns) - set(b.columns)),
                             "only_pandas": sorted(set(b.columns) - set(a.columns))}
    ok = a.height == b.height and a.columns == b.columns
    if a.height == b.height:
        ok &= a.select(keys).equals(b.select(keys))
        report["keys_equal"] = a.select(keys).equals(b.select(keys))
    for name in [c for c in a.columns if c in b.columns] if a.height == b.height else []:
        x, y = a.get_column(name), b.get_column(name)
        if x.dtype != y.dtype:
            report["dtype_mismatches"].append([name, str(x.dtype), str(y.dtype)])
            ok = False
            continue
        null_diff = int((x.is_null() != y.is_null()).sum())
        col: dict[str, Any] = {"null_mismatches": null_diff, "nulls": x.null_count()}
        if x.dtype.is_float():
            both = pl.DataFrame({"x": x, "y": y}).drop_nulls()
            diff = (both["x"] - both["y"]).abs()
            rel = diff / both["y"].abs()
            bad = int((diff > atol + rtol * both["y"].abs()).sum())
            col |= {"max_abs_diff": float(diff.max() or 0.0),
                    "max_rel_diff": float(rel.filter(both["y"] != 0).max() or 0.0),
                    "not_close": bad, "exactly_equal_share": float((diff == 0).mean() or 1.0)}
        else:
            bad = int((x != y).fill_null(False).sum())
            col |= {"not_equal": bad}
        ok &= null_diff == 0 and bad == 0
        report["columns"][name] = col
    report["equal"] = bool(ok)
    return report


# --- parent: orchestration and the report --------------------------------------------------------


def run_child(module: str, job: dict[str, Any], out: Path, env: dict[str, str]
              ) -> dict[str, Any]:
    """`python -m module --child job --child-out out` in a fresh process (its own peak RSS, its
    own allocator settings); returns the JSON it wrote."""
    cmd = [sys.executable, "-m", module, "--child", json.dumps(job), "--child-out", str(out)]
    subprocess.run(cmd, check=True, env=env, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.read_text())


def _child(job: dict[str, Any], out: Path, env: dict[str, str]) -> dict[str, Any]:
    return run_child("benchmarks.features_bench", job, out, env)


def machine_info(env: dict[str, str]) -> dict[str, Any]:
    import deltalake
    import numpy
    import pandas
    import polars
    import psutil
    import pyarrow

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)), "cpu": cpu,
        "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "python": platform.python_version(), "polars": polars.__version__,
        "numpy": numpy.__version__, "pandas": pandas.__version__, "pyarrow": pyarrow.__version__,
        "deltalake": deltalake.__version__, "platform": platform.platform(),
        "env": {k: env.get(k, "") for k in [*ALLOCATOR_ENV, "NUMPY_MADVISE_HUGEPAGE",
                                             "POLARS_MAX_THREADS", "_RJEM_MALLOC_CONF"]},
    }


def summarize(engine_result: dict[str, Any]) -> dict[str, Any]:
    """Cold = the process's first run; warm = the median of the later ones, phase by phase."""
    runs = engine_result["runs"]
    warm = runs[1:] or runs
    med = statistics.median
    summary: dict[str, Any] = {
        "rows": runs[0]["rows"], "out_cols": runs[0]["out_cols"], "runs_timed": len(warm),
        "total_s": med([r["total_s"] for r in warm]), "cold_total_s": runs[0]["total_s"],
        "peak_rss_gb": engine_result["peak_rss_gb"],
        "import_rss_gb": engine_result["import_rss_gb"],
    }
    for phase in ("read", "compute", "write"):
        for key in ("s", "cpu_s", "sys_s", "page_faults"):
            summary[f"{phase}_{key}"] = med([r["phases"][phase][key] for r in warm])
            summary[f"cold_{phase}_{key}"] = runs[0]["phases"][phase][key]
    summary["rows_per_s"] = summary["rows"] / summary["total_s"]
    summary["cold_rows_per_s"] = summary["rows"] / summary["cold_total_s"]
    return summary


def render(result: dict[str, Any]) -> str:
    s, m, w = result["summary"], result["machine"], result["world"]
    p = s["polars"]
    speedup = result.get("speedup")
    yes = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    lines = [
        "# Feature benchmark: bronze Delta → features → feature Delta",
        "",
        f"Generated {result['generated']} by "
        f"`{' '.join(['python -m benchmarks.features_bench', *result['argv']])}`. How to read "
        "it, and what was optimized: benchmarks/README.md.",
        "",
        f"Data: the simulated world, {w['n_stores']} stores x {w['n_items']} items over "
        f"{w['days']} days = **{p['rows']:,} bronze rows** ({w['series']:,} series; items "
        f"launch and retire), in {w['bronze_files']} bronze Parquet files. The full default "
        f"`FeatureSpec()` (daily, H = 28): {p['out_cols']} output columns.",
        "",
        "A run is what the `features` asset does: `read_feature_inputs` (Delta scan + collect), "
        "`build_features` + the partition-window filter, `DeltaStore.replace_window`. Each "
        "engine runs in its own process. **cold** = the process's first run, which also creates "
        "the feature table (what a Dagster run worker sees: a fresh process); **warm** = median "
        f"of the next {p['runs_timed']} runs in the same process, each replacing the table's "
        "window (memory already mapped).",
        "",
        "## End to end",
        "",
        "| engine | run | rows/s | total s | read s | compute s | write s | peak RSS GB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in s.items():
        for kind, pre in (("warm", ""), ("cold", "cold_")):
            lines.append(
                f"| {name} | {kind} | {e[f'{pre}rows_per_s'] / 1e6:.2f}M "
                f"| {e[f'{pre}total_s']:.2f} | {e[f'{pre}read_s']:.2f} "
                f"| {e[f'{pre}compute_s']:.2f} | {e[f'{pre}write_s']:.2f} "
                f"| {e['peak_rss_gb']:.2f} |")
    lines += ["", "Peak RSS is the engine process's high-water mark (VmHWM) over all its runs "
              f"(after imports alone: {p['import_rss_gb']:.2f} GB for polars).", "",
              "## Where the time goes", "",
              "CPU seconds are user + system over all threads (polars uses every core; numpy "
              "one); system time is mostly page faults on fresh memory, slow on these VMs.", "",
              "| engine | run | phase | wall s | share | CPU s | of which system s "
              "| page faults |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for name, e in s.items():
        for kind, pre in (("warm", ""), ("cold", "cold_")):
            for phase in ("read", "compute", "write"):
                lines.append(
                    f"| {name} | {kind} | {phase} | {e[f'{pre}{phase}_s']:.2f} "
                    f"| {e[f'{pre}{phase}_s'] / e[f'{pre}total_s']:.0%} "
                    f"| {e[f'{pre}{phase}_cpu_s']:.2f} | {e[f'{pre}{phase}_sys_s']:.2f} "
                    f"| {e[f'{pre}{phase}_page_faults'] / 1e6:.2f}M |")
    rate = TARGET_ROWS_PER_S / 1e6
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---:|:---:|",
              f"| >= {rate:.0f}M rows/s end to end, warm | {p['rows_per_s'] / 1e6:.2f}M "
              f"| {yes(p['rows_per_s'] >= TARGET_ROWS_PER_S)} |",
              f"| >= {rate:.0f}M rows/s end to end, cold | {p['cold_rows_per_s'] / 1e6:.2f}M "
              f"| {yes(p['cold_rows_per_s'] >= TARGET_ROWS_PER_S)} |"]
    if speedup is not None:
        for kind in ("warm", "cold"):
            lines.append(f"| >= {TARGET_SPEEDUP:.0f}x faster than pandas end to end, {kind} "
                         f"| {speedup[kind]:.1f}x | {yes(speedup[kind] >= TARGET_SPEEDUP)} |")
    parity = result.get("parity")
    if parity is not None:
        lines.append(f"| outputs equal to the pandas reference | "
                     f"{'equal' if parity['equal'] else 'DIFFERENT'} | {yes(parity['equal'])} |")
        lines += ["", "## Parity with the pandas reference", "",
                  f"Both feature tables read back from Delta and sorted by key: "
                  f"{parity['rows'][0]:,} vs {parity['rows'][1]:,} rows; same columns in the "
                  f"same order: {parity['columns_equal']}; same keys: "
                  f"{parity.get('keys_equal')}; dtype mismatches: "
                  f"{parity['dtype_mismatches'] or 'none'}. Floats must agree within rtol "
                  f"{parity['rtol']:g} + atol {parity['atol']:g} with nulls in the same places; "
                  "every other column exactly. Columns not listed are exactly equal.", "",
                  "| column | nulls | null mismatches | not equal | exactly equal "
                  "| max abs diff | max rel diff |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, c in parity["columns"].items():
            bad = c.get("not_close", c.get("not_equal", 0))
            if not (c.get("max_abs_diff") or bad or c["null_mismatches"]):
                continue
            lines.append(f"| {name} | {c['nulls']:,} | {c['null_mismatches']} | {bad} "
                         f"| {c.get('exactly_equal_share', 1.0):.2%} "
                         f"| {c.get('max_abs_diff', 0):.2g} | {c.get('max_rel_diff', 0):.2g} |")
    lines += ["", "## Machine", "",
              f"{m['cores']} cores ({m['cores_usable']} usable), {m['cpu']}, {m['ram_gb']} GB "
              f"RAM; {m['platform']}. python {m['python']}, polars {m['polars']}, numpy "
              f"{m['numpy']}, pandas {m['pandas']}, pyarrow {m['pyarrow']}, deltalake "
              f"{m['deltalake']}.", "",
              "Environment: " + (", ".join(f"`{k}={v}`" for k, v in m["env"].items() if v)
                                 or "none of the allocator settings") + "; the pandas process "
              "also gets `NUMPY_MADVISE_HUGEPAGE=0` (build_features turns huge pages off "
              "itself).", "",
              f"1-minute load average before and after each engine: {result['load']}. The "
              "machine is shared: a load above the core count means other processes took CPU "
              "from these runs.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=None,
                        help=f"number of (store, item) series (default {DEFAULT_SERIES})")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS)
    parser.add_argument("--rows", type=int, default=None,
                        help="about this many rows: sets --series from --days (~92%% fill)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per engine")
    parser.add_argument("--engines", default="polars,pandas")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where the bronze tables are kept (default $RETAIL_ML_HOME/bench)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="features", help="report file name (without suffix)")
    parser.add_argument("--profile", action="store_true",
                        help="pyinstrument profile of the last polars run, next to the report")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # inside an engine's (or the comparison's) own process
        job = json.loads(args.child)
        if job["kind"] == "setup":
            Path(args.child_out).write_text(json.dumps(ensure_world(Scale(**job["scale"]),
                                                                    Path(job["cache"]))))
            return None
        root = Path(job["root"])
        if job["kind"] == "compare":
            out = compare_tables(root)
        else:
            out = run_engine(job["kind"], root, dt.date.fromisoformat(job["start"]),
                             dt.date.fromisoformat(job["end"]), job["runs"],
                             Path(job["profile"]) if job.get("profile") else None)
        Path(args.child_out).write_text(json.dumps(out))
        return None

    series = args.series or (math.ceil(args.rows / (args.days * 0.92)) if args.rows
                             else DEFAULT_SERIES)
    scale = Scale(series=series, days=args.days)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    env = {**ALLOCATOR_ENV, **os.environ}
    cache = (args.cache or default_cache()).resolve()
    print(f"features benchmark: {scale.n_stores} stores x {scale.n_items} items x "
          f"{scale.days} days, cache {cache}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Every step in its own process: this one stays small, each peak RSS is the step's own.
        world = _child({"kind": "setup", "scale": asdict(scale), "cache": str(cache)},
                       Path(tmp) / "setup.json", env)
        root = Path(world["root"])
        print(f"  bronze: {world['rows']:,} rows", flush=True)
        loads = [round(os.getloadavg()[0], 1)]
        for engine in engines:
            profile = args.out / f"{args.name}_profile.txt" if (args.profile and
                                                                 engine == "polars") else None
            job = {"kind": engine, "root": str(root), "start": world["start"],
                   "end": world["end"], "runs": args.repeats + 1,
                   "profile": str(profile) if profile else None}
            # build_features allocates without transparent huge pages (panel.small_pages); the
            # pandas baseline gets the same for its whole process, so the gap is not that.
            engine_env = {**env, "NUMPY_MADVISE_HUGEPAGE": "0"} if engine == "pandas" else env
            results[engine] = _child(job, Path(tmp) / f"{engine}.json", engine_env)
            loads.append(round(os.getloadavg()[0], 1))
        parity = None
        if {"polars", "pandas"} <= set(results):
            parity = _child({"kind": "compare", "root": str(root)}, Path(tmp) / "cmp.json", env)
    summary = {name: summarize(r) for name, r in results.items()}
    result: dict[str, Any] = {
        "generated": dt.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "scale": asdict(scale), "world": world, "machine": machine_info(env),
        "summary": summary, "load": loads, "engines": results, "parity": parity,
    }
    if "polars" in summary and "pandas" in summary:
        result["speedup"] = {
            "warm": summary["pandas"]["total_s"] / summary["polars"]["total_s"],
            "cold": summary["pandas"]["cold_total_s"] / summary["polars"]["cold_total_s"]}
    md, js = args.out / f"{args.name}.md", args.out / f"{args.name}.json"
    result["reports"] = [str(js)]
    if "polars" in summary:
        md.write_text(render(result))
        result["reports"].insert(0, str(md))
    js.write_text(json.dumps(result, indent=2))
    print(f"  report: {md}\n  data:   {js}", flush=True)
    if parity is not None and not parity["equal"]:
        print("  PARITY FAILED: the engines' outputs differ (see the report)", flush=True)
    return result


if __name__ == "__main__":
    main()
