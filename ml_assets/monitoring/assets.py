"""The `prediction_log` asset: the service's closed log files, ingested into Delta once each."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from ml_assets.metadata import markdown_table, table_metadata
from ml_assets.monitoring.prediction_log import (
    closed_files,
    open_files,
    publish_stale,
    read_log_files,
)
from resources.delta import DeltaStore
from resources.platform import PlatformSettings

PREDICTION_LOG_TABLE = "monitoring/prediction_log"
MAX_MALFORMED_SHOWN = 50


def _sql_list(names: list[str]) -> str:
    return ", ".join("'" + n.replace("'", "''") + "'" for n in names)


@dg.asset(group_name="monitoring", kinds={"delta", "polars"},
          description="Every forecast the demand_forecaster service answered (request, units, "
                      "model and feature versions, latency), from the closed JSON-lines files "
                      "under RETAIL_ML_HOME/predictions. Each file is ingested once, replaced by "
                      "its `source_file` in one commit, so re-running never duplicates rows. "
                      "Files still being written (.open) wait for the next run; ones left by a "
                      "crashed writer are published once their hour is long over. Malformed "
                      "lines are skipped and reported with file and line number.")
def prediction_log(platform: PlatformSettings, delta: DeltaStore) -> dg.MaterializeResult:
    directory = platform.get().home / "predictions"
    recovered = publish_stale(directory, dt.datetime.now(dt.UTC))  # left by crashed writers
    files = closed_files(directory)
    existing = delta.table(PREDICTION_LOG_TABLE)
    done: set[str] = set()
    if existing is not None:
        done = set(delta.scan(PREDICTION_LOG_TABLE).select("source_file").unique()
                   .collect().get_column("source_file").to_list())
    new = [f for f in files if f.name not in done]
    frame, malformed = read_log_files(new)
    if existing is None:
        delta.overwrite(PREDICTION_LOG_TABLE, frame, partition_by=["log_date"])
    elif new:
        delta.overwrite(PREDICTION_LOG_TABLE, frame, partition_by=["log_date"],
                        predicate=f"source_file IN ({_sql_list([f.name for f in new])})")
    table = delta.read(PREDICTION_LOG_TABLE)
    newest = table.get_column("ts").max()
    metadata = table_metadata(table, delta.uri(PREDICTION_LOG_TABLE),
                              delta.version(PREDICTION_LOG_TABLE))
    metadata.update({
        "files": table.get_column("source_file").n_unique(),
        "files_ingested": len(new),
        "rows_ingested": frame.height,
        "newest_ts": str(newest) if newest is not None else "none",
        "open_files_skipped": len(open_files(directory)),
        "stale_open_files_published": len(recovered),
        "malformed_lines": len(malformed),
    })
    if malformed:
        dg.get_dagster_logger().warning(
            "prediction_log: %d malformed lines skipped: %s", len(malformed),
            "; ".join(str(m) for m in malformed[:MAX_MALFORMED_SHOWN]))
        metadata["malformed"] = markdown_table(
            [(m.file, m.line, m.reason) for m in malformed[:MAX_MALFORMED_SHOWN]],
            ("file", "line", "reason"))
    return dg.MaterializeResult(metadata=metadata)

