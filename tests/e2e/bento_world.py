"""A small world with a real Bento to serve, shared by the e2e tests of the service.

The real ingest + features job runs on a small world, the forecast feature snapshot the
service reads is written (twice, so responses must carry version 1), a quick booster is fitted,
and two Bentos (an older model, version 7, and a newer one, version 8) are built into one
BentoML home. Version 7 carries an interval calibration (fitted by `calibrate` on its
validation rows' residuals), version 8 none, as a version registered before intervals were
calibrated. `bento_server` starts `bentoml serve` on one of them.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import xgboost as xgb

from ml_assets.deployment.bento import save_and_build
from ml_assets.evaluation.intervals import calibrate
from ml_assets.features.assets import FEATURES_TABLE, feature_spec
from ml_assets.forecasting.horizon import horizon_features
from ml_assets.training.dataset import (
    TARGET,
    Columns,
    category_levels,
    model_columns,
    split_by_time,
    to_matrix,
)
from ml_assets.training.model import fit, predict
from tests.conftest import featured_world
from tests.e2e.servers import free_port, stop


@dataclass
class BentoWorld:
    home: Path
    env: dict[str, str]  # for `bentoml serve`: the world's RETAIL_ML_HOME and BENTOML_HOME
    booster: xgb.Booster
    columns: Columns
    levels: dict[str, list[str]]
    meta: dict[str, Any]
    snapshot: pl.DataFrame
    origin: Any
    spec: Any
    built: dict[str, str]  # model_tag, bento_tag of version 7
    newer: dict[str, str]  # of version 8 (the booster's first 3 trees)
    features_version: int
    labels: dict[str, str]
    intervals: dict[str, Any]  # version 7's calibration (`Calibration.to_json()`)


def build_bento_world(home: Path) -> BentoWorld:
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
    for _ in range(2):  # version 1: responses must carry the version, not assume 0
        delta.overwrite("gold/forecast_features", snapshot)

    frame = split_by_time(delta.read(FEATURES_TABLE), spec.horizon, spec.period_days)
    columns, levels = category_levels(frame, model_columns(frame.drop("split")))
    train, valid = (frame.filter(pl.col("split") == s) for s in ("train", "valid"))
    booster = fit(to_matrix(train, columns, levels), train.get_column(TARGET).to_numpy(),
                  to_matrix(valid, columns, levels), valid.get_column(TARGET).to_numpy(),
                  max_rounds=30).booster
    meta = {"numeric": columns.numeric, "categorical": columns.categorical,
            "category_levels": levels}
    intervals = _calibration(booster, valid, columns, levels)
    labels = {"mlflow_version": "7", "mlflow_run_id": "test-run",
              "delta_features": str(delta.version(FEATURES_TABLE)),
              "delta_training_set": "0", "delta_bronze_sales": str(delta.version("bronze/sales")),
              "metric_backtest_wape": "0.42", "metric_seasonal_naive_wape": "0.61"}
    bentoml_home = home / "bentoml"
    built = save_and_build(booster, meta, labels, bentoml_home, intervals=intervals)
    newer = save_and_build(booster[:3], meta, {**labels, "mlflow_version": "8"}, bentoml_home)

    env = {**os.environ, **world.env, "BENTOML_HOME": str(bentoml_home),
           "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("RETAIL_ML_API_TOKEN", None)
    return BentoWorld(home, env, booster, columns, levels, meta, snapshot, origin, spec, built,
                      newer, delta.version("gold/forecast_features"), labels, intervals)


def _calibration(booster: xgb.Booster, valid: pl.DataFrame, columns: Columns,
                 levels: dict[str, list[str]]) -> dict[str, Any]:
    """Intervals from the validation window's residuals, as if it were one backtest origin."""
    origin = valid.get_column("date").min() - dt.timedelta(days=1)
    rows = valid.with_columns(
        origin=pl.lit(origin), horizon=(pl.col("date") - pl.lit(origin)).dt.total_days(),
        forced_zero=pl.lit(False),
        challenger=pl.Series(predict(booster, to_matrix(valid, columns, levels))))
    return calibrate(rows, "challenger", 0.8, 1).to_json()


@contextmanager
def bento_server(bento_tag: str, env: dict[str, str], cwd: Path,
                 log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """Starts `bentoml serve` (not waiting for it) and yields its URL and process; stops it on
    exit."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", "127.0.0.1",
         "--port", str(port)], cwd=cwd, env=env, stdout=open(log, "w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop(proc, timeout=30)

