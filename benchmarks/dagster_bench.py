"""Dagster's bookkeeping in a long single-run backfill: where a run over every daily partition
of a real-shaped dataset spends its time, storage by storage.

    python -m benchmarks.dagster_bench            # the Rossmann-shaped world: 942 partitions
    python -m benchmarks.dagster_bench --quick    # 10 stores x 121 days

One run of `features_job` (ingest, then features) over every partition, as a backfill from the
UI or `make demo` launches it (a single run over the range: the assets' BackfillPolicy), on
the same landed files in each variant, each variant in its own process with a fresh
RETAIL_ML_HOME and DAGSTER_HOME:

- **in memory**: Dagster's ephemeral instance, the baseline (the pipeline's own work, and
  Dagster's execution without storage writes);
- **sqlite, per-partition planned events**: the laptop instance as Dagster ships it, which
  records, before the first step, one "planned" event per partition and asset;
- **sqlite, one planned event per asset**: the same instance with
  DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS set, as the Makefile and `retail-ml` set it;
- **Postgres**, both ways (skipped when no server answers on 127.0.0.1:5432).

Reported per variant: time before the first step starts (run creation included), the run's
wall time, the events it stored, and bookkeeping = wall time - the in-memory run's wall time,
as a share of the wall time. Results: results/dagster.md and .json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import accuracy_data

RESULTS = Path(__file__).resolve().parent / "results"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "datasets" / "store_daily.yaml"
SUBSET = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
PG = {"host": "127.0.0.1", "port": 5432, "user": os.environ.get("PGUSER", "postgres")}
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
VARIANTS = {  # name: (storage, planned events as one subset per asset)
    "in memory": ("memory", True),
    "sqlite, per-partition planned events": ("sqlite", False),
    "sqlite, one planned event per asset": ("sqlite", True),
    "Postgres, per-partition planned events": ("postgres", False),
    "Postgres, one planned event per asset": ("postgres", True),
}


def _postgres_up() -> bool:
    try:
        socket.create_connection((PG["host"], PG["port"]), timeout=3).close()
        return True
    except OSError:
        return False


def _postgres_database() -> str:
    import psycopg2

    name = f"retail_ml_bench_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(host=PG["host"], port=PG["port"], user=PG["user"], dbname="test")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return name


def _drop_postgres_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=PG["host"], port=PG["port"], user=PG["user"], dbname="test")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


def _instance_yaml(storage: str, database: str | None) -> str:
    if storage != "postgres":
        return "telemetry:\n  enabled: false\n"
    url = f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{database}"
    return "\n".join(["telemetry:", "  enabled: false", "storage:", "  postgres:",
                      f"    postgres_url: {url}", ""])


def run_variant(env: dict[str, str], storage: str) -> dict[str, Any]:
    """In this process: one `features_job` run over every partition (env holds the settings and
    DAGSTER_HOME). Returns its timings from the clock and from the event log."""
    import warnings

    import dagster as dg

    from ml_assets.definitions import build_definitions
    from resources.settings import load_settings

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    settings = load_settings(env)
    defs = build_definitions(settings, env["RETAIL_ML_DATASET"])
    job = defs.resolve_job_def("features_job")
    keys = job.partitions_def.get_partition_keys()  # type: ignore[union-attr]
    tags = {"dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1]}
    instance = (dg.DagsterInstance.ephemeral() if storage == "memory"
                else dg.DagsterInstance.get())
    with instance:
        started = time.time()
        result = job.execute_in_process(instance=instance, raise_on_error=False,
                                        run_config=QUIET, tags=tags)
        wall = time.time() - started
        logs = instance.all_logs(result.run_id)
    steps = [e.timestamp for e in logs
             if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"]
    kinds: dict[str, int] = {}
    for entry in logs:
        if entry.dagster_event is not None:
            kind = entry.dagster_event.event_type_value
            kinds[kind] = kinds.get(kind, 0) + 1
    return {"success": result.success, "partitions": len(keys), "wall_s": wall,
            "before_first_step_s": (min(steps) - started) if steps else None,
            "events": len(logs), "planned_events": kinds.get("ASSET_MATERIALIZATION_PLANNED", 0),
            "materialization_events": kinds.get("ASSET_MATERIALIZATION", 0)}


def _child(args: argparse.Namespace) -> int:
    env = json.loads(args.child)
    os.environ.update(env)
    print(json.dumps(run_variant(env, env.pop("BENCH_STORAGE"))))
    return 0


def _variant(name: str, storage: str, subset: bool, base_env: dict[str, str],
             work: Path) -> dict[str, Any]:
    folder = work / name.replace(",", "").replace(" ", "_")
    home = folder / "retail_ml"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    database = _postgres_database() if storage == "postgres" else None
    (dagster_home / "dagster.yaml").write_text(_instance_yaml(storage, database))
    env = {**base_env, "RETAIL_ML_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
           "BENCH_STORAGE": storage}
    child_env = {k: v for k, v in os.environ.items() if k != SUBSET}
    if subset:
        child_env[SUBSET] = "true"
    try:
        out = subprocess.run([sys.executable, "-m", "benchmarks.dagster_bench", "--child",
                              json.dumps(env)], env={**child_env, **env}, capture_output=True,
                             text=True, check=False)
    finally:
        if database:
            _drop_postgres_database(database)
    if out.returncode != 0:
        raise RuntimeError(f"{name}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 stores, 120 days")
    parser.add_argument("--days", type=int, help="only the last N days of the world")
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS),
                        help="run just this variant (repeatable; default: all)")
    parser.add_argument("--out", type=Path, help="report folder (results/, or results/quick)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        sys.exit(_child(args))
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    work = Path(tempfile.mkdtemp(prefix="dagster_bench_"))
    try:
        size = accuracy_data.StoreDailySize(stores=10) if args.quick else \
            accuracy_data.StoreDailySize()
        days = args.days or (120 if args.quick else None)
        if days:
            size = dataclasses.replace(size, start=size.end - dt.timedelta(days=days))
        counts = accuracy_data.write_store_daily(work / "data", size)
        shutil.copy(EXAMPLE, work / EXAMPLE.name)
        end = dt.date.fromisoformat(str(size.end))
        base_env = {"RETAIL_ML_DATASET": str(work / EXAMPLE.name),
                    "RETAIL_ML_TODAY": (end + dt.timedelta(days=1)).isoformat()}
        results: dict[str, Any] = {}
        for name, (storage, subset) in VARIANTS.items():
            if args.variant and name not in args.variant:
                continue
            if storage == "postgres" and not _postgres_up():
                results[name] = {"skipped": "no Postgres on 127.0.0.1:5432"}
                continue
            results[name] = _variant(name, storage, subset, base_env, work)
            print(f"{name}: {results[name]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"generated": dt.datetime.now().isoformat(timespec="seconds"),
              "quick": args.quick, "data": counts, "variants": results,
              "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python "
                         f"{platform.python_version()}", "load": os.getloadavg()}
    _write(report, out)
    return {**report, "headline": _headline(results), "reports": [str(out / "dagster.md")]}


def _headline(results: dict[str, Any]) -> str:
    ran = {k: v for k, v in results.items() if "wall_s" in v}
    return "; ".join(f"{k}: first step after {v['before_first_step_s']:.1f} s, run "
                     f"{v['wall_s']:.1f} s" for k, v in ran.items())


def _write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "dagster.json").write_text(json.dumps(report, indent=2))
    base = report["variants"].get("in memory", {}).get("wall_s")
    data = report["data"]
    lines = [
        "# Dagster bookkeeping: one run over every daily partition",
        "",
        f"Generated {report['generated']} by `python -m benchmarks.dagster_bench"
        f"{' --quick' if report['quick'] else ''}` ({report['machine']}; 1/5/15-minute load "
        f"at the end {' '.join(f'{x:.1f}' for x in report['load'])}). How it runs: the "
        "module's docstring.",
        "",
        f"Data: the Rossmann-shaped world of `benchmarks/accuracy_data.py`, {data['stores']} "
        f"stores x {data['days']} days, {data['rows']:,} rows; `features_job` (ingest, then "
        "features) over every partition in one run.",
        "",
        "| storage, planned events | partitions | before the first step s | wall s | events "
        "stored | planned | materializations | bookkeeping (wall - in memory) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in report["variants"].items():
        if "skipped" in v:
            lines.append(f"| {name} | skipped: {v['skipped']} | | | | | | |")
            continue
        extra = v["wall_s"] - (base or 0.0)
        share = ("-" if name == "in memory" or base is None
                 else f"{extra:.1f} s ({extra / v['wall_s']:.0%})")
        lines.append(f"| {name} | {v['partitions']} | {v['before_first_step_s']:.1f} | "
                     f"{v['wall_s']:.1f} | {v['events']:,} | {v['planned_events']:,} | "
                     f"{v['materialization_events']:,} | {share} |")
    (out / "dagster.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
