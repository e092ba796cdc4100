"""`online_features` materialized by a real Dagster instance: its state answers every row of
`forecast_features` exactly, and overrides through the same transforms."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_assets.forecasting.assets import FORECAST_FEATURES_TABLE, forecast_features
from ml_assets.forecasting.online import load_state, request_features
from ml_assets.forecasting.online_assets import online_features
from tests.conftest import featured_world


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory):
    world = featured_world(tmp_path_factory.mktemp("online") / "home")
    result = dg.materialize([forecast_features, online_features], instance=world.instance,
                            resources=world.defs.resources)
    yield world, result
    world.instance.dispose()


def test_state_reproduces_the_forecast_features(published) -> None:
    w, result = published
    assert result.success
    snapshot = w.defs.resources["delta"].read(FORECAST_FEATURES_TABLE).sort(
        "store_id", "item_id", "date")
    state = load_state(w.settings.online_dir)
    assert state.origin == snapshot.get_column("origin").max()
    served = request_features(state, snapshot.select("store_id", "item_id", "date"))
    assert_frame_equal(served, snapshot, check_exact=True)

    metadata = result.asset_materializations_for_node("online_features")[0].metadata
    assert metadata["origin"].value == str(state.origin)
    assert metadata["series"].value == state.series_count == snapshot.select(
        "store_id", "item_id").n_unique()
    assert metadata["rows"].value == state.history.height
    assert Path(metadata["path"].value).parent == w.settings.online_dir
    assert state.versions["forecast_features"] == w.defs.resources["delta"].version(
        FORECAST_FEATURES_TABLE)
    promo = request_features(state, snapshot.head(1).select(
        "store_id", "item_id", "date", on_promo=pl.lit(1)))
    assert promo.item(0, "on_promo") == 1.0
