"""Realized forecast accuracy: forecasts joined to the actuals that landed after them.

Forecasts come from two places: the batch job (`gold/batch_forecasts`) and the service's
prediction log. What-if requests (a price or promotion override) are scenarios, not forecasts
of what happened, so they are counted and left out. A forecast is

- `matched` when its actual landed (and `late` when it landed in a file dated after its day),
- `missing` when its day has landed for other series but not for this one,
- `pending` when its day is after the last landed day (the actual may still come).

Nothing is dropped silently: every forecast has one of these statuses, and the counts are
reported.
"""

from __future__ import annotations

import datetime as dt
import re

import polars as pl

from ml_assets.evaluation.metrics import horizon_bucket, metric_table
from ml_assets.features.transforms import SERIES

FORECAST_COLUMNS = ["source", "origin", "date", *SERIES, "horizon", "model_version", "forecast"]
FILE_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


def batch_forecasts_frame(batch: pl.DataFrame) -> pl.DataFrame:
    return batch.select(pl.lit("batch").alias("source"), "origin", "date", *SERIES,
                        pl.col("horizon").cast(pl.Int64), "model_version",
                        pl.col("units_forecast").alias("forecast"))


def logged_forecasts_frame(log: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """The prediction log as forecasts, one per (series, date, model, origin): a series asked
    for many times counts once. Returns them and the number of what-if records left out."""
    what_if = pl.col("price").is_not_null() | pl.col("on_promo").is_not_null()
    plain = log.filter(~what_if)
    frame = (plain.group_by("features_origin", "date", *SERIES, "model_version")
             .agg(pl.col("horizon").first().cast(pl.Int64), pl.col("units").mean())
             .select(pl.lit("online").alias("source"),
                     pl.col("features_origin").alias("origin"), "date", *SERIES, "horizon",
                     "model_version", pl.col("units").alias("forecast")))
    return frame, log.height - plain.height


def actuals_frame(sales: pl.DataFrame) -> pl.DataFrame:
    """Bronze sales as actuals, with `late` when the row's file is dated after the row's day
    (only for files whose name carries a date, as the landing zone's daily files do)."""
    file_day = pl.col("source_file").str.extract(FILE_DATE.pattern, 1).str.to_date(strict=False)
    return sales.select("date", *SERIES, pl.col("units_sold").cast(pl.Float64),
                        (file_day > pl.col("date")).fill_null(False).alias("late"))


def join_actuals(forecasts: pl.DataFrame, actuals: pl.DataFrame) -> pl.DataFrame:
    """Every forecast with its actual (null when none) and its status."""
    last = actuals.get_column("date").max()
    joined = forecasts.join(actuals, on=["date", *SERIES], how="left")
    status = (pl.when(pl.col("units_sold").is_not_null()).then(pl.lit("matched"))
              .when(pl.col("date") <= last).then(pl.lit("missing"))
              .otherwise(pl.lit("pending")))
    return joined.with_columns(status.alias("status"), pl.col("late").fill_null(False))


def status_counts(joined: pl.DataFrame) -> dict[str, int]:
    counts = dict(joined.group_by("status").len().iter_rows())
    out = {s: int(counts.get(s, 0)) for s in ("matched", "missing", "pending")}
    out["late"] = int(joined.filter(pl.col("status") == "matched").get_column("late").sum())
    return out


def accuracy_tables(joined: pl.DataFrame, period_days: int,
                    categories: pl.DataFrame | None) -> dict[str, pl.DataFrame]:
    """WAPE, bias, MAE and n of the matched forecasts: overall and by source, day, horizon
    bucket, store and category (when the items have one)."""
    matched = joined.filter(pl.col("status") == "matched").with_columns(
        horizon_bucket(pl.col("horizon"), period_days).alias("horizon_bucket"))
    if categories is not None:
        matched = matched.join(categories, on="item_id", how="left")
    scopes = {"overall": [], "source": ["source"], "model_version": ["model_version"],
              "day": ["date"], "horizon_bucket": ["horizon_bucket"], "store": ["store_id"]}
    if categories is not None:
        scopes["category"] = [categories.columns[1]]
    return {name: metric_table(matched, forecasts=["forecast"], by=by)
            .drop("forecaster", "mase", "rmspe", "rmse") for name, by in scopes.items()}


def long_table(tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """`accuracy_tables` as one frame: scope, key (the group's values joined by "|"; "all"
    overall), wape, bias, mae, n."""
    metrics = ["wape", "bias", "mae", "n"]
    parts = []
    for scope, table in tables.items():
        keys = [c for c in table.columns if c not in metrics]
        key = (pl.concat_str([pl.col(c).cast(pl.Utf8) for c in keys], separator="|")
               if keys else pl.lit("all"))
        parts.append(table.select(pl.lit(scope).alias("scope"), key.alias("key"), *metrics))
    return pl.concat(parts)


def window_error(joined: pl.DataFrame, end: dt.date, days: int) -> tuple[float, float, int]:
    """WAPE and bias of the matched forecasts for the `days` days up to `end`, and their
    number."""
    start = end - dt.timedelta(days=days - 1)
    rows = joined.filter((pl.col("status") == "matched") & pl.col("date").is_between(start, end))
    if rows.is_empty():
        return float("nan"), float("nan"), 0
    row = metric_table(rows, forecasts=["forecast"]).row(0, named=True)
    return float(row["wape"]), float(row["bias"]), int(row["n"])
