"""Window replacement by writing Parquet files ourselves and committing them with delta-rs.

delta-rs's own writer spent most of a feature run on a 2-core machine writing one small file per
date partition. Here the window's rows are written as a few large files, in parallel by polars,
and one Delta commit adds them and removes the files they replace. Files that straddle the
window's edge are rewritten without the window's rows. One commit means readers see the old
version or the new one, never a mix, and a crash before it leaves only unreferenced files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from dataclasses import dataclass

import polars as pl
import pyarrow.fs as pafs
from deltalake import DeltaTable, Schema
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

ROWS_PER_FILE = 2_000_000


@dataclass(frozen=True)
class Window:
    column: str
    start: dt.date
    end: dt.date  # exclusive

    def contains(self) -> pl.Expr:
        return pl.col(self.column).is_between(pl.lit(self.start), pl.lit(self.end), closed="left")


def _stats(df: pl.DataFrame, columns: list[str]) -> str:
    """Delta file statistics for the columns readers prune on."""
    row = df.select(*[pl.col(c).min().alias(f"min.{c}") for c in columns],
                    *[pl.col(c).max().alias(f"max.{c}") for c in columns],
                    *[pl.col(c).null_count().alias(f"nulls.{c}") for c in columns]).row(0)
    n = len(columns)
    as_json = lambda v: v.isoformat() if isinstance(v, dt.date) else v  # noqa: E731
    return json.dumps({
        "numRecords": df.height,
        "minValues": {c: as_json(v) for c, v in zip(columns, row[:n], strict=True)
                      if v is not None},
        "maxValues": {c: as_json(v) for c, v in zip(columns, row[n:2 * n], strict=True)
                      if v is not None},
        "nullCount": dict(zip(columns, row[2 * n:], strict=True)),
    })


def _write_files(uri: str, df: pl.DataFrame, stats_columns: list[str],
                 storage_options: dict[str, str] | None) -> list[AddAction]:
    actions = []
    now = int(time.time() * 1000)
    for offset in range(0, df.height, ROWS_PER_FILE):
        chunk = df.slice(offset, ROWS_PER_FILE)
        name = f"part-{uuid.uuid4()}.lz4.parquet"
        chunk.write_parquet(f"{uri}/{name}", compression="lz4", statistics=True,
                            storage_options=storage_options)
        size = _size(f"{uri}/{name}", storage_options)
        actions.append(AddAction(path=name, size=size, partition_values={},
                                 modification_time=now, data_change=True,
                                 stats=_stats(chunk, stats_columns)))
    return actions


def _size(path: str, storage_options: dict[str, str] | None) -> int:
    if "://" not in path:
        return os.path.getsize(path)
    fs, inner = pafs.FileSystem.from_uri(path)
    return fs.get_file_info(inner).size


def replace_window(uri: str, df: pl.DataFrame, window: Window, stats_columns: list[str],
                   storage_options: dict[str, str] | None = None) -> int:
    """Makes the table's rows inside `window` exactly `df`, in one commit. Returns the version."""
    outside = df.filter(~window.contains())
    if outside.height:
        raise ValueError(f"{outside.height} rows fall outside {window.column} in "
                         f"[{window.start}, {window.end}), e.g. {outside.row(0, named=True)}")
    table = _open(uri, storage_options)
    if table is None:
        if "://" not in uri:
            os.makedirs(uri, exist_ok=True)
        adds = _write_files(uri, df, stats_columns, storage_options)
        # The schema alone: converting the whole frame to Arrow for it cost seconds.
        schema = Schema.from_arrow(df.clear().to_arrow().schema)
        create_table_with_add_actions(uri, schema, adds, mode="error",
                                      storage_options=storage_options)
        return 0
    actions: list[AddAction | RemoveAction] = []
    files = pl.DataFrame(table.get_add_actions(flatten=True))
    lo, hi = pl.col(f"min.{window.column}"), pl.col(f"max.{window.column}")
    touched = files.filter(~((hi < window.start) | (lo >= window.end)))
    now = int(time.time() * 1000)
    for path, size, first, last in touched.select("path", "size_bytes", lo, hi).rows():
        if first < window.start or last >= window.end:  # straddles the edge: keep its outside
            kept = pl.read_parquet(f"{uri}/{path}", storage_options=storage_options)
            actions += _write_files(uri, kept.filter(~window.contains()), stats_columns,
                                    storage_options)
        actions.append(RemoveAction(path=path, data_change=True, deletion_timestamp=now,
                                    size=size, partition_values={}))
    if df.height:
        actions += _write_files(uri, df, stats_columns, storage_options)
    table.create_write_transaction(actions, mode="append", schema=table.schema())
    return table.version() + 1


def _open(uri: str, storage_options: dict[str, str] | None) -> DeltaTable | None:
    try:
        return DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:  # anything else (credentials, network) must surface
        return None
