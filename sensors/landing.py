"""Landing-zone sensor: new or changed sales files become runs over the dates they hold.

Before a champion is served, a run ingests them (`ingest_job`); once one is (its pointer is
published), the run is the whole daily cycle (`daily_forecast`: ingest, features, forecasts and
monitoring), so the drift and accuracy the retrain sensor reads follow every landing.
"""


import bisect
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import dagster as dg

from ml_assets.deployment.pointer import POINTER
from ml_assets.ingest.landing import date_span, list_files
from resources.platform import PlatformSettings

INGEST_JOB = "ingest_job"
DAILY_JOB = "daily_forecast"


def containing_key(keys: list[str], day: dt.date) -> str:
    """The partition key whose window holds `day`, clamped to the keys that exist (keys are
    ISO dates of window starts, so they sort as dates)."""
    i = bisect.bisect_right(keys, day.isoformat()) - 1
    return keys[min(max(i, 0), len(keys) - 1)]


def already_ingested(instance: dg.DagsterInstance, paths: list[str], source: Any,
                     keys: list[str]) -> dict[str, bool]:
    """For a sensor without a cursor (its first tick): which files an earlier run has already
    ingested, because they predate the last `sales` materialization and their dates' partitions
    are materialized (`make demo` ingests everything before `make dev` starts the sensor)."""
    latest = instance.fetch_materializations(dg.AssetKey("sales"), limit=1).records
    if not latest or not keys:
        return {p: False for p in paths}
    at = latest[0].timestamp
    done = instance.get_materialized_partitions(dg.AssetKey("sales"))
    out = {}
    for path in paths:
        span = Path(path).stat().st_mtime < at and date_span([Path(path)], source)
        out[path] = bool(span) and all(containing_key(keys, d) in done for d in span)
    return out


def changed_since(cursor: str, current: dict[str, int]) -> list[str]:
    """The files modified after the cursor's newest one. The cursor keeps only that time and the
    names modified at it (under 1 KB, however many files have landed), not every file."""
    seen = json.loads(cursor)
    after, names = seen["after"], set(seen["names"])
    return sorted(p for p, ns in current.items()
                  if ns > after or (ns == after and Path(p).name not in names))


def new_cursor(current: dict[str, int]) -> str:
    after = max(current.values(), default=0)
    return json.dumps({"after": after,
                       "names": sorted(Path(p).name for p, ns in current.items() if ns == after)})


def build_landing_sensor(ingest: Any, daily: Any) -> dg.SensorDefinition:
    """The sensor over the ingest and daily jobs (asset jobs, resolved with the Definitions)."""
    @dg.sensor(name="landing_sensor", jobs=[ingest, daily], minimum_interval_seconds=10,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Turns new or changed landing files into one run over the partition "
                           "range they cover: ingest only until a champion is served, then the "
                           "daily cycle through monitoring. The cursor keeps the newest "
                           "modification time seen.")
    def landing_sensor(context: dg.SensorEvaluationContext, platform: PlatformSettings):
        settings = platform.get()
        source = settings.dataset.sales
        current = {str(p): p.stat().st_mtime_ns for p in list_files(source)}
        partitions = context.repository_def.get_job(INGEST_JOB).partitions_def
        keys = partitions.get_partition_keys(dynamic_partitions_store=context.instance) \
            if partitions else []
        if context.cursor and "after" in context.cursor:
            changed = changed_since(context.cursor, current)
        else:  # the first tick (or an older cursor): what no run has ingested yet
            ingested = already_ingested(context.instance, list(current), source, keys)
            changed = sorted(p for p in current if not ingested[p])
        if not changed:
            context.update_cursor(new_cursor(current))
            return dg.SkipReason(f"No new or changed files matching {source.path}")
        if not keys:
            return dg.SkipReason("No partition exists yet: the dataset starts in the future")
        span = date_span([Path(p) for p in changed], source)
        end = partitions.time_window_for_partition_key(keys[-1]).end.date()
        if settings.dataset.simulation is not None and span and span[1] >= end:
            # The world's clock moved after this code location loaded. The cursor stays, so
            # the first tick after a reload takes them.
            return dg.SkipReason(
                f"{len(changed)} new file(s) reach {span[1]}, past the last partition "
                f"({keys[-1]}): the code location was loaded before the world's clock moved. "
                f"Reload it (Deployment > Reload; `retail-ml simulate` does when `make dev` runs)")
        context.update_cursor(new_cursor(current))
        # A file without one parseable date still gets a run, so its rows reach quarantine.
        lo, hi = (containing_key(keys, d) for d in span) if span else (keys[-1], keys[-1])
        digest = hashlib.sha1(json.dumps({p: current[p] for p in changed}).encode()
                              ).hexdigest()[:16]
        served = (settings.serving_dir / POINTER).exists()
        return dg.RunRequest(
            run_key=f"landing-{digest}", job_name=DAILY_JOB if served else INGEST_JOB,
            tags={"dagster/asset_partition_range_start": lo,
                  "dagster/asset_partition_range_end": hi,
                  "retail_ml/trigger": "landing_sensor", "retail_ml/files": str(len(changed))},
        )

    return landing_sensor
