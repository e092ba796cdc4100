"""Window replacement by writing Parquet files ourselves and committing them with delta-rs.

delta-rs's own writer spent most of a feature run on a 2-core machine writing one small file per
date partition. Here the window's rows are written as a few large files (in parallel, by polars
or by Spark), and one Delta commit adds them and removes the files they replace. Files that
straddle the window's edge are rewritten without the window's rows. One commit means readers see
the old version or the new one, never a mix, and a crash before it leaves only unreferenced
files. `replace_window` is the polars writer; the Spark writer (resources/spark.py) shares the
plan, the footer statistics and the commit.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import polars as pl
import pyarrow.fs as pafs
import pyarrow.parquet as pq
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


@dataclass(frozen=True)
class TableFile:
    path: str  # relative to the table root, as the Delta log has it
    size: int
    straddles: bool  # also holds rows outside the window: those must be written again


@dataclass(frozen=True)
class WindowPlan:
    """What replacing a window touches: the table as read (None: not created yet) and its files
    that hold rows of the window. The commit removes them all."""

    uri: str
    window: Window
    table: DeltaTable | None
    touched: list[TableFile]

    @property
    def straddling(self) -> list[str]:
        return [f"{self.uri}/{f.path}" for f in self.touched if f.straddles]


def _as_json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


def stats_json(rows: int, minimum: dict[str, Any], maximum: dict[str, Any],
               nulls: dict[str, int]) -> str:
    """Delta file statistics (what readers prune on); None bounds (all-null columns) left out."""
    return json.dumps({
        "numRecords": rows,
        "minValues": {c: _as_json(v) for c, v in minimum.items() if v is not None},
        "maxValues": {c: _as_json(v) for c, v in maximum.items() if v is not None},
        "nullCount": nulls,
    })


def _stats(df: pl.DataFrame, columns: list[str]) -> str:
    row = df.select(*[pl.col(c).min().alias(f"min.{c}") for c in columns],
                    *[pl.col(c).max().alias(f"max.{c}") for c in columns],
                    *[pl.col(c).null_count().alias(f"nulls.{c}") for c in columns]).row(0)
    n = len(columns)
    return stats_json(df.height, dict(zip(columns, row[:n], strict=True)),
                      dict(zip(columns, row[n:2 * n], strict=True)),
                      dict(zip(columns, row[2 * n:], strict=True)))


def _add(path: str, size: int, stats: str) -> AddAction:
    return AddAction(path=path, size=size, partition_values={},
                     modification_time=int(time.time() * 1000), data_change=True, stats=stats)


def _write_files(uri: str, df: pl.DataFrame, stats_columns: list[str],
                 storage_options: dict[str, str] | None) -> list[AddAction]:
    actions = []
    for offset in range(0, df.height, ROWS_PER_FILE):
        chunk = df.slice(offset, ROWS_PER_FILE)
        name = f"part-{uuid.uuid4()}.lz4.parquet"
        chunk.write_parquet(f"{uri}/{name}", compression="lz4", statistics=True,
                            storage_options=storage_options)
        actions.append(_add(name, _size(f"{uri}/{name}"), _stats(chunk, stats_columns)))
    return actions


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in path:
        return pafs.LocalFileSystem(), path
    return pafs.FileSystem.from_uri(path)


def _size(path: str) -> int:
    fs, inner = _filesystem(path)
    return fs.get_file_info(inner).size


def footer_adds(uri: str, folder: str, stats_columns: list[str]) -> list[tuple[AddAction, dict]]:
    """Add actions for the Parquet files another writer (Spark) left in `uri/folder`, with the
    statistics of `stats_columns` taken from the files' footers: no row is read. Each comes with
    every column's null count (for the asset's metadata)."""
    fs, inner = _filesystem(f"{uri}/{folder}")
    infos = fs.get_file_info(pafs.FileSelector(inner))
    out = []
    for info in sorted((i for i in infos if i.base_name.endswith(".parquet")),
                       key=lambda i: i.base_name):
        with fs.open_input_file(info.path) as handle:
            meta = pq.ParquetFile(handle).metadata
        lo: dict[str, Any] = {}
        hi: dict[str, Any] = {}
        nulls: dict[str, int] = {}
        names = [meta.schema.column(j).name for j in range(meta.num_columns)]
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for j, name in enumerate(names):
                st = group.column(j).statistics
                nulls[name] = nulls.get(name, 0) + (st.null_count if st is not None else 0)
                if name in stats_columns and st is not None and st.has_min_max:
                    lo[name] = st.min if name not in lo else min(lo[name], st.min)
                    hi[name] = st.max if name not in hi else max(hi[name], st.max)
        stats = stats_json(meta.num_rows, {c: lo.get(c) for c in stats_columns},
                           {c: hi.get(c) for c in stats_columns},
                           {c: nulls.get(c, 0) for c in stats_columns})
        out.append((_add(f"{folder}/{info.base_name}", info.size, stats), nulls))
    return out


def snapshot_files(table: DeltaTable, window: Window | None = None) -> list[str]:
    """The current snapshot's data files (delta-rs's `file_uris`), less those whose statistics
    put them wholly outside `window`."""
    uris = table.file_uris()
    if window is None:
        return uris
    files = pl.DataFrame(table.get_add_actions(flatten=True))
    lo, hi = f"min.{window.column}", f"max.{window.column}"
    if lo not in files.columns or hi not in files.columns:
        return uris
    outside = files.filter((pl.col(hi) < window.start) | (pl.col(lo) >= window.end))
    skip = {unquote(path) for path in outside.get_column("path").to_list()}
    depth = max((path.count("/") + 1 for path in skip), default=0)

    def skipped(uri: str) -> bool:  # a relative path is the URI's last few components
        parts = uri.split("/")
        return any("/".join(parts[-k:]) in skip for k in range(1, depth + 1))
    return [u for u in uris if not skipped(u)]


def plan_window(uri: str, window: Window,
                storage_options: dict[str, str] | None = None) -> WindowPlan:
    """The table's files with rows in `window`, from the Delta log's statistics."""
    table = _open(uri, storage_options)
    if table is None:
        return WindowPlan(uri, window, None, [])
    files = pl.DataFrame(table.get_add_actions(flatten=True))
    lo, hi = pl.col(f"min.{window.column}"), pl.col(f"max.{window.column}")
    touched = files.filter(~((hi < window.start) | (lo >= window.end)))
    return WindowPlan(uri, window, table, [
        TableFile(path, size, first < window.start or last >= window.end)
        for path, size, first, last in touched.select("path", "size_bytes", lo, hi).rows()])


def commit_window(plan: WindowPlan, adds: list[AddAction], schema: Schema,
                  storage_options: dict[str, str] | None = None) -> int:
    """One commit: the plan's files out, `adds` in (or the table created with them). A
    concurrent commit since the plan fails it rather than being overwritten. Returns the
    version."""
    if plan.table is None:
        create_table_with_add_actions(plan.uri, schema, adds, mode="error",
                                      storage_options=storage_options)
        return 0
    now = int(time.time() * 1000)
    actions: list[AddAction | RemoveAction] = [
        RemoveAction(path=f.path, data_change=True, deletion_timestamp=now, size=f.size,
                     partition_values={}) for f in plan.touched]
    plan.table.create_write_transaction([*actions, *adds], mode="append", schema=schema)
    return plan.table.version() + 1


def replace_window(uri: str, df: pl.DataFrame, window: Window, stats_columns: list[str],
                   storage_options: dict[str, str] | None = None) -> int:
    """Makes the table's rows inside `window` exactly `df`, in one commit. Returns the version."""
    outside = df.filter(~window.contains())
    if outside.height:
        raise ValueError(f"{outside.height} rows fall outside {window.column} in "
                         f"[{window.start}, {window.end}), e.g. {outside.row(0, named=True)}")
    plan = plan_window(uri, window, storage_options)
    if plan.table is None and "://" not in uri:
        os.makedirs(uri, exist_ok=True)
    adds: list[AddAction] = []
    for path in plan.straddling:  # keep its rows outside the window
        kept = pl.read_parquet(path, storage_options=storage_options)
        adds += _write_files(uri, kept.filter(~window.contains()), stats_columns,
                             storage_options)
    adds += _write_files(uri, df, stats_columns, storage_options)
    # The schema alone: converting the whole frame to Arrow for it cost seconds.
    schema = (Schema.from_arrow(df.clear().to_arrow().schema) if plan.table is None
              else plan.table.schema())
    return commit_window(plan, adds, schema, storage_options)


def _open(uri: str, storage_options: dict[str, str] | None) -> DeltaTable | None:
    try:
        return DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:  # anything else (credentials, network) must surface
        return None
