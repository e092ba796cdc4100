"""The prediction log: every forecast served, appended as a JSON line without blocking requests.

The request path only puts one tuple on a `queue.SimpleQueue` (the request and response objects
as they are); one daemon thread builds the records and writes them. That thread wakes on a
timer and drains what is queued, rather than being woken by every request to trade the GIL
with the event loop. A record is one formatted line: its strings encoded once per distinct
value (a call repeats its versions, and the stores and items repeat), its id the call's uuid4
and its index in the call. A dict, `json.dumps` and a uuid4 per record cost the worker a third
of its CPU on large batches; a polars frame per drain was as fast on batches but slowed single
forecasts, most likely by waking polars' threads on the serving core (benchmarks/README.md).

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
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

ENABLED_ENV = "RETAIL_ML_PREDICTION_LOG"
OPEN_SUFFIX = ".open"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

logger = logging.getLogger(__name__)


def enabled(environ: dict[str, str] | None = None) -> bool:
    """On unless RETAIL_ML_PREDICTION_LOG is off, false, no or 0."""
    value = (os.environ if environ is None else environ).get(ENABLED_ENV, "on")
    return value.strip().lower() not in {"off", "false", "no", "0"}


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _optional(value: float | int | None) -> str:
    """A request's override: null, an int (on_promo) or a float (price), as JSON writes them."""
    if value is None:
        return "null"
    return str(int(value)) if isinstance(value, int) else repr(float(value))


def records(endpoint: str, at: dt.datetime, latency_ms: float, requests: Sequence[Any],
            forecasts: Sequence[Any], text: dict[Any, str] | None = None) -> str:
    """One JSON line per forecast: an id, when, where, the request, the answer and its versions,
    in the order ml_assets/monitoring/prediction_log.py reads them. `text` memoizes the JSON of
    strings and dates across the calls of a drain."""
    memo = {} if text is None else text

    def enc(value: Any) -> str:
        out = memo.get(value)
        if out is None:
            plain = value.isoformat() if isinstance(value, dt.date) else value
            out = memo[value] = json.dumps(plain)
        return out

    call = uuid.uuid4().hex
    common = f'"ts":{json.dumps(at.isoformat())},"endpoint":{enc(endpoint)},'
    tail = f',"latency_ms":{json.dumps(round(latency_ms, 3))}}}\n'
    return "".join(
        f'{{"prediction_id":"{call}-{i}",{common}'
        f'"store_id":{enc(r.store_id)},"item_id":{enc(r.item_id)},"date":{enc(r.date)},'
        f'"price":{_optional(r.price)},"on_promo":{_optional(r.on_promo)},'
        f'"units":{float(f.units)!r},"model_version":{enc(f.model_version)},'
        f'"model_tag":{enc(f.model_tag)},"features_version":{int(f.features_version)},'
        f'"features_origin":{enc(f.features_origin)},"horizon":{int(f.horizon)}{tail}'
        for i, (r, f) in enumerate(zip(requests, forecasts, strict=True)))


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
        """Writes the calls drained from the queue (a file may rotate between two calls, so a
        file exceeds max_bytes only when one call alone does), then flushes once."""
        memo: dict[Any, str] = {}
        for endpoint, at, latency_ms, requests, forecasts in batch:
            try:
                text = records(endpoint, at, latency_ms, requests, forecasts, memo)
                if not text:
                    continue
                self._rotate_if_due(len(text))
                assert self._file is not None
                self._file.write(text)
                self.written += len(forecasts)
            except Exception:  # the writer thread must survive anything a record or disk does
                self.dropped += len(forecasts)
                logger.exception("prediction log: %d records could not be written to %s "
                                 "(%d dropped so far)", len(forecasts), self.directory,
                                 self.dropped)
        try:
            if self._file is not None:
                self._file.flush()
        except OSError:
            logger.exception("prediction log: could not flush %s", self._path)

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
