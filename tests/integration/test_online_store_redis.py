"""The online feature state published to Redis (RETAIL_ML_ONLINE_STORE): the real server on
127.0.0.1:6379, the real `online_features` asset, and the forecaster's side of the store.
Skipped, and says so, when no Redis answers there."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest
from polars.testing import assert_frame_equal

from bentos.demand_forecaster.state import online_for, paths_for
from ml_assets.forecasting.assets import FORECAST_FEATURES_TABLE, forecast_features
from ml_assets.forecasting.online import request_features
from ml_assets.forecasting.online_assets import online_features
from ml_assets.forecasting.online_store import RedisStore
from tests.conftest import featured_world
from tests.redis_store import URL, drop, needs_redis

pytestmark = needs_redis


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory):
    store = RedisStore(URL)  # the prefix the asset and the forecaster use
    drop(store)
    world = featured_world(tmp_path_factory.mktemp("redis") / "home",
                           RETAIL_ML_ONLINE_STORE=URL)
    result = dg.materialize([forecast_features, online_features], instance=world.instance,
                            resources=world.defs.resources)
    yield world, result, store
    world.instance.dispose()
    drop(store)


def test_the_asset_publishes_to_redis_and_the_forecaster_reads_it_back(published) -> None:
    world, result, store = published
    assert result.success
    assert not (world.settings.online_dir).exists()  # nothing on the local disk
    name = store.current()
    metadata = result.asset_materializations_for_node("online_features")[0].metadata
    assert metadata["path"].value.endswith(name)
    paths = paths_for(world.settings)  # the forecaster's view of the same settings
    assert isinstance(paths.online, RedisStore) and paths.online.current() == name
    snapshot = world.defs.resources["delta"].read(FORECAST_FEATURES_TABLE).sort(
        "store_id", "item_id", "date")
    state, reason = online_for(paths.online, name, snapshot.get_column("origin").max())
    assert state is not None, reason
    served = request_features(state, snapshot.select("store_id", "item_id", "date"))
    assert_frame_equal(served, snapshot, check_exact=True)


def test_republishing_moves_current_at_once_and_keeps_two_states(published) -> None:
    world, _, shared = published
    state = shared.load(shared.current())
    store = RedisStore(URL, prefix=f"test:{uuid.uuid4().hex[:8]}")
    try:
        assert store.current() == ""
        names = [store.publish(state) for _ in range(3)]
        assert store.current() == names[-1]
        kept = {k.decode() for k in store.client.scan_iter(f"{store.prefix}:state:*")}
        assert kept == {f"{store.prefix}:state:{n}" for n in names[1:]}
        again = store.load(names[-1])
        assert (again.origin, again.spec, again.versions) == (state.origin, state.spec,
                                                              state.versions)
        assert_frame_equal(again.history, state.history)
        for key, frame in state.dims.items():
            assert (again.dims[key] is None) == (frame is None)
            if frame is not None:
                assert_frame_equal(again.dims[key], frame)
        with pytest.raises(FileNotFoundError, match=names[0]):
            store.load(names[0])
    finally:
        drop(store)

