"""`prediction_log` materialized in a real Dagster instance, into a real Delta table: files
written by the service's appender are ingested once each, re-running changes nothing, a new file
adds its rows, and malformed lines are reported with file and line, not lost."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from bentos.demand_forecaster.prediction_log import PredictionLog
from ml_assets.monitoring.assets import PREDICTION_LOG_TABLE, prediction_log
from resources.delta import DeltaStore
from resources.platform import PlatformSettings
from resources.settings import load_settings
from tests.conftest import small_world_env

T0 = dt.datetime(2025, 3, 1, 9, 15, tzinfo=dt.UTC)


def _write_log(directory: Path, at: dt.datetime, calls: int, per_call: int) -> None:
    log = PredictionLog(directory, clock=lambda: at)
    for c in range(calls):
        requests = [SimpleNamespace(store_id=f"S{c}", item_id=f"I{i}", date=at.date(),
                                    price=None, on_promo=None) for i in range(per_call)]
        forecasts = [SimpleNamespace(units=float(i), model_version="3", model_tag="m:1",
                                     features_version=5, features_origin=at.date(), horizon=1)
                     for i in range(per_call)]
        log.append("forecast_batch", requests, forecasts, latency_ms=2.0)
    log.close()


@pytest.fixture
def setup(tmp_path: Path) -> SimpleNamespace:
    settings = load_settings(small_world_env(tmp_path / "home"))
    resources = {"delta": DeltaStore(root=str(settings.delta_root)),
                 "platform": PlatformSettings.from_settings(settings, "simulated")}
    return SimpleNamespace(settings=settings, resources=resources,
                           directory=settings.home / "predictions",
                           instance=dg.DagsterInstance.ephemeral())


def _materialize(s: SimpleNamespace) -> dict:
    result = dg.materialize([prediction_log], resources=s.resources, instance=s.instance)
    assert result.success
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_ingestion_is_idempotent_and_incremental(setup: SimpleNamespace) -> None:
    s = setup
    empty = _materialize(s)  # no log yet: an empty table the drift loop can read
    assert empty["dagster/row_count"] == 0 and empty["newest_ts"] == "none"

    _write_log(s.directory, T0, calls=3, per_call=4)
    first = _materialize(s)
    assert (first["dagster/row_count"], first["files"], first["files_ingested"]) == (12, 1, 1)
    assert first["newest_ts"].startswith("2025-03-01 09:15:00")
    table = s.resources["delta"].read(PREDICTION_LOG_TABLE)

    again = _materialize(s)
    assert (again["dagster/row_count"], again["files_ingested"]) == (12, 0)
    rerun = s.resources["delta"].read(PREDICTION_LOG_TABLE)
    assert rerun.sort("prediction_id").equals(table.sort("prediction_id"))

    later = T0 + dt.timedelta(hours=26)
    _write_log(s.directory, later, calls=2, per_call=5)
    # a file still being written (this hour) waits; nothing is read from it
    hour = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H")
    (s.directory / f"predictions-{hour}-1-0001.jsonl.open").write_text("{}\n")
    third = _materialize(s)
    assert (third["dagster/row_count"], third["files"], third["files_ingested"]) == (22, 2, 1)
    assert (third["open_files_skipped"], third["stale_open_files_published"]) == (1, 0)
    assert third["newest_ts"].startswith("2025-03-02 11:15:00")
    final = s.resources["delta"].read(PREDICTION_LOG_TABLE)
    assert final.get_column("prediction_id").n_unique() == 22
    assert sorted(final.get_column("log_date").unique().to_list()) == [
        T0.date(), later.date()]


def test_malformed_lines_are_reported_with_file_and_line(setup: SimpleNamespace) -> None:
    s = setup
    _write_log(s.directory, T0, calls=1, per_call=3)
    [path] = sorted(s.directory.glob("*.jsonl"))
    path.write_text(path.read_text() + '{"prediction_id": "x", "ts": \n')
    meta = _materialize(s)
    assert meta["dagster/row_count"] == 3 and meta["malformed_lines"] == 1
    assert f"| {path.name} | 4 | not JSON" in meta["malformed"]


def test_a_crashed_writers_file_is_published_and_its_torn_line_reported(
        setup: SimpleNamespace) -> None:
    s = setup
    _write_log(s.directory, T0, calls=1, per_call=2)
    [path] = sorted(s.directory.glob("*.jsonl"))
    orphan = path.with_name(path.name + ".open")  # as a killed process leaves it
    path.rename(orphan)
    orphan.write_text(orphan.read_text() + '{"prediction_id": "torn')
    meta = _materialize(s)
    assert (meta["dagster/row_count"], meta["stale_open_files_published"]) == (2, 1)
    assert meta["open_files_skipped"] == 0 and meta["malformed_lines"] == 1
    assert f"| {path.name} | 3 | not JSON" in meta["malformed"]
