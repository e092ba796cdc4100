"""A feature window in bounded memory: a slice of the series at a time, one Delta commit.

Every feature is computed within its own series (panel.py: a series is a matrix column), so
building the window chunk of series by chunk of series gives exactly the rows of the whole-window
build. Memory is then about one chunk's bronze rows and features instead of the window's: at M5
scale (59M rows) the whole window would need ~26 GB (benchmarks/results/m5.md). Each chunk's
Parquet files are written as soon as it is built and the frame dropped; one commit at the end
adds them all and removes the window's old files, so a crash part-way leaves the previous
version (and unreferenced files only). The commit is `delta_files.commit_rows`, as the
whole-window writer's: when a concurrent commit replaced the files at the window's edge, the
edge is written again, not the chunks.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import polars as pl
from deltalake import Schema
from deltalake.transaction import AddAction

from ml_assets.features.transforms import SERIES, FeatureSpec, build_features
from resources.delta import DeltaStore
from resources.delta_files import Window, _write_files, commit_rows

BRONZE = "bronze/sales"
STATS_COLUMNS = ["date", *SERIES]


@dataclass(frozen=True)
class ChunkedWindow:
    version: int
    rows: int
    chunks: int
    nulls: dict[str, int]  # per output column, over the whole window
    # wall seconds per phase: scan (the window's bronze, chunk ids), read (dimensions, chunk
    # rows cut out), compute, write (the chunks' files), commit (plan, the files straddling the
    # window's edge rewritten, the commit)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # user + system, all threads


def chunk_of_rows(keys: pl.DataFrame, per_chunk: int) -> tuple[pl.Series, int]:
    """Chunk number per row (UInt32) for Categorical `SERIES` columns, and the chunk count: runs
    of `per_chunk` series in the order of their category codes. Any partition of the series is
    exact; this one needs neither a sort of the rows nor a string hash."""
    if per_chunk < 1:
        raise ValueError(f"series_per_chunk must be >= 1, got {per_chunk}")
    store, item = (pl.col(c).to_physical().cast(pl.UInt64) for c in SERIES)
    codes = keys.select(store * (1 << 32) + item).to_series()
    starts = codes.unique().sort().gather_every(per_chunk)
    chunk = (starts.search_sorted(codes, side="right") - 1).cast(pl.UInt32)
    return chunk, starts.len()


def _dims(delta: DeltaStore) -> dict[str, pl.DataFrame | None]:
    # As read_feature_inputs reads them: the whole dimension, whichever chunk is built.
    return {name: delta.read(f"bronze/{name}") if delta.exists(f"bronze/{name}") else None
            for name in ("stores", "items", "calendar")}


def _read_window(delta: DeltaStore, lookback_start: dt.date, end: dt.date) -> pl.DataFrame:
    """The window's bronze rows, keys as Categorical: ~30 bytes a row instead of ~60, so the
    whole window stays in memory (1.8 GB at M5 scale) while chunks are cut from it. Reading
    each chunk by a filtered scan instead costs a full scan per chunk: the files are in date
    order, so no row group can be skipped (benchmarks/results/m5.md)."""
    return (delta.scan(BRONZE).filter(pl.col("date") >= lookback_start, pl.col("date") < end)
            .drop("source_file", "row_number", strict=False)
            .with_columns(pl.col(SERIES).cast(pl.Categorical))
            .collect(engine="streaming"))


def build_features_chunked(delta: DeltaStore, spec: FeatureSpec, start: dt.date, end: dt.date,
                           history_start: dt.date, series_per_chunk: int,
                           table: str) -> ChunkedWindow | None:
    """Makes `table`'s rows with date in [start, end) the features of the bronze window, built
    `series_per_chunk` series at a time, in one commit. None when the window has no bronze row.
    Same inputs as read_feature_inputs gives the whole-window build: the lookback, the series'
    first sale when the lookback does not reach the history's start, every dimension row."""
    clock, cpu, seconds, cpu_seconds = time.perf_counter(), _cpu(), Counter[str](), Counter[str]()

    def lap(phase: str) -> None:
        nonlocal clock, cpu
        now, now_cpu = time.perf_counter(), _cpu()
        seconds[phase] += now - clock
        cpu_seconds[phase] += now_cpu - cpu
        clock, cpu = now, now_cpu

    lookback_start = start - dt.timedelta(days=spec.lookback_periods * spec.period_days)
    bronze = _read_window(delta, lookback_start, end)
    if bronze.height == 0:
        return None
    chunk, n_chunks = chunk_of_rows(bronze.select(SERIES), series_per_chunk)
    lap("scan")
    first_sale = None
    if lookback_start > history_start:
        first_sale = (delta.scan(BRONZE).group_by(SERIES)
                      .agg(pl.col("date").min().alias("first_sale_date")).collect())
    dims = _dims(delta)
    uri, options = delta.uri(table), delta.storage_options or None
    window = Window("date", start, end)
    if "://" not in uri:  # the table's folder, for its first files
        os.makedirs(uri, exist_ok=True)
    adds: list[AddAction] = []
    lap("read")

    rows, nulls, schema = 0, Counter[str](), None
    for i in range(n_chunks):
        # Filtering keeps the rows' date order, which the panel and the files' date
        # statistics want; the keys go back to strings, the table's type.
        sales = bronze.filter(chunk == i).with_columns(pl.col(SERIES).cast(pl.Utf8))
        lap("read")
        features = build_features(sales, spec, first_sale=first_sale, **dims).filter(
            window.contains())
        del sales
        lap("compute")
        adds += _write_files(uri, features, STATS_COLUMNS, options)
        rows += features.height
        nulls.update(features.null_count().row(0, named=True))
        schema = schema or features.clear().to_arrow().schema
        del features
        lap("write")
    assert schema is not None  # at least one chunk
    del bronze, chunk  # the edge's rewrite reads files of its own
    version = commit_rows(uri, window, adds, Schema.from_arrow(schema), STATS_COLUMNS, options)
    lap("commit")
    return ChunkedWindow(version, rows, n_chunks, dict(nulls), dict(seconds), dict(cpu_seconds))


def _cpu() -> float:
    times = os.times()
    return times.user + times.system
