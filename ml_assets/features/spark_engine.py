"""The Spark feature engine: the table of transforms.build_features, column for column.

Same rows, columns, order and types as the polars engine, so both write the same Delta schema.
The window maths is in spark_windows.py; here the rows are prepared (the period index, missing
values), the calendar and the attributes joined, and the output cast to the polars schema. The
dimension tables are small and their column choice (transforms._static_columns: numbers and
short labels, not free text or dates) must be the polars engine's own, so it runs in polars on
the driver and the result is broadcast.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ml_assets.features.spark_windows import window_features
from ml_assets.features.transforms import (
    SERIES,
    FeatureSpec,
    _static_columns,
    feature_columns,
)

# Output types the polars engine gives (Int8 / Int16 calendar parts, Int64 age; others Float64)
CALENDAR = {"day_of_week": T.ByteType(), "day_of_month": T.ByteType(), "month": T.ByteType(),
            "week_of_year": T.ByteType(), "day_of_year": T.ShortType()}
AGE = "periods_since_first_sale"


def _no_nan(name: str) -> Column:
    """Missing as null: the polars engine counts NaN and null alike as no value."""
    value = F.col(name).cast("double")
    return F.when(~F.isnan(value), value)


def _period(anchor: dt.date, period_days: int) -> Column:
    """Periods since `anchor`, which must lie on the data's grid (as panel.build_panel asks)."""
    days = F.datediff(F.col("date"), F.lit(anchor))
    if period_days == 1:
        return days
    off_grid = F.concat(F.lit("date "), F.col("date").cast("string"),
                        F.lit(f" is not on the {period_days}-day grid that starts {anchor}"))
    return F.when(days % period_days == 0, (days / period_days).cast("int")).otherwise(
        F.raise_error(off_grid))


def _attributes(spark: SparkSession, dim: pl.DataFrame | None, key: str) -> DataFrame | None:
    if dim is None or dim.height == 0:
        return None
    return F.broadcast(spark.createDataFrame(_static_columns(dim, key).to_arrow()))


def build_features_spark(
    sales: DataFrame,
    spec: FeatureSpec,
    anchor: dt.date,
    stores: pl.DataFrame | None = None,
    items: pl.DataFrame | None = None,
    calendar: pl.DataFrame | None = None,
    first_sale: DataFrame | None = None,
) -> DataFrame:
    """Bronze sales (Spark) → one feature row per input row; `anchor`: a date on the data's
    period grid at or before its first date (the read's first day). `first_sale` (series →
    `first_sale_date`) as in build_features."""
    spark = sales.sparkSession
    rows = sales.select(
        "date", *SERIES, F.col("units_sold").cast("double").alias("units_sold"),
        *[F.col(c).cast("double").alias(c) for c in spec.numeric_covariates],
        *[F.col(c).cast("string").alias(c) for c in spec.categorical_covariates],
        _no_nan("units_sold").alias("_units"), _no_nan("price").alias("_price"),
        F.coalesce(F.col("on_promo").cast("double"), F.lit(0.0)).alias("_promo"),
        _period(anchor, spec.period_days).alias("t"),
    )
    if first_sale is not None:  # joined before the windows: both are partitioned by series
        rows = rows.join(first_sale.select(*SERIES, "first_sale_date"), on=SERIES, how="left")
        age = F.floor(F.datediff(F.col("date"), F.col("first_sale_date")) / spec.period_days)
    else:
        age = F.col("t") - F.col("_t0")
    out = window_features(rows, spec).withColumn(AGE, age)

    date = F.col("date")
    out = out.select("*", (F.weekday(date) + 1).alias("day_of_week"),
                     F.dayofmonth(date).alias("day_of_month"), F.month(date).alias("month"),
                     F.weekofyear(date).alias("week_of_year"),
                     F.dayofyear(date).alias("day_of_year"))
    static: list[str] = []
    cal: list[str] = []
    for dim, key, names in ((stores, "store_id", static), (items, "item_id", static),
                            (calendar, "date", cal)):
        attrs = _attributes(spark, dim, key)
        if attrs is not None:
            out = out.join(attrs, on=key, how="left")
            names += [c for c in attrs.columns if c != key]

    types = {**CALENDAR, AGE: T.LongType(),
             **{c: T.StringType() for c in spec.categorical_covariates}}
    order = ["date", *SERIES, "units_sold", *feature_columns(spec, static, cal)]
    passed = {"date", *SERIES, *static, *cal}  # keep the types they came with
    return out.select(*[F.col(c) if c in passed else F.col(c).cast(types.get(c, T.DoubleType()))
                        for c in order])
