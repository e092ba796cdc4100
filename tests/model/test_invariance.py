"""Invariance: a store or an item is known to the model by its attributes and its history,
never by its id. Renaming every store and item must leave each series' forecast unchanged.

The rename reverses the ids' sort order (S001 -> store-10, I0001 -> sku-040, ...), so it also
reorders rows wherever data is sorted by id. Ingestion writes bronze sales sorted by
(date, store_id, item_id) (ml_assets/ingest/pipeline.py), and the feature and training tables
keep the order they are built in: renamed data reaches `fit` in a different row order.
"""

from __future__ import annotations

import polars as pl
import pytest

from ml_assets.features.transforms import SERIES
from ml_assets.training.dataset import KEYS, model_columns
from tests.model.conftest import Data, Trained, train


def _relabel(ids: pl.Series, prefix: str) -> dict[str, str]:
    ordered = ids.sort().to_list()
    width = len(str(len(ordered)))
    return {old: f"{prefix}-{len(ordered) - k:0{width + 1}d}" for k, old in enumerate(ordered)}


def rename(data: Data) -> tuple[Data, pl.DataFrame]:
    """The data with every id replaced (row order kept), and the old -> new series map."""
    stores = _relabel(data.stores["store_id"], "store")
    items = _relabel(data.items["item_id"], "sku")

    def apply(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(pl.col(c).replace_strict(m) for c, m in
                                  (("store_id", stores), ("item_id", items)) if c in frame.columns)

    renamed = Data(sales=apply(data.sales), stores=apply(data.stores), items=apply(data.items),
                   calendar=data.calendar)
    series = data.sales.select(SERIES).unique()
    return renamed, series.with_columns(apply(series).rename(lambda c: f"new_{c}"))


def renamed_original_forecast(trained: Trained, series_map: pl.DataFrame) -> pl.DataFrame:
    return (trained.horizon_forecast().join(series_map, on=SERIES, how="left")
            .select("date", pl.col("new_store_id").alias("store_id"),
                    pl.col("new_item_id").alias("item_id"), "forecast"))


def assert_same_forecasts(expected: pl.DataFrame, actual: pl.DataFrame) -> None:
    joined = expected.join(actual, on=KEYS, how="full", coalesce=True, suffix="_renamed")
    assert expected.height == actual.height == joined.height > 0
    assert joined.null_count().row(0) == (0,) * joined.width, "not the same series and dates"
    diff = (joined["forecast_renamed"] - joined["forecast"]).abs()
    relative = diff / joined["forecast"].clip(lower_bound=1.0)
    differ = int((diff > 1e-6).sum())
    assert differ == 0, (
        f"renaming ids changed {differ} of {joined.height} forecasts: by up to "
        f"{diff.max():.2f} units, median {relative.median():.1%} of the forecast, 95th "
        f"percentile {relative.quantile(0.95):.1%}; total "
        f"x{joined['forecast_renamed'].sum() / joined['forecast'].sum():.4f}")


@pytest.fixture(scope="module")
def renamed(data: Data) -> tuple[Data, pl.DataFrame]:
    return rename(data)


def test_ids_are_not_model_features(trained: Trained) -> None:
    """Keys and target are not features: the booster reads attributes and history only."""
    assert not {"store_id", "item_id", "date", "units_sold"} & set(model_columns(
        trained.horizon).all)
    assert not {"store_id", "item_id"} & set(trained.columns.all)
    assert trained.result.booster.feature_names == trained.columns.all


def test_renaming_ids_in_the_same_row_order_keeps_every_forecast(
        trained: Trained, renamed: tuple[Data, pl.DataFrame]) -> None:
    """Same rows in the same order, new names (whose order is the reverse of the old ones):
    features, fit and forecasts see no id, so each series' forecast is unchanged."""
    data, series_map = renamed
    assert not data.sales.equals(data.sales.sort(KEYS))  # the names do change the sort order
    retrained = train(data)
    assert_same_forecasts(renamed_original_forecast(trained, series_map),
                          retrained.horizon_forecast())


def test_renaming_ids_in_the_pipeline_row_order_keeps_every_forecast(
        trained: Trained, renamed: tuple[Data, pl.DataFrame]) -> None:
    """The rename as the platform would see it: bronze sales sorted by (date, store_id,
    item_id), as ingestion writes them, the original data being already in that order. The
    model must not depend on where a series' rows sit in the training table."""
    data, series_map = renamed
    assert trained.data.sales.equals(trained.data.sales.sort(KEYS))
    in_bronze_order = Data(sales=data.sales.sort(KEYS), stores=data.stores, items=data.items,
                           calendar=data.calendar)
    retrained = train(in_bronze_order)
    assert_same_forecasts(renamed_original_forecast(trained, series_map),
                          retrained.horizon_forecast())
