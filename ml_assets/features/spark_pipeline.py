"""One window of the feature table on Spark: what the `features` asset does with engine=spark.

The same inputs as read_feature_inputs (the window plus its lookback, each series' first sale
when the lookback does not reach the history's start, the dimensions), build_features_spark,
then one atomic window replacement in `silver/features`. Spark evaluates lazily: the read and
the features run inside the write, and no row passes through the driver.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ml_assets.features.spark_engine import build_features_spark
from ml_assets.features.transforms import SERIES, FeatureSpec
from resources.delta import DeltaStore
from resources.delta_files import Window, snapshot_files
from resources.spark import WrittenWindow

FEATURES_TABLE = "silver/features"
KEYS = ["date", *SERIES]


@dataclass(frozen=True)
class SparkInputs:
    sales: DataFrame
    anchor: dt.date  # the read's first day: on the period grid (a partition start minus periods)
    first_sale: DataFrame | None
    dims: dict[str, pl.DataFrame | None]


def read_spark_inputs(spark: SparkSession, delta: DeltaStore, start: dt.date, end: dt.date,
                      spec: FeatureSpec, history_start: dt.date) -> SparkInputs | None:
    """None when no bronze file holds rows of the read (from the Delta log alone)."""
    lookback_start = start - dt.timedelta(days=spec.lookback_periods * spec.period_days)
    bronze = delta.table("bronze/sales")
    if bronze is None or not snapshot_files(bronze, Window("date", lookback_start, end)):
        return None
    sales = delta.spark_read(spark, "bronze/sales", "date", lookback_start, end)
    first_sale = None
    if lookback_start > history_start:  # the window's read does not see every series' start
        first_sale = (delta.spark_read(spark, "bronze/sales").groupBy(*SERIES)
                      .agg(F.min("date").alias("first_sale_date")))
    # Small tables, read on the driver: their feature columns are chosen in polars (see
    # spark_engine), then broadcast.
    dims = {name: delta.read(f"bronze/{name}") if delta.exists(f"bronze/{name}") else None
            for name in ("stores", "items", "calendar")}
    return SparkInputs(sales, lookback_start, first_sale, dims)


def feature_window(inputs: SparkInputs, spec: FeatureSpec, start: dt.date,
                   end: dt.date) -> DataFrame:
    table = build_features_spark(inputs.sales, spec, inputs.anchor, first_sale=inputs.first_sale,
                                 **inputs.dims)
    date = F.col("date")
    return table.filter((date >= F.lit(start)) & (date < F.lit(end)))


def materialize_window(spark: SparkSession, delta: DeltaStore, spec: FeatureSpec,
                       start: dt.date, end: dt.date, history_start: dt.date,
                       table: str = FEATURES_TABLE) -> WrittenWindow | None:
    """None (nothing written) when bronze has no rows for the window yet."""
    inputs = read_spark_inputs(spark, delta, start, end, spec, history_start)
    if inputs is None:
        return None
    return delta.spark_replace_window(spark, table, feature_window(inputs, spec, start, end),
                                      "date", start, end, KEYS)
