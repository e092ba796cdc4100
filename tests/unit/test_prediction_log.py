"""The prediction log: the service's appender (files, rotation, flush on close) and the reader
the `prediction_log` asset uses (normalizing, malformed lines reported with file and line)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from types import SimpleNamespace

import polars as pl

from bentos.demand_forecaster.prediction_log import PredictionLog, enabled
from ml_assets.monitoring.prediction_log import (
    closed_files,
    open_files,
    publish_stale,
    read_log_file,
    read_log_files,
)

T0 = dt.datetime(2025, 3, 1, 9, 59, 30, tzinfo=dt.UTC)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def _pair(i: int, price: float | None = None) -> tuple[SimpleNamespace, SimpleNamespace]:
    request = SimpleNamespace(store_id="S1", item_id=f"I{i}", date=dt.date(2025, 3, 2),
                              price=price, on_promo=None if price is None else 1)
    forecast = SimpleNamespace(units=1.5 + i, model_version="7", model_tag="demand:abc",
                               features_version=3, features_origin=dt.date(2025, 2, 28),
                               horizon=2)
    return request, forecast


def _append(log: PredictionLog, n: int, endpoint: str = "forecast_batch") -> None:
    pairs = [_pair(i) for i in range(n)]
    log.append(endpoint, [r for r, _ in pairs], [f for _, f in pairs], latency_ms=1.25)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_close_writes_every_record_and_publishes_the_file(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "predictions", clock=Clock(T0))
    for _ in range(100):
        _append(log, 10)
    log.append("forecast", *zip(*[_pair(1, price=2.5)], strict=True), latency_ms=0.5)
    log.close()
    files = closed_files(tmp_path / "predictions")
    assert [f.name for f in files] == [f"predictions-20250301T09-{log.pid}-0001.jsonl"]
    assert not list((tmp_path / "predictions").glob("*.open"))
    records = _lines(files[0])
    assert len(records) == 1001 == log.written and log.dropped == 0
    assert len({r["prediction_id"] for r in records}) == 1001
    assert records[-1] | {"prediction_id": None} == {
        "prediction_id": None, "ts": T0.isoformat(), "endpoint": "forecast", "store_id": "S1",
        "item_id": "I1", "date": "2025-03-02", "price": 2.5, "on_promo": 1, "units": 2.5,
        "model_version": "7", "model_tag": "demand:abc", "features_version": 3,
        "features_origin": "2025-02-28", "horizon": 2, "latency_ms": 0.5}


def test_an_open_file_is_not_a_closed_file(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, clock=Clock(T0), idle_seconds=0.05)
    _append(log, 3)
    _wait(log, 3)
    assert closed_files(tmp_path) == [] and len(list(tmp_path.glob("*.jsonl.open"))) == 1
    log.close()
    assert len(closed_files(tmp_path)) == 1


def test_rotates_by_hour_and_by_size(tmp_path: Path) -> None:
    clock = Clock(T0)
    log = PredictionLog(tmp_path, clock=clock, max_bytes=4000)
    _append(log, 2)
    _wait(log, 2)  # the writer is asynchronous: let it write before the clock moves
    clock.now = T0 + dt.timedelta(minutes=1)  # 10:00: a new hour, a new file
    for _ in range(20):
        _append(log, 2)
    _wait(log, 42)
    log.close()
    names = [f.name for f in closed_files(tmp_path)]
    assert names[0] == f"predictions-20250301T09-{log.pid}-0001.jsonl"
    assert all(n.startswith("predictions-20250301T10-") for n in names[1:])
    assert len(names) >= 3  # 40 records of ~330 bytes do not fit in one 4000-byte file
    assert all(f.stat().st_size <= 4000 for f in closed_files(tmp_path))
    frame, bad = read_log_files(closed_files(tmp_path))
    assert frame.height == 42 and bad == []


def test_an_idle_writer_closes_the_hour(tmp_path: Path) -> None:
    clock = Clock(T0)
    log = PredictionLog(tmp_path, clock=clock, idle_seconds=0.05)
    _append(log, 1)
    _wait(log, 1)
    clock.now = T0 + dt.timedelta(hours=1)
    deadline = time.monotonic() + 5
    while not closed_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(closed_files(tmp_path)) == 1
    log.close()


def test_appends_after_close_are_counted_not_raised(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, clock=Clock(T0))
    log.close()
    _append(log, 4)
    assert log.dropped == 4 and closed_files(tmp_path) == []


def test_disabled_by_env() -> None:
    assert enabled({}) and enabled({"RETAIL_ML_PREDICTION_LOG": "on"})
    assert not enabled({"RETAIL_ML_PREDICTION_LOG": "off"})
    assert not enabled({"RETAIL_ML_PREDICTION_LOG": "0"})


def test_reader_normalizes_and_reports_malformed_lines(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, clock=Clock(T0))
    _append(log, 2)
    log.close()
    path = closed_files(tmp_path)[0]
    good = path.read_text().splitlines()
    wrong_type = json.loads(good[0]) | {"units": "many"}
    missing = {k: v for k, v in json.loads(good[0]).items() if k != "store_id"}
    bad_date = json.loads(good[0]) | {"date": "tomorrow"}
    path.write_text("\n".join([good[0], "{not json", json.dumps(wrong_type), "",
                               json.dumps(missing), "[1, 2]", json.dumps(bad_date), good[1]])
                    + '\n{"truncated": ')
    frame, bad = read_log_file(path)
    assert frame.height == 2
    assert [(m.file, m.line) for m in bad] == [(path.name, n) for n in (2, 3, 5, 6, 7, 9)]
    assert [m.reason.split(":")[0] for m in bad] == [
        "not JSON", "units", "store_id", "expected a JSON object, got list", "date", "not JSON"]
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    assert frame.schema["date"] == pl.Date and frame.schema["features_origin"] == pl.Date
    assert frame.get_column("ts").to_list() == [T0, T0]
    assert frame.get_column("log_date").to_list() == [T0.date()] * 2
    assert frame.get_column("source_file").to_list() == [path.name] * 2
    assert frame.get_column("price").to_list() == [None, None]


def test_no_files_is_an_empty_typed_frame(tmp_path: Path) -> None:
    frame, bad = read_log_files(closed_files(tmp_path / "missing"))
    assert frame.height == 0 and bad == []
    assert {"ts", "log_date", "source_file", "prediction_id"} <= set(frame.columns)


def _wait(log: PredictionLog, written: int) -> None:
    deadline = time.monotonic() + 5
    while log.written < written and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.written == written


def test_only_open_files_whose_hour_is_long_over_are_published(tmp_path: Path) -> None:
    for name in ("predictions-20250301T09-1-0001.jsonl.open",   # hour ended 10:00
                 "predictions-20250301T10-2-0001.jsonl.open",   # the current hour
                 "predictions-garbled.jsonl.open"):             # no hour: left alone
        (tmp_path / name).write_text("")
    assert publish_stale(tmp_path, dt.datetime(2025, 3, 1, 10, 10, tzinfo=dt.UTC)) == []
    published = publish_stale(tmp_path, dt.datetime(2025, 3, 1, 10, 16, tzinfo=dt.UTC))
    assert [p.name for p in published] == ["predictions-20250301T09-1-0001.jsonl"]
    assert [p.name for p in closed_files(tmp_path)] == ["predictions-20250301T09-1-0001.jsonl"]
    assert len(open_files(tmp_path)) == 2


def test_lines_escape_ids_and_write_numbers_as_json_does(tmp_path: Path) -> None:
    """Each line is formatted directly, not by json.dumps per record: ids with quotes,
    backslashes and non-ASCII text stay valid JSON, and numbers keep their types."""
    log = PredictionLog(tmp_path, clock=Clock(T0))
    request, forecast = _pair(0, price=2.25)
    request.store_id, request.item_id = 'S"1\\', "Müsli 500g"
    forecast.units, forecast.horizon = 3, 7  # an int where a float is declared
    log.append("forecast", [request], [forecast], latency_ms=0.123456)
    log.close()
    frame, bad = read_log_files(closed_files(tmp_path))
    assert bad == []
    row = frame.row(0, named=True)
    assert (row["store_id"], row["item_id"]) == ('S"1\\', "Müsli 500g")
    assert (row["price"], row["on_promo"], row["units"], row["horizon"]) == (2.25, 1, 3.0, 7)
    assert row["latency_ms"] == 0.123
