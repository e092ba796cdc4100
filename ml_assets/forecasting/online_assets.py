"""The online feature state: what the service needs to build what-if rows at request time."""


import dagster as dg

from ml_assets.forecasting.assets import FORECAST_FEATURES_TABLE, horizon_inputs
from ml_assets.forecasting.online import build_state
from ml_assets.forecasting.online_store import online_store
from resources.delta import DeltaStore
from resources.platform import PlatformSettings


@dg.asset(group_name="forecasting", deps=["forecast_features"], kinds={"parquet", "polars"},
          description="Per active series, the bronze rows within the feature lookback before "
                      "the forecast origin, plus the dimensions: the state from which the Bento "
                      "service rebuilds a row's features with the training transforms when a "
                      "request overrides price or promotion. Published atomically under "
                      "RETAIL_ML_HOME/online, or to Redis (RETAIL_ML_ONLINE_STORE).")
def online_features(platform: PlatformSettings, delta: DeltaStore) -> dg.MaterializeResult:
    settings = platform.get()
    origin, spec, inputs = horizon_inputs(settings, delta)  # forecast_features' own read
    versions = {"bronze_sales": delta.version("bronze/sales"),
                "forecast_features": delta.version(FORECAST_FEATURES_TABLE)}
    state = build_state(inputs.pop("sales"), origin, spec, versions, **inputs)
    store = online_store(settings)
    name = store.publish(state)
    return dg.MaterializeResult(metadata={
        "origin": str(origin),
        "series": state.series_count,
        "rows": state.history.height,
        "dagster/row_count": state.history.height,
        "path": dg.MetadataValue.path(store.location(name)),
        **{f"{name}_delta_version": v for name, v in versions.items() if v is not None},
    })
