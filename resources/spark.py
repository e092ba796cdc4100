"""The Spark resource and Spark's Delta I/O.

Nothing here imports pyspark at module level: the resource is part of every resource set, and the
polars engine (the default) must neither start a JVM nor pay for importing Spark. The session is
made by dagster-pyspark's LazyPySparkResource on first use.

Delta I/O has two paths. With the Delta connector (delta-spark) in the session, Spark reads and
writes the tables itself (`replaceWhere` for a window). Without it (here: Maven Central is out of
reach, so its jars cannot be fetched), Spark reads the Parquet files of the current snapshot,
listed by delta-rs, and writes Parquet files that the driver then commits with delta-rs, exactly
as the polars writer's files are (resources/delta_files.py): one commit, atomic, idempotent.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

from resources.delta_files import (
    ROWS_PER_FILE,
    WRITE_ATTEMPTS,
    Window,
    WindowConflict,
    WindowPlan,
    commit_window,
    discard,
    footer_adds,
    plan_window,
    snapshot_files,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable, Schema
    from deltalake.transaction import AddAction
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from resources.settings import Settings

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"


def spark_config(master: str, shuffle_partitions: int, driver_memory: str,
                 extra: dict[str, str] | None = None) -> dict[str, str]:
    """Session settings. Dates and the feature maths need no time zone, but a fixed one keeps
    any timestamp a reader derives from the same on every machine."""
    return {
        "spark.master": master,
        "spark.app.name": "retail-ml",
        "spark.driver.memory": driver_memory,
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        # The window stage is CPU-bound per row: merging shuffle partitions into fewer tasks
        # than cores (as adaptive execution did, 8 into 3 on 2 cores) only idles a core.
        "spark.sql.adaptive.coalescePartitions.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.log.level": "ERROR",
        **(extra or {}),
    }


class SparkEngine(dg.ConfigurableResource):
    """A SparkSession for the spark feature engine, made on first use (never for polars runs).

    `master` is `local[*]` on a laptop and the cluster's master URL in production
    (RETAIL_ML_SPARK_MASTER). `conf` takes any further Spark setting, e.g. the Delta connector's
    `spark.sql.extensions` and `spark.jars.packages` where Maven is reachable.
    """

    master: str = "local[*]"
    shuffle_partitions: int = 8
    driver_memory: str = "4g"
    conf: dict[str, str] = Field(default_factory=dict)

    _pyspark: Any = PrivateAttr(default=None)

    def session(self) -> SparkSession:
        if self._pyspark is None:
            from dagster_pyspark import LazyPySparkResource

            self._pyspark = LazyPySparkResource(spark_config=spark_config(
                self.master, self.shuffle_partitions, self.driver_memory, self.conf))
        return self._pyspark.spark_session


def spark_resource(settings: Settings) -> SparkEngine:
    return SparkEngine(master=settings.spark_master,
                       shuffle_partitions=settings.spark_shuffle_partitions,
                       driver_memory=settings.spark_driver_memory)


def delta_connector(spark: SparkSession) -> bool:
    """Whether delta-spark is usable: its SQL extension configured and its classes loadable."""
    if DELTA_EXTENSION not in (spark.conf.get("spark.sql.extensions", "") or ""):
        return False
    from py4j.protocol import Py4JJavaError

    jvm = getattr(spark, "_jvm", None)  # the driver's classpath; absent under Spark Connect,
    if jvm is None:  # where the server has the extension configured or fails the first query
        return True
    try:
        jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")
    except Py4JJavaError:
        return False
    return True


def _spark_path(uri: str) -> str:
    return "s3a://" + uri.removeprefix("s3://") if uri.startswith("s3://") else uri


def _plain(table: DeltaTable, uri: str) -> None:
    """The Parquet path reads files as they are: refuse tables whose files are not the rows."""
    features = set(table.protocol().reader_features or [])
    if features & {"deletionVectors", "columnMapping"} or table.metadata().partition_columns:
        raise NotImplementedError(
            f"{uri}: deletion vectors, column mapping or partition columns need the Delta "
            "connector (delta-spark) in the Spark session; reading its Parquet files directly "
            "would be wrong")


def spark_schema(schema: Schema) -> Any:
    """A Delta schema as a Spark StructType: Delta's schema JSON is Spark's own format."""
    from pyspark.sql.types import StructType

    return StructType.fromJson(json.loads(schema.to_json()))


def delta_schema(schema: StructType) -> Schema:
    """The Delta schema of a Spark frame, every column nullable (as Spark writes Parquet, and as
    the polars writer's tables are)."""
    from deltalake import Schema

    fields = [{**f, "nullable": True} for f in json.loads(schema.json())["fields"]]
    return Schema.from_json(json.dumps({"type": "struct", "fields": fields}))


def read_table(spark: SparkSession, table: DeltaTable, uri: str,
               window: Window | None = None) -> DataFrame:
    """The table's current snapshot (rows of `window` only, when given)."""
    from pyspark.sql import functions as F

    if delta_connector(spark):
        df = spark.read.format("delta").load(_spark_path(uri))
    else:
        _plain(table, uri)
        files = [_spark_path(f) for f in snapshot_files(table, window)]
        schema = spark_schema(table.schema())
        df = (spark.read.schema(schema).parquet(*files) if files
              else spark.createDataFrame([], schema))
    if window is None:
        return df
    column = F.col(window.column)
    return df.filter((column >= F.lit(window.start)) & (column < F.lit(window.end)))


@dataclass(frozen=True)
class WrittenWindow:
    version: int
    rows: int
    nulls: dict[str, int]  # per column, over the window's new rows


def _guarded(df: DataFrame, window: Window) -> DataFrame:
    """Fails the write on a row outside the window, as the polars writer does, without a
    separate pass over the data: the check runs as the files are written."""
    from pyspark.sql import functions as F

    column = F.col(window.column)
    inside = (column >= F.lit(window.start)) & (column < F.lit(window.end))
    message = F.concat(F.lit(f"a row falls outside {window.column} in [{window.start}, "
                             f"{window.end}): "), F.coalesce(column.cast("string"), F.lit("null")))
    return df.withColumn(window.column, F.when(inside, column).otherwise(F.raise_error(message)))


def write_files(df: DataFrame, uri: str, folder: str, window: Window,
                rows_per_file: int) -> None:
    """Spark writes `df` as Parquet under `uri/folder`, each task's rows in date order and cut
    every `rows_per_file` rows, so each file covers a span of dates (its statistics then prune
    date reads). Nothing is committed: until the driver commits, readers never see them."""
    (df.sortWithinPartitions(window.column).write.mode("errorifexists")
     .option("maxRecordsPerFile", rows_per_file)
     .option("mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
     .parquet(_spark_path(f"{uri}/{folder}")))
    local = f"{uri}/{folder}"
    if "://" not in local:  # Hadoop's local file system leaves a .crc beside every file
        for name in os.listdir(local):
            if name.startswith(".") and name.endswith(".crc"):
                os.remove(os.path.join(local, name))


@dataclass(frozen=True)
class StagedWindow:
    plan: WindowPlan
    adds: list[AddAction]
    rows: int  # the window's new rows
    nulls: dict[str, int]


def stage_window(spark: SparkSession, df: DataFrame, uri: str, window: Window,
                 stats_columns: list[str],
                 storage_options: dict[str, str] | None = None) -> StagedWindow:
    """Everything before the commit: the plan, the new files (and the rewritten outside rows of
    files straddling the window's edge) and their add actions."""
    plan = plan_window(uri, window, storage_options)
    if plan.table is not None:  # before any file is written
        _same_schema(plan.table.schema(), delta_schema(df.schema), uri)
    elif "://" not in uri:
        os.makedirs(uri, exist_ok=True)
    tasks = int(spark.conf.get("spark.sql.shuffle.partitions") or 1)
    # A date slice of ROWS_PER_FILE rows is one polars file; here one file per task.
    rows_per_file = max(ROWS_PER_FILE // max(tasks, 1), 10_000)
    folder = f"spark-{uuid.uuid4()}"
    write_files(_guarded(df, window), uri, folder, window, rows_per_file)
    new = footer_adds(uri, folder, stats_columns)
    nulls: dict[str, int] = {}
    for _, counts in new:
        for name, n in counts.items():
            nulls[name] = nulls.get(name, 0) + n
    adds = [add for add, _ in new]
    rows = sum(json.loads(add.stats)["numRecords"] for add in adds)
    if plan.straddling:
        from pyspark.sql import functions as F

        column = F.col(window.column)
        kept = (spark.read.schema(df.schema).parquet(*[_spark_path(p) for p in plan.straddling])
                .filter((column < F.lit(window.start)) | (column >= F.lit(window.end))))
        write_files(kept, uri, f"{folder}-kept", window, rows_per_file)
        adds += [add for add, _ in footer_adds(uri, f"{folder}-kept", stats_columns)]
    return StagedWindow(plan, adds, rows, nulls)


def replace_window(spark: SparkSession, df: DataFrame, uri: str, window: Window,
                   stats_columns: list[str],
                   storage_options: dict[str, str] | None = None) -> WrittenWindow:
    """Makes the table's rows inside `window` exactly `df`, in one commit; the data never goes
    through the driver. Staged again if a concurrent commit replaced the files at the window's
    edge (see delta_files.commit_window)."""
    if delta_connector(spark):
        return _replace_with_connector(spark, df, uri, window)
    attempt = 0
    while True:
        attempt += 1
        staged = stage_window(spark, df, uri, window, stats_columns, storage_options)
        table = staged.plan.table
        schema = delta_schema(df.schema) if table is None else table.schema()
        try:
            version = commit_window(staged.plan, staged.adds, schema, storage_options)
            return WrittenWindow(version, staged.rows, staged.nulls)
        except WindowConflict:
            discard(uri, staged.adds)
            if attempt == WRITE_ATTEMPTS:
                raise


def _same_schema(table: Schema, new: Schema, uri: str) -> None:
    def columns(s: Schema) -> list[tuple[str, str]]:
        return [(f["name"], json.dumps(f["type"])) for f in json.loads(s.to_json())["fields"]]

    if columns(table) != columns(new):
        raise ValueError(f"{uri}: the rows to write do not have the table's schema:\n"
                         f"  table: {columns(table)}\n  rows:  {columns(new)}")


def _replace_with_connector(spark: SparkSession, df: DataFrame, uri: str,
                            window: Window) -> WrittenWindow:
    from deltalake import DeltaTable
    from pyspark.sql import functions as F

    predicate = (f"{window.column} >= '{window.start.isoformat()}' AND "
                 f"{window.column} < '{window.end.isoformat()}'")
    (_guarded(df, window).sortWithinPartitions(window.column).write.format("delta")
     .mode("overwrite").option("replaceWhere", predicate).save(_spark_path(uri)))
    # Row and null counts for the asset's metadata: a one-row aggregate of what was written.
    written = spark.read.format("delta").load(_spark_path(uri)).filter(predicate)
    counts = written.select(F.count(F.lit(1)).alias("__rows"),
                            *[F.count_if(F.col(c).isNull()).alias(c) for c in df.columns]).first()
    assert counts is not None
    row = counts.asDict()
    rows = int(row.pop("__rows"))
    return WrittenWindow(DeltaTable(uri).version(), rows, {k: int(v) for k, v in row.items()})
