"""Forecasting assets: next-horizon feature rows and the champion's batch forecasts."""

import datetime as dt

import dagster as dg
import numpy as np
import polars as pl

from ml_assets.evaluation.intervals import Calibration, bounds
from ml_assets.features.assets import feature_spec, read_feature_inputs
from ml_assets.features.transforms import SERIES, FeatureSpec
from ml_assets.forecasting.horizon import rows_at_origin
from ml_assets.ingest.plan import PLAN_TABLE
from ml_assets.metadata import table_metadata
from ml_assets.partitions import first_day
from ml_assets.training.registry import load_alias
from resources.delta import DeltaStore
from resources.platform import PlatformSettings
from resources.settings import Settings

FORECAST_FEATURES_TABLE = "gold/forecast_features"
BATCH_FORECASTS_TABLE = "gold/batch_forecasts"


def horizon_inputs(settings: Settings, delta: DeltaStore
                   ) -> tuple[dt.date, FeatureSpec, dict[str, pl.DataFrame | None]]:
    """The forecast origin (the last landed day), the feature spec, and the bronze rows,
    dimensions and plan that the next horizon's features need: one read for every next-horizon
    asset, so equal inputs give equal rows."""
    spec = feature_spec(settings.dataset)
    origin = delta.scan("bronze/sales").select(pl.col("date").max()).collect().item()
    if origin is None:
        raise dg.Failure("bronze/sales is empty: materialize `sales` first")
    step = dt.timedelta(days=spec.period_days)
    inputs = read_feature_inputs(delta, origin + step, origin + (spec.horizon + 1) * step, spec,
                                 first_day(settings))
    inputs["plan"] = delta.read(PLAN_TABLE) if delta.exists(PLAN_TABLE) else None
    return origin, spec, inputs


@dg.asset(group_name="forecasting", deps=["features", "plan"], kinds={"delta", "polars"},
          description="Feature rows for every active series over the next horizon after the "
                      "last landed day (the forecast origin), built by the same transforms as "
                      "the training rows. What batch forecasts and the Bento service read.")
def forecast_features(platform: PlatformSettings, delta: DeltaStore) -> dg.MaterializeResult:
    origin, spec, inputs = horizon_inputs(platform.get(), delta)
    report: dict[str, int] = {}
    # the backtest's function: what is served at this origin is what it scores at its own
    table, known = rows_at_origin(inputs.pop("sales"), origin, spec, report=report, **inputs)
    version = delta.overwrite(FORECAST_FEATURES_TABLE, table)
    return dg.MaterializeResult(metadata={
        **table_metadata(table, delta.uri(FORECAST_FEATURES_TABLE), version),
        "origin": str(origin),
        "series": table.select(SERIES).n_unique(),
        "horizon_periods": spec.horizon,
        # with no plan delivered at all, nothing after the origin has landed to stand in
        "known_future": known if known == "plan" else "no plan: the fallbacks below",
        "forced_zero_rows": int(table.get_column("forced_zero").sum()),
        # values the plan did not give: filled by the fallback (regular price, no promotion,
        # the covariate's default), or left missing where a covariate declares no default
        **report,
    })


@dg.asset(group_name="forecasting", deps=["forecast_features", "champion"],
          kinds={"delta", "xgboost"},
          description="The champion's forecasts for every active series over the next horizon, "
                      "each with its prediction interval (`lower`, `upper` at `interval_level`, "
                      "calibrated on the champion's backtest residuals): Delta table "
                      "`gold/batch_forecasts`, partitioned by forecast origin, with the model "
                      "version on every row. Re-running an origin replaces it.")
def batch_forecasts(platform: PlatformSettings, delta: DeltaStore) -> dg.MaterializeResult:
    model = load_alias(platform.get().mlflow_tracking_uri, "champion")
    if model is None:
        raise dg.Failure("No model has the alias `champion` yet: run the `retrain` job")
    features_version = delta.version(FORECAST_FEATURES_TABLE)
    rows = delta.read(FORECAST_FEATURES_TABLE, features_version)
    origin = rows.get_column("origin").max()
    units = model.predict(rows)
    out = rows.select("origin", "date", *SERIES, "horizon").with_columns(
        units_forecast=pl.Series(units, dtype=pl.Float64),
        **interval_columns(model.intervals, units, rows),
        model_version=pl.lit(model.version),
        model_run_id=pl.lit(model.run_id),
        features_delta_version=pl.lit(features_version, pl.Int64),
    )
    version = delta.overwrite(BATCH_FORECASTS_TABLE, out, predicate=f"origin = '{origin}'",
                              partition_by=["origin"])
    return dg.MaterializeResult(metadata={
        **table_metadata(out, delta.uri(BATCH_FORECASTS_TABLE), version),
        "origin": str(origin),
        "model_version": model.version,
        "total_units_forecast": round(float(out.get_column("units_forecast").sum()), 1),
        **({"interval_level": model.intervals.level,
            # the share of actuals the backtest found inside, by horizon bucket
            "interval_backtest_coverage": dg.MetadataValue.json(model.intervals.coverage)}
           if model.intervals else {"intervals": f"none: {model.intervals_missing}"}),
    })


def interval_columns(calibration: Calibration | None, units: np.ndarray, rows: pl.DataFrame
                     ) -> dict[str, pl.Series]:
    """`lower`, `upper` and `interval_level` of each forecast; null when the model has no
    interval calibration (a version registered before intervals were calibrated)."""
    if calibration is None:
        return {name: pl.Series(name, [None] * rows.height, pl.Float64)
                for name in ("lower", "upper", "interval_level")}
    zero = (rows.get_column("forced_zero").fill_null(False).to_numpy()
            if "forced_zero" in rows.columns else None)
    low, high = bounds(calibration, units, rows.get_column("horizon").to_numpy(), zero)
    return {"lower": pl.Series(low, dtype=pl.Float64), "upper": pl.Series(high, dtype=pl.Float64),
            "interval_level": pl.Series([calibration.level] * rows.height, dtype=pl.Float64)}
