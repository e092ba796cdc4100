"""Reading the serving prediction log: closed JSON-lines files in, one typed frame out.

Only closed files (`*.jsonl`) are read: the service writes `*.jsonl.open` and renames it when it
rotates or shuts down, so a closed file never changes and its name identifies its rows. A writer
that crashed leaves its `.open` file behind: once the file's hour ended more than `grace` ago
(a live writer publishes within seconds of the hour's end), `publish_stale` closes it for it; a
torn last line is then reported as malformed. A line
that is not a JSON object with the fields below, of the right types, is never dropped silently:
it is returned as a `Malformed` (file, line number, reason) for the asset to report.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

FILE_GLOB = "predictions-*.jsonl"
OPEN_GLOB = "predictions-*.jsonl.open"
STALE_GRACE = dt.timedelta(minutes=15)
# the record the service writes (bentos/demand_forecaster/prediction_log.py), as logged in JSON
RECORD_SCHEMA: dict[str, pl.DataType] = {
    "prediction_id": pl.Utf8(), "ts": pl.Utf8(), "endpoint": pl.Utf8(),
    "store_id": pl.Utf8(), "item_id": pl.Utf8(), "date": pl.Utf8(),
    "price": pl.Float64(), "on_promo": pl.Int64(), "units": pl.Float64(),
    "model_version": pl.Utf8(), "model_tag": pl.Utf8(), "features_version": pl.Int64(),
    "features_origin": pl.Utf8(), "horizon": pl.Int64(), "latency_ms": pl.Float64(),
}
OPTIONAL = {"price", "on_promo"}  # null when the request did not override them
_TYPES: dict[type[pl.DataType], tuple[type, ...]] = {
    pl.Utf8: (str,), pl.Float64: (int, float), pl.Int64: (int,)}


@dataclass(frozen=True)
class Malformed:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


def closed_files(directory: Path) -> list[Path]:
    """The closed log files, oldest name first (names start with the UTC hour)."""
    return sorted(directory.glob(FILE_GLOB)) if directory.is_dir() else []


def _hour_end(path: Path) -> dt.datetime | None:
    """The end of the UTC hour in a log file's name (predictions-<yyyymmddTHH>-...)."""
    try:
        start = dt.datetime.strptime(path.name.split("-")[1], "%Y%m%dT%H")
    except (IndexError, ValueError):
        return None
    return start.replace(tzinfo=dt.UTC) + dt.timedelta(hours=1)


def open_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(OPEN_GLOB)) if directory.is_dir() else []


def publish_stale(directory: Path, now: dt.datetime,
                  grace: dt.timedelta = STALE_GRACE) -> list[Path]:
    """Renames the `.open` files no live writer can hold any more (their hour ended more than
    `grace` before `now`) to closed files; returns the files published."""
    published = []
    for path in open_files(directory):
        end = _hour_end(path)
        target = path.with_name(path.name.removesuffix(".open"))
        if end is not None and now - end > grace and not target.exists():
            path.replace(target)
            published.append(target)
    return published


def _problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    for name, dtype in RECORD_SCHEMA.items():
        value = record.get(name)
        if value is None:
            if name not in OPTIONAL:
                return f"{name}: missing"
            continue
        types = _TYPES[type(dtype)]
        if isinstance(value, bool) or not isinstance(value, types):
            return f"{name}: expected {dtype}, got {type(value).__name__} {value!r}"
    for name in ("ts", "date", "features_origin"):
        try:
            (dt.datetime if name == "ts" else dt.date).fromisoformat(record[name])
        except ValueError:
            return f"{name}: not an ISO {'timestamp' if name == 'ts' else 'date'}: " \
                   f"{record[name]!r}"
    return None


def read_log_file(path: Path) -> tuple[pl.DataFrame, list[Malformed]]:
    """The valid records of one file, normalized, and the lines that were not."""
    rows: list[dict[str, Any]] = []
    bad: list[Malformed] = []
    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                bad.append(Malformed(path.name, number, f"not JSON: {error.msg}"))
                continue
            problem = _problem(record)
            if problem:
                bad.append(Malformed(path.name, number, problem))
            else:
                rows.append({name: record.get(name) for name in RECORD_SCHEMA})
    return normalize(pl.DataFrame(rows, schema=RECORD_SCHEMA), path.name), bad


def normalize(raw: pl.DataFrame, source_file: str) -> pl.DataFrame:
    """Typed columns (UTC timestamp, dates), the serving day to partition by, the source file."""
    ts = pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC")
    return raw.with_columns(
        ts=ts, date=pl.col("date").str.to_date(),
        features_origin=pl.col("features_origin").str.to_date(),
        on_promo=pl.col("on_promo").cast(pl.Int8),
    ).with_columns(
        log_date=pl.col("ts").dt.date(), source_file=pl.lit(source_file, dtype=pl.Utf8))


def read_log_files(paths: list[Path]) -> tuple[pl.DataFrame, list[Malformed]]:
    """All the files' records in one frame (empty, typed, when there are none)."""
    frames, bad = [], []
    for path in paths:
        frame, malformed = read_log_file(path)
        frames.append(frame)
        bad += malformed
    if not frames:
        return normalize(pl.DataFrame(schema=RECORD_SCHEMA), ""), bad
    return pl.concat(frames), bad
