"""Our one Delta I/O resource: polars frames in and out, atomic partition overwrite."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from pydantic import Field

from resources.delta_files import Window, _filesystem, remove_orphans, replace_window

if TYPE_CHECKING:  # pyspark is imported by the spark engine only
    from pyspark.sql import DataFrame, SparkSession

    from resources.spark import WrittenWindow


def date_window_predicate(column: str, start: dt.date, end: dt.date) -> str:
    """SQL predicate for [start, end): what a partition-range overwrite replaces."""
    return f"{column} >= '{start.isoformat()}' AND {column} < '{end.isoformat()}'"


def _folders(uri: str) -> list[str]:
    fs, path = _filesystem(uri.rstrip("/"))
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return [i.base_name for i in infos if i.type == pafs.FileType.Directory]


class DeltaStore(dg.ConfigurableResource):
    """Delta tables under one root (a local folder, or s3:// gs:// abfss:// in prod).

    Partition writes use delta-rs predicate overwrite: the delete of the old window and the add
    of the new files are one commit, so a crash mid-write leaves the previous version intact and
    re-running a partition never duplicates rows.
    """

    root: str
    storage_options: dict[str, str] = Field(default_factory=dict)

    def uri(self, table: str) -> str:
        return f"{self.root.rstrip('/')}/{table}"

    def _options(self) -> dict[str, str] | None:
        return self.storage_options or None

    def table(self, table: str) -> DeltaTable | None:
        try:
            return DeltaTable(self.uri(table), storage_options=self._options())
        except TableNotFoundError:
            return None

    def exists(self, table: str) -> bool:
        return self.table(table) is not None

    def version(self, table: str) -> int | None:
        dt_ = self.table(table)
        return None if dt_ is None else dt_.version()

    def scan(self, table: str, version: int | None = None) -> pl.LazyFrame:
        if not self.exists(table):
            raise FileNotFoundError(f"Delta table '{table}' does not exist at {self.uri(table)}")
        return pl.scan_delta(self.uri(table), version=version, storage_options=self._options())

    def read(self, table: str, version: int | None = None) -> pl.DataFrame:
        return self.scan(table, version).collect()

    def overwrite(
        self,
        table: str,
        df: pl.DataFrame,
        predicate: str | None = None,
        partition_by: list[str] | None = None,
    ) -> int:
        """Replaces the rows matching `predicate` (or the whole table) in one commit.

        delta-rs refuses data outside the predicate, so a window write cannot touch other
        partitions by mistake. New columns join the table (older rows read them as null): an
        upgrade that adds a column to a table, as intervals did to `gold/batch_forecasts`,
        keeps working on an existing home. Returns the new table version.
        """
        options: dict[str, object] = {"schema_mode": "merge"}
        if predicate is not None:
            options["predicate"] = predicate
        if partition_by:
            options["partition_by"] = partition_by
        df.write_delta(
            self.uri(table),
            mode="overwrite",
            storage_options=self._options(),
            delta_write_options=options,
        )
        version = self.version(table)
        assert version is not None  # just written
        return version

    def replace_window(self, table: str, df: pl.DataFrame, column: str, start: dt.date,
                       end: dt.date, stats_columns: list[str] | None = None) -> int:
        """Makes the rows with `column` in [start, end) exactly `df`, in one commit, writing
        large Parquet files ourselves (see delta_files). For the big date-keyed tables."""
        return replace_window(self.uri(table), df, Window(column, start, end),
                              stats_columns or [column], self._options())

    def tables(self) -> list[str]:
        """The Delta tables under the root, as `layer/name` (the folders with a `_delta_log`)."""
        return sorted(f"{layer}/{name}" for layer in _folders(self.root)
                      for name in _folders(self.uri(layer))
                      if "_delta_log" in _folders(self.uri(f"{layer}/{name}")))

    def remove_orphans(self, table: str, retention: dt.timedelta) -> list[str]:
        """Deletes the table's files no commit mentions, older than `retention` (the files of
        writes killed before their commit): see delta_files.remove_orphans."""
        return remove_orphans(self.uri(table), retention, self._options())

    # Spark I/O (resources/spark.py): the connector when the session has it, else the snapshot's
    # Parquet files read by Spark and Spark-written files committed here with delta-rs.

    def spark_read(self, spark: SparkSession, table: str, column: str | None = None,
                   start: dt.date | None = None, end: dt.date | None = None) -> DataFrame:
        """The table's current snapshot in Spark; with `column`, only rows in [start, end)."""
        from resources.spark import read_table

        found = self.table(table)
        if found is None:
            raise FileNotFoundError(f"Delta table '{table}' does not exist at {self.uri(table)}")
        window = None if column is None else Window(column, start or dt.date.min,
                                                    end or dt.date.max)
        return read_table(spark, found, self.uri(table), window)

    def spark_replace_window(self, spark: SparkSession, table: str, df: DataFrame, column: str,
                             start: dt.date, end: dt.date,
                             stats_columns: list[str] | None = None) -> WrittenWindow:
        """`replace_window` for a Spark frame: one commit, and no row goes through the driver."""
        from resources.spark import replace_window as spark_replace

        return spark_replace(spark, df, self.uri(table), Window(column, start, end),
                             stats_columns or [column], self._options())
