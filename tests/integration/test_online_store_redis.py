"""The online feature state published to Redis (RETAIL_ML_ONLINE_STORE): the real server on
127.0.0.1:6379, the real `online_features` asset, and the forecaster's side of the store.
Skipped, and says so, when no Redis answers there."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pytest
from polars.testing import assert_frame_equal

from bentos.demand_forecaster.state import online_for, paths_for
from ml_assets.forecasting.assets import FORECAST_FEATURES_TABLE, forecast_features
from ml_assets.forecasting.online import request_features
from ml_assets.forecasting.online_assets import online_features
from ml_assets.forecasting.online_store import RedisStore, load_current
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


@pytest.fixture
def scratch() -> Iterator[RedisStore]:
    store = RedisStore(URL, prefix=f"test:{uuid.uuid4().hex[:8]}")
    yield store
    drop(store)


def _ttl(store: RedisStore, name: str) -> int:
    return store.client.ttl(f"{store.prefix}:state:{name}")


def test_republishing_keeps_two_states_and_lets_the_rest_expire(published,
                                                                 scratch: RedisStore) -> None:
    state = published[2].load(published[2].current())
    assert scratch.current() == ""
    names = [scratch.publish(state, grace_seconds=1) for _ in range(3)]
    assert scratch.current() == names[-1]
    assert [_ttl(scratch, n) for n in names[1:]] == [-1, -1]  # kept: no expiry
    assert 0 < _ttl(scratch, names[0]) <= 1  # replaced twice: loadable for the grace period
    assert scratch.load(names[0]).origin == state.origin
    again = scratch.load(names[-1])
    assert (again.origin, again.spec, again.versions) == (state.origin, state.spec,
                                                          state.versions)
    assert_frame_equal(again.history, state.history)
    for key, frame in state.dims.items():
        assert (again.dims[key] is None) == (frame is None)
        if frame is not None:
            assert_frame_equal(again.dims[key], frame)
    time.sleep(2.1)
    with pytest.raises(FileNotFoundError, match=names[0]):
        scratch.load(names[0])
    # a reader holding the expired name gets the current state instead of an error
    assert load_current(scratch, names[0]).origin == state.origin


def test_concurrent_publishers_leave_exactly_the_kept_states_without_expiry(
        published, scratch: RedisStore) -> None:
    """Each publish is one script: however two runs interleave, the list holds the newest two,
    CURRENT is one of them, and every other state is set to expire (none is leaked)."""
    state = published[2].load(published[2].current())
    assert scratch.current() == ""  # connects here, before the threads share the client
    with ThreadPoolExecutor(4) as pool:
        names = list(pool.map(lambda _: scratch.publish(state), range(12)))
    listed = [n.decode() for n in scratch.client.lrange(f"{scratch.prefix}:states", 0, -1)]
    assert len(listed) == 2 and scratch.current() == listed[0]
    assert {n: _ttl(scratch, n) == -1 for n in names} == {n: n in listed for n in names}
