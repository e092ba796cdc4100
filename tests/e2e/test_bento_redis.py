"""A real `bentoml serve` whose online feature state is in Redis (RETAIL_ML_ONLINE_STORE): what-if
requests over HTTP are answered from the state published there, none is on its disk."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import pytest
import requests

from ml_assets.forecasting.assets import horizon_inputs
from ml_assets.forecasting.online import build_state, request_features
from ml_assets.forecasting.online_store import RedisStore
from ml_assets.training.dataset import to_matrix
from ml_assets.training.model import predict
from resources.delta import DeltaStore
from resources.settings import load_settings
from tests.e2e.bento_world import BentoWorld, bento_server
from tests.e2e.servers import wait_for_bento
from tests.redis_store import URL, drop, needs_redis

pytestmark = [needs_redis, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def served(bento_world: BentoWorld) -> Iterator[dict]:
    w = bento_world
    env = {**w.env, "RETAIL_ML_ONLINE_STORE": URL}
    settings = load_settings(env)
    assert not settings.online_dir.exists()  # the world's home has no state on disk
    origin, spec, inputs = horizon_inputs(settings, DeltaStore(root=str(settings.delta_root)))
    state = build_state(inputs.pop("sales"), origin, spec, **inputs)
    store = RedisStore(URL)  # where the server looks, given the variable
    drop(store)
    store.publish(state)
    log = w.home / "serve-redis.log"
    try:
        with bento_server(w.built["bento_tag"], env, w.home, log) as (url, proc):
            wait_for_bento(url, proc, log)
            yield {"url": url, "state": state, "world": w, "log": log}
    finally:
        drop(store)


def test_a_what_if_request_is_answered_from_the_state_in_redis(served: dict) -> None:
    w, state = served["world"], served["state"]
    row = w.snapshot.filter(pl.col("horizon") == 2).head(1)
    store_id, item_id, date = row.select("store_id", "item_id", "date").row(0)
    body = {"store_id": store_id, "item_id": item_id, "date": date.isoformat(), "price": 0.5,
            "on_promo": 1}
    resp = requests.post(f"{served['url']}/forecast", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    request = pl.DataFrame({"store_id": [store_id], "item_id": [item_id], "date": [date],
                            "price": [0.5], "on_promo": [1]})
    features = request_features(state, request)
    expected = predict(w.booster, to_matrix(features, w.columns, w.levels))
    assert resp.json()["units"] == pytest.approx(float(expected[0]), abs=1e-5)
    plain = predict(w.booster, to_matrix(row, w.columns, w.levels))
    assert not np.isclose(expected[0], plain[0])  # the override really changed the row
    assert "Traceback" not in served["log"].read_text()
