"""The prediction log: every forecast served, appended as a JSON line without blocking requests.

The request path only puts one tuple on a `queue.SimpleQueue` (the request and response objects
as they are); one daemon thread builds the records and writes them. That thread wakes on a
timer and drains what is queued, rather than being woken by every request to trade the GIL
with the event loop. A drain's records are built column by column, as one polars frame written
as JSON lines in one call (with the GIL released): a record at a time, with `json.dumps` and a
uuid4 each, cost the worker a third of its CPU on large batches (benchmarks/results/serving.md).

Files live under `<RETAIL_ML_HOME>/predictions/`, one per UTC hour and process, and a new one
when a file grows past `max_bytes`:

    predictions-<yyyymmddTHH>-<pid>-<seq>.jsonl.open   while written
    predictions-<yyyymmddTHH>-<pid>-<seq>.jsonl        once closed (renamed, atomically)

Readers (the `prediction_log` asset) ingest closed files only: a closed file never changes, so
ingesting it once per file name is idempotent. `close()` (atexit and the service's shutdown hook)
drains the queue, then closes and renames the current file, so no record is lost on a clean
shutdown. A write failure is logged and counted in `dropped`, never raised into a request.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import polars as pl

ENABLED_ENV = "RETAIL_ML_PREDICTION_LOG"
OPEN_SUFFIX = ".open"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# request fields and response fields copied into every record, with their types in the log
REQUEST_FIELDS = {"store_id": pl.Utf8, "item_id": pl.Utf8, "date": pl.Date, "price": pl.Float64,
                  "on_promo": pl.Int64}
RESPONSE_FIELDS = {"units": pl.Float64, "model_version": pl.Utf8, "model_tag": pl.Utf8,
                   "features_version": pl.Int64, "features_origin": pl.Date,
                   "horizon": pl.Int64}

logger = logging.getLogger(__name__)


def enabled(environ: dict[str, str] | None = None) -> bool:
    """On unless RETAIL_ML_PREDICTION_LOG is off, false, no or 0."""
    value = (os.environ if environ is None else environ).get(ENABLED_ENV, "on")
    return value.strip().lower() not in {"off", "false", "no", "0"}


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def records(calls: Sequence[tuple[str, dt.datetime, float, Sequence[Any], Sequence[Any]]]
            ) -> pl.DataFrame:
    """One record per forecast of the calls (endpoint, time, latency, requests, forecasts): an
    id (the call's uuid4 and the forecast's index in it), when, where, the request, the answer
    and its versions, in the order ml_assets/monitoring/prediction_log.py reads them."""
    per_call: dict[str, list[Any]] = {"prediction_id": [], "ts": [], "endpoint": [],
                                      "latency_ms": []}
    counts = []
    calls = [call for call in calls if len(call[4])]  # a call with no forecast has no record
    for endpoint, at, latency_ms, requests, forecasts in calls:
        if len(requests) != len(forecasts):
            raise ValueError(f"{len(requests)} requests against {len(forecasts)} forecasts")
        counts.append(len(forecasts))
        for name, value in (("prediction_id", uuid.uuid4().hex), ("ts", at.isoformat()),
                            ("endpoint", endpoint), ("latency_ms", round(latency_ms, 3))):
            per_call[name].append(value)
    repeat = pl.Series(counts, dtype=pl.UInt32)
    calls_frame = pl.DataFrame(per_call).select(pl.all().repeat_by(repeat).explode())
    index = pl.int_range(pl.len()).over("prediction_id").cast(pl.Utf8)
    columns = {name: pl.Series(name, [getattr(r, name) for _, _, _, rs, _ in calls for r in rs],
                               dtype=dtype, strict=False)
               for name, dtype in REQUEST_FIELDS.items()}
    columns |= {name: pl.Series(name, [getattr(f, name) for *_, fs in calls for f in fs],
                                dtype=dtype, strict=False)
                for name, dtype in RESPONSE_FIELDS.items()}
    return calls_frame.with_columns(prediction_id=pl.concat_str("prediction_id", pl.lit("-"),
                                                                index), **columns).select(
        "prediction_id", "ts", "endpoint", *REQUEST_FIELDS, *RESPONSE_FIELDS, "latency_ms")


class PredictionLog:
    """A non-blocking JSON-lines appender with hourly and size rotation (see the module doc)."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES,
                 clock: Callable[[], dt.datetime] = _utc_now, idle_seconds: float = 0.25) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.clock = clock
        self.idle_seconds = idle_seconds  # how often the writer drains the queue and rotates
        self.pid = os.getpid()
        self.written = 0
        self.dropped = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._file: IO[str] | None = None
        self._path: Path | None = None
        self._hour = ""
        self._seq = 0
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def append(self, endpoint: str, requests: Sequence[Any], forecasts: Sequence[Any],
               latency_ms: float) -> None:
        """Queues the forecasts of one call; the records are built and written off the request
        path. Never blocks."""
        if self._closed:
            self.dropped += len(forecasts)
            return
        self._queue.put((endpoint, self.clock(), latency_ms, requests, forecasts))

    def close(self, timeout: float = 10.0) -> None:
        """Writes everything queued, then closes and publishes (renames) the current file."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(timeout)
        atexit.unregister(self.close)

    @property
    def current_path(self) -> Path | None:
        return self._path

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self.idle_seconds)
            batch = []
            while True:  # drain what is queued: one flush for all of it
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            else:
                self._rotate_if_due(0)
            if stopping:
                self._publish()
                return

    def _write(self, batch: list[tuple[Any, ...]]) -> None:
        """Writes the calls drained from the queue, all at once; a call the records cannot be
        built from is written alone, so that only its own records are dropped. Flushes once."""
        try:
            self._write_records(records(batch))
        except Exception:  # the writer thread must survive anything a record or disk does
            for call in batch if len(batch) > 1 else ():
                try:
                    self._write_records(records([call]))
                except Exception:  # noqa: BLE001 - counted and logged below
                    self._drop(len(call[4]))
            if len(batch) == 1:
                self._drop(len(batch[0][4]))
        try:
            if self._file is not None:
                self._file.flush()
        except OSError:
            logger.exception("prediction log: could not flush %s", self._path)

    def _write_records(self, frame: pl.DataFrame) -> None:
        """JSON lines into the current file; a file rotates between lines rather than grow past
        max_bytes (unless one line alone is larger)."""
        if frame.height == 0:
            return
        text = frame.write_ndjson()
        size = len(text.encode())
        self._rotate_if_due(size)
        assert self._file is not None
        if self._file.tell() + size > self.max_bytes:
            for line in text.splitlines(keepends=True):
                self._rotate_if_due(len(line.encode()))
                self._file.write(line)
        else:
            self._file.write(text)
        self.written += frame.height

    def _drop(self, n: int) -> None:
        self.dropped += n
        logger.exception("prediction log: %d records could not be written to %s (%d dropped so "
                         "far)", n, self.directory, self.dropped)

    def _rotate_if_due(self, incoming: int) -> None:
        hour = self.clock().strftime("%Y%m%dT%H")
        if self._file is not None and (
                hour != self._hour or self._file.tell() + incoming > self.max_bytes):
            self._publish()
        if self._file is None and incoming:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._seq = self._seq + 1 if hour == self._hour else 1
            self._hour = hour
            name = f"predictions-{hour}-{self.pid}-{self._seq:04d}.jsonl"
            while any((self.directory / n).exists() for n in (name, name + OPEN_SUFFIX)):
                self._seq += 1  # never append to, or replace, another writer's file
                name = f"predictions-{hour}-{self.pid}-{self._seq:04d}.jsonl"
            self._path = self.directory / name
            self._file = open(self.directory / (name + OPEN_SUFFIX), "a", encoding="utf-8")  # noqa: SIM115

    def _publish(self) -> None:
        if self._file is None or self._path is None:
            return
        try:
            self._file.close()
            os.replace(self._path.with_name(self._path.name + OPEN_SUFFIX), self._path)
        except OSError:
            logger.exception("prediction log: could not close %s", self._path)
        finally:
            self._file = None


def timer() -> float:
    """Milliseconds on a monotonic clock, for latency_ms."""
    return time.perf_counter() * 1000.0
