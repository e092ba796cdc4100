"""The feature table asset: bronze Delta → point-in-time features, partitioned like sales."""


import datetime as dt

import dagster as dg
import polars as pl

from ml_assets.features.transforms import SERIES, FeatureSpec, build_features
from ml_assets.metadata import markdown_table, table_metadata
from ml_assets.partitions import first_day, table_pool, window_dates
from resources.delta import DeltaStore
from resources.platform import PlatformSettings
from resources.settings import DatasetConfig
from resources.spark import SparkEngine

FEATURES_TABLE = "silver/features"


def feature_spec(ds: DatasetConfig) -> FeatureSpec:
    kinds = {c.name: c.type for c in ds.covariates}

    def typed(name: str, value: int | float | str) -> float | str:
        return float(value) if kinds[name] == "numeric" else str(value)

    return FeatureSpec(
        horizon=ds.horizon_periods,
        period_days=ds.period_days,
        numeric_covariates=tuple(c.name for c in ds.covariates if c.type == "numeric"),
        categorical_covariates=tuple(c.name for c in ds.covariates if c.type == "categorical"),
        defaults=tuple((name, typed(name, value)) for name, value in ds.defaults.items()),
        zero_when=tuple((name, typed(name, value)) for name, value in ds.zero_when.items()),
    )


def read_feature_inputs(delta: DeltaStore, start: dt.date, end: dt.date, spec: FeatureSpec,
                        history_start: dt.date) -> dict[str, pl.DataFrame | None]:
    """Bronze rows the window needs (its own dates plus the lookback) and the dimensions."""
    lookback_start = start - dt.timedelta(days=spec.lookback_periods * spec.period_days)
    sales = (delta.scan("bronze/sales")
             .filter(pl.col("date") >= lookback_start, pl.col("date") < end)
             .drop("source_file", "row_number").collect())
    first_sale = None
    if lookback_start > history_start:  # the window's read does not see every series' start
        first_sale = (delta.scan("bronze/sales").group_by(SERIES)
                      .agg(pl.col("date").min().alias("first_sale_date")).collect())
    dims = {name: delta.read(f"bronze/{name}") if delta.exists(f"bronze/{name}") else None
            for name in ("stores", "items", "calendar")}
    return {"sales": sales, "first_sale": first_sale, **dims}


def null_shares(df: pl.DataFrame) -> list[tuple[str, str]]:
    shares = df.select(pl.all().null_count() / max(df.height, 1)).row(0, named=True)
    return [(name, f"{share:.1%}") for name, share in shares.items()]


def _no_rows(end: dt.date) -> dg.Failure:
    return dg.Failure(f"No bronze sales rows before {end}: materialize `sales` first")


def materialize_features(context: dg.AssetExecutionContext, platform: PlatformSettings,
                         delta: DeltaStore, spark: SparkEngine) -> dg.MaterializeResult:
    settings = platform.get()
    spec = feature_spec(settings.dataset)
    start, end = window_dates(context)
    if settings.engine == "spark":
        metadata = _spark_window(spark, delta, spec, start, end, first_day(settings))
    else:
        inputs = read_feature_inputs(delta, start, end, spec, first_day(settings))
        sales = inputs.pop("sales")
        if sales is None or sales.height == 0:
            raise _no_rows(end)
        table = build_features(sales, spec, **inputs).filter(
            pl.col("date").is_between(pl.lit(start), pl.lit(end), closed="left"))
        version = delta.replace_window(FEATURES_TABLE, table, "date", start, end,
                                       ["date", "store_id", "item_id"])
        metadata = {**table_metadata(table, delta.uri(FEATURES_TABLE), version),
                    "null_share_per_feature": markdown_table(null_shares(table),
                                                             ("column", "null share"))}
    return dg.MaterializeResult(metadata={
        **metadata,
        "engine": settings.engine,
        "window": f"{start} .. {end - dt.timedelta(days=1)}",
        "horizon_periods": spec.horizon,
        "lags": str(spec.lags),
    })


def _spark_window(spark: SparkEngine, delta: DeltaStore, spec: FeatureSpec, start: dt.date,
                  end: dt.date, history_start: dt.date) -> dict[str, object]:
    """The window on Spark. Row count and null shares come from the written files' footers:
    counting them in Spark would compute the features a second time."""
    from ml_assets.features.spark_pipeline import materialize_window  # imports pyspark

    written = materialize_window(spark.session(), delta, spec, start, end, history_start)
    if written is None:
        raise _no_rows(end)
    schema = delta.scan(FEATURES_TABLE).collect_schema()  # the log's schema, no data read
    rows = max(written.rows, 1)
    shares = [(name, f"{written.nulls.get(name, 0) / rows:.1%}") for name in schema.names()]
    return {**table_metadata(pl.DataFrame(schema=schema), delta.uri(FEATURES_TABLE),
                             written.version),
            "dagster/row_count": written.rows,
            "null_share_per_feature": markdown_table(shares, ("column", "null share"))}


def build_feature_assets(partitions: dg.PartitionsDefinition,
                         engine: str = "polars") -> list[dg.AssetsDefinition]:
    """`engine` (the settings' RETAIL_ML_ENGINE) is the kind the UI shows: what actually runs."""
    @dg.asset(
        name="features",
        group_name="features",
        partitions_def=partitions,
        deps=["sales", "stores", "items", "calendar"],
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=table_pool(FEATURES_TABLE),  # writers of one table queue (ingest/assets.py)
        kinds={"delta", engine},
        description="Point-in-time features per (store, item, date): lags >= horizon, rolling "
                    "statistics up to the forecast origin, price, promotion, calendar and "
                    "attributes. Delta table `silver/features`, partitioned by date. Computed "
                    "by polars, or by Spark with RETAIL_ML_ENGINE=spark (the same table).",
    )
    def features(context: dg.AssetExecutionContext, platform: PlatformSettings,
                 delta: DeltaStore, spark: SparkEngine) -> dg.MaterializeResult:
        return materialize_features(context, platform, delta, spark)

    return [features]
