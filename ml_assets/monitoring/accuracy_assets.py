"""The `forecast_accuracy` asset: realized error once actuals land, against what was expected."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator

import dagster as dg
import polars as pl

from ml_assets.metadata import markdown_table
from ml_assets.monitoring.accuracy import (
    accuracy_tables,
    actuals_frame,
    batch_forecasts_frame,
    join_actuals,
    logged_forecasts_frame,
    long_table,
    status_counts,
    window_error,
)
from ml_assets.training.registry import registry_client
from resources.delta import DeltaStore
from resources.platform import PlatformSettings
from resources.tracking import REGISTERED_MODEL

ACCURACY_TABLE = "monitoring/forecast_accuracy"
WINDOW_PERIODS = 7  # the realized-error window the retrain policy reads: a week of days
WINDOWS_REPORTED = 30


def _expected_wape(uri: str, versions: list[str]) -> dict[str, float]:
    """The backtest WAPE the evaluation report gave each model version (its `backtest_wape`
    tag): the error it was expected to make."""
    client = registry_client(uri)
    out = {}
    for version in versions:
        tags = client.get_model_version(REGISTERED_MODEL, version).tags
        if "backtest_wape" in tags:
            out[version] = float(tags["backtest_wape"])
    return out


def _categories(delta: DeltaStore) -> pl.DataFrame | None:
    if not delta.exists("bronze/items"):
        return None
    items = delta.read("bronze/items")
    names = [c for c, t in items.schema.items() if t == pl.Utf8 and c != "item_id"]
    name = "category" if "category" in names else (names[0] if names else None)
    return None if name is None else items.select("item_id", name)


def _forecasts(delta: DeltaStore) -> tuple[pl.DataFrame, int]:
    frames, what_if = [], 0
    if delta.exists("gold/batch_forecasts"):
        frames.append(batch_forecasts_frame(delta.read("gold/batch_forecasts")))
    if delta.exists("monitoring/prediction_log"):
        logged, what_if = logged_forecasts_frame(delta.read("monitoring/prediction_log"))
        frames.append(logged)
    if not frames:
        raise dg.Failure("No forecasts yet: materialize `batch_forecasts` (or serve and ingest "
                         "the `prediction_log`)")
    return pl.concat(frames, how="vertical_relaxed"), what_if


@dg.asset(group_name="monitoring", deps=["batch_forecasts", "prediction_log", "sales"],
          kinds={"delta", "polars"},
          output_required=False,  # no actual landed yet: nothing measured, not materialized
          description="Realized accuracy on delayed labels: batch forecasts and logged online "
                      "forecasts joined to the actual sales that landed for their days. WAPE and "
                      "bias by day, horizon, store, category, source and model version, and the "
                      "ratio of the last week's WAPE to the backtest WAPE the evaluation report "
                      "expected. Missing, late and pending actuals are counted, never dropped. "
                      f"Each evaluation is kept in `{ACCURACY_TABLE}`.")
def forecast_accuracy(context, platform: PlatformSettings,  # noqa: ANN001
                      delta: DeltaStore) -> Iterator[dg.MaterializeResult]:
    # `context` unannotated: this module's annotations are strings, which Dagster rejects there
    settings = platform.get()
    forecasts, what_if = _forecasts(delta)
    joined = join_actuals(forecasts, actuals_frame(delta.read("bronze/sales")))
    counts = status_counts(joined)
    through: dt.date | None = joined.filter(pl.col("status") == "matched").get_column(
        "date").max()
    if through is None:  # every forecast is still ahead of the landed days
        context.log.warning(f"forecast_accuracy computed nothing: no forecast has its actual "
                            f"yet ({counts}); not materialized")
        return
    tables = accuracy_tables(joined, settings.dataset.period_days, _categories(delta))
    days = WINDOW_PERIODS * settings.dataset.period_days
    realized, bias, n = window_error(joined, through, days)
    recent = joined.filter((pl.col("status") == "matched")
                           & (pl.col("date") > through - dt.timedelta(days=days)))
    versions = sorted(recent.get_column("model_version").unique().to_list())
    expected = _expected_wape(settings.mlflow_tracking_uri, versions)
    weights = dict(recent.group_by("model_version").len().iter_rows())
    total = sum(weights[v] for v in expected)
    expected_wape = (sum(expected[v] * weights[v] for v in expected) / total if total
                     else math.nan)
    ratio = realized / expected_wape if expected_wape and not math.isnan(realized) else math.nan
    # the same ratio for each recent day's trailing window: what the retrain sensor lines up
    # with the drift windows (its hysteresis needs consecutive windows)
    windows = []
    for back in range(WINDOWS_REPORTED):
        end = through - dt.timedelta(days=back * settings.dataset.period_days)
        wape_end, bias_end, n_end = window_error(joined, end, days)
        if n_end and expected_wape and not math.isnan(wape_end):
            windows.append({"end": end.isoformat(), "wape": round(wape_end, 4),
                            "wape_ratio": round(wape_end / expected_wape, 4),
                            "bias": round(bias_end, 4)})

    evaluated_at = dt.datetime.now(dt.UTC)
    long = long_table(tables)
    long = long.with_columns(evaluated_through=pl.lit(through, pl.Date),
                             evaluated_at=pl.lit(evaluated_at))
    predicate = f"evaluated_through = '{through}'" if delta.exists(ACCURACY_TABLE) else None
    version = delta.overwrite(ACCURACY_TABLE, long, predicate=predicate)

    by_day = tables["day"].sort("date").tail(14)
    yield dg.MaterializeResult(metadata={
        "evaluated_through": str(through),
        "window_days": days,
        "windows": json.dumps(windows[::-1]),
        "realized_wape": _round(realized),
        "expected_wape": _round(expected_wape),
        "wape_ratio": _round(ratio),
        "realized_bias": _round(bias),
        "window_forecasts": n,
        "model_versions": ", ".join(versions) or "none",
        **{f"forecasts_{k}": v for k, v in counts.items()},
        "what_if_excluded": what_if,
        "delta_version": version,
        "by_day": markdown_table(_rows(by_day, "date"), ("day", "WAPE", "bias", "n")),
        "by_horizon": markdown_table(_rows(tables["horizon_bucket"], "horizon_bucket"),
                                     ("horizon", "WAPE", "bias", "n")),
        "by_store": markdown_table(_rows(tables["store"], "store_id"),
                                   ("store", "WAPE", "bias", "n")),
        **({"by_category": markdown_table(_rows(tables["category"], tables["category"]
                                                .columns[0]), ("category", "WAPE", "bias", "n"))}
           if "category" in tables else {}),
    })


def _round(x: float) -> float:
    return round(x, 4) if not math.isnan(x) else x


def _rows(table: pl.DataFrame, key: str) -> list[tuple]:
    return [(r[key], _round(r["wape"]), _round(r["bias"]), r["n"])
            for r in table.iter_rows(named=True)]
