"""A real Bento built by `save_and_build`, served by `bentoml serve`, called over HTTP.

The fixture runs the real ingest + features job on a small world, writes the forecast feature
snapshot the service reads, fits a quick booster and builds two Bentos (an older and a newer
model) into one BentoML home, then serves the older one.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bentoml
import numpy as np
import polars as pl
import pytest
import requests

from ml_assets.deployment.bento import save_and_build
from ml_assets.features.assets import FEATURES_TABLE, feature_spec
from ml_assets.forecasting.horizon import horizon_features
from ml_assets.training.dataset import (
    TARGET,
    category_levels,
    model_columns,
    split_by_time,
    to_matrix,
)
from ml_assets.training.model import fit, predict
from tests.conftest import featured_world

pytestmark = pytest.mark.timeout(420)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"bentoml serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or busy starting its worker
            pass
        time.sleep(1)
    pytest.fail(f"bentoml serve not ready within {timeout} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("bento") / "home"
    world = featured_world(home)
    assert world.result.success
    world.instance.dispose()
    delta, settings = world.defs.resources["delta"], world.settings
    spec = feature_spec(settings.dataset)

    sales = delta.read("bronze/sales").drop("source_file", "row_number")
    origin = sales.get_column("date").max()
    dims = {name: delta.read(f"bronze/{name}") for name in ("stores", "items", "calendar")
            if delta.exists(f"bronze/{name}")}
    snapshot = horizon_features(sales, origin, spec, **dims)
    delta.overwrite("gold/forecast_features", snapshot)

    frame = split_by_time(delta.read(FEATURES_TABLE), spec.horizon, spec.period_days)
    columns, levels = category_levels(frame, model_columns(frame.drop("split")))
    train, valid = (frame.filter(pl.col("split") == s) for s in ("train", "valid"))
    booster = fit(to_matrix(train, columns, levels), train.get_column(TARGET).to_numpy(),
                  to_matrix(valid, columns, levels), valid.get_column(TARGET).to_numpy(),
                  max_rounds=30).booster
    meta = {"numeric": columns.numeric, "categorical": columns.categorical,
            "category_levels": levels}
    labels = {"mlflow_version": "7", "mlflow_run_id": "test-run",
              "delta_features": str(delta.version(FEATURES_TABLE)),
              "delta_training_set": "0", "delta_bronze_sales": str(delta.version("bronze/sales"))}
    bentoml_home = home / "bentoml"
    built = save_and_build(booster, meta, labels, bentoml_home)
    newer = save_and_build(booster[:3], meta, {**labels, "mlflow_version": "8"}, bentoml_home)

    port, log = _free_port(), home / "bentoml-serve.log"
    env = {**os.environ, **world.env, "BENTOML_HOME": str(bentoml_home),
           "BENTOML_DO_NOT_TRACK": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", built["bento_tag"], "--host", "127.0.0.1",
         "--port", str(port)], cwd=home, env=env, stdout=open(log, "w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc, log)
        with bentoml.SyncHTTPClient(url, timeout=60) as client:
            yield {"client": client, "url": url, "booster": booster, "columns": columns,
                   "levels": levels, "snapshot": snapshot, "origin": origin, "spec": spec,
                   "built": built, "newer": newer}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server runs its workers as child processes
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _expected(served: dict, rows: pl.DataFrame) -> np.ndarray:
    return predict(served["booster"], to_matrix(rows, served["columns"], served["levels"]))


def test_forecast_equals_batch_scoring_of_the_snapshot_row(served: dict) -> None:
    origin = served["origin"]
    row = served["snapshot"].filter(pl.col("horizon") == 3).head(1)
    store, item, date = row.select("store_id", "item_id", "date").row(0)
    answer = served["client"].forecast(store_id=store, item_id=item, date=date.isoformat())
    assert answer["units"] == pytest.approx(float(_expected(served, row)[0]), abs=1e-4)
    assert answer | {"units": None} == {
        "store_id": store, "item_id": item, "date": date.isoformat(), "units": None,
        "model_version": "7", "model_tag": served["built"]["model_tag"],
        "features_origin": origin.isoformat(), "horizon": 3}


def test_serves_the_model_it_was_built_with_not_the_newest(served: dict) -> None:
    # a rollback serves an older Bento while a newer model sits in the same store
    assert served["newer"]["model_tag"] != served["built"]["model_tag"]
    row = served["snapshot"].row(0, named=True)
    answer = served["client"].forecast(store_id=row["store_id"], item_id=row["item_id"],
                                       date=row["date"].isoformat())
    assert (answer["model_tag"], answer["model_version"]) == (served["built"]["model_tag"], "7")


def test_batch_forecast_equals_batch_scoring(served: dict) -> None:
    rows = served["snapshot"].filter(pl.col("item_id") == served["snapshot"]["item_id"][0])
    requests_ = [{"store_id": r["store_id"], "item_id": r["item_id"],
                  "date": r["date"].isoformat()} for r in rows.iter_rows(named=True)]
    answers = served["client"].forecast_batch(requests=requests_)
    assert [(a["store_id"], a["date"]) for a in answers] == [
        (r["store_id"], r["date"]) for r in requests_]
    np.testing.assert_allclose([a["units"] for a in answers], _expected(served, rows),
                               atol=1e-4)


def test_unknown_item_is_404(served: dict) -> None:
    store = served["snapshot"]["store_id"][0]
    date = served["origin"] + dt.timedelta(days=1)
    with pytest.raises(bentoml.exceptions.NotFound) as caught:
        served["client"].forecast(store_id=store, item_id="no-such-item", date=date.isoformat())
    assert caught.value.error_code == 404
    assert "no-such-item" in str(caught.value)


@pytest.mark.parametrize("days_ahead", [0, 29, -30])
def test_date_outside_the_horizon_is_400_naming_the_valid_range(served: dict,
                                                                days_ahead: int) -> None:
    row, origin = served["snapshot"].row(0, named=True), served["origin"]
    date = origin + dt.timedelta(days=days_ahead)
    with pytest.raises(bentoml.exceptions.BentoMLException) as caught:
        served["client"].forecast(store_id=row["store_id"], item_id=row["item_id"],
                                  date=date.isoformat())
    assert caught.value.error_code == 400
    first = origin + dt.timedelta(days=1)
    last = origin + dt.timedelta(days=served["spec"].horizon)
    assert f"{first} .. {last}" in str(caught.value)


@pytest.mark.parametrize("body", [b"{not json", b'{"store_id": "S1", "item_id": "I1"}',
                                  b'{"store_id": "S1", "item_id": "I1", "date": "tomorrow"}'])
def test_malformed_body_is_400_naming_the_field(served: dict, body: bytes) -> None:
    resp = requests.post(f"{served['url']}/forecast", data=body,
                         headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 400, resp.text
    if body.startswith(b'{"'):
        assert [e["loc"] for e in resp.json()["detail"]] == [["date"]]
