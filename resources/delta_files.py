"""Window replacement by writing Parquet files ourselves and committing them with delta-rs.

delta-rs's own writer spent most of a feature run on a 2-core machine writing one small file per
date partition. Here the window's rows are written as a few large files (in parallel, by polars
or by Spark), and one Delta commit adds them and removes the files they replace. Files that
straddle the window's edge are rewritten without the window's rows. One commit means readers see
the old version or the new one, never a mix, and a crash before it leaves only unreferenced
files. `replace_window` is the polars writer; the Spark writer (resources/spark.py) shares the
plan, the footer statistics and the commit (see `commit_window` for concurrent writers), and
`remove_orphans` deletes the files of writes that never committed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
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
from deltalake.exceptions import DeltaError, TableNotFoundError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    RemoveAction,
    create_table_with_add_actions,
)

ROWS_PER_FILE = 2_000_000
COMMIT_ATTEMPTS = 10  # one per concurrent commit that lands first
WRITE_ATTEMPTS = 5  # rewrites of a window whose edge files a concurrent commit replaced

log = logging.getLogger(__name__)


class WindowConflict(RuntimeError):
    """A concurrent commit replaced files at the window's edge after the window was planned, so
    the files written for it no longer fit: the window has to be written again."""


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
    """One commit: the files holding rows of the window out, `adds` in (or the table created
    with them). Returns the version committed.

    Concurrent writers. delta-rs's conflict checker lets two writers of one new window both
    commit: a commit that only adds files reads nothing (`create_write_transaction` takes no
    read predicate), so neither conflicts with the other (issue 15: the rows twice). It even
    retried a losing CREATE TABLE as version 1, rows included. An app transaction id per window
    does make two commits of one window conflict (measured), but not two overlapping windows of
    different extent (a backfill range and one of its partitions).

    So a commit is made on exactly the version it was planned on (`max_commit_retries=0`:
    delta-rs fails rather than rebase it), and of two commits of one version the log store lets
    one win: the put-if-absent of the log entry that every safe delta-rs commit relies on
    (local disks, GCS, Azure; S3 with its conditional put or lock). The loser plans again on the
    new version and commits, now also removing what the winner put in the window: the window
    holds the last writer's rows, once. That holds while the files straddling the window's edge
    are the ones whose outside rows `adds` rewrote; if a concurrent commit replaced them it
    raises WindowConflict, and the window is written again (replace_window, spark.replace_window).
    A failure on an unchanged table is not a lost race and is raised as it is.
    """
    for _ in range(COMMIT_ATTEMPTS):
        try:
            return _commit(plan, adds, schema, storage_options)
        except DeltaError as error:
            fresh = plan_window(plan.uri, plan.window, storage_options)
            if _version(fresh) == _version(plan) or _holds(fresh, adds):
                raise  # not a lost race (or ours landed and a post-commit step failed)
            if (_edges(fresh) != _edges(plan) or fresh.table is None
                    or fresh.table.schema().to_json() != schema.to_json()):
                raise WindowConflict(
                    f"{plan.uri}: a concurrent commit (version {_version(fresh)}) replaced the "
                    f"files at the edge of window {plan.window.column} in "
                    f"[{plan.window.start}, {plan.window.end}) or changed the schema; the "
                    "window must be written again") from error
            log.info("%s: window %s in [%s, %s) lost version %d to a concurrent commit; "
                     "planned again on version %d", plan.uri, plan.window.column,
                     plan.window.start, plan.window.end, _version(plan) + 1, _version(fresh))
            plan = fresh
    raise WindowConflict(f"{plan.uri}: window {plan.window.column} in [{plan.window.start}, "
                         f"{plan.window.end}) lost {COMMIT_ATTEMPTS} commits in a row to "
                         "concurrent writers")


def _commit(plan: WindowPlan, adds: list[AddAction], schema: Schema,
            storage_options: dict[str, str] | None) -> int:
    once = CommitProperties(max_commit_retries=0)
    if plan.table is None:
        create_table_with_add_actions(plan.uri, schema, adds, mode="error",
                                      storage_options=storage_options, commit_properties=once)
        return 0
    now = int(time.time() * 1000)
    actions: list[AddAction | RemoveAction] = [
        RemoveAction(path=f.path, data_change=True, deletion_timestamp=now, size=f.size,
                     partition_values={}) for f in plan.touched]
    plan.table.create_write_transaction([*actions, *adds], mode="append", schema=schema,
                                        commit_properties=once)
    # Without retries the commit is the planned version's successor (delta-rs leaves the
    # DeltaTable object at the version it read).
    return plan.table.version() + 1


def _version(plan: WindowPlan) -> int:
    return -1 if plan.table is None else plan.table.version()


def _edges(plan: WindowPlan) -> set[str]:
    return {f.path for f in plan.touched if f.straddles}


def _holds(plan: WindowPlan, adds: list[AddAction]) -> bool:
    return plan.table is not None and not {a.path for a in adds}.isdisjoint(_paths(plan.table))


def _paths(table: DeltaTable) -> set[str]:
    """The snapshot's files, relative to the table root as they are on storage."""
    paths = table.get_add_actions(flatten=True).column("path").to_pylist()
    return {unquote(path) for path in paths}


def discard(uri: str, adds: list[AddAction]) -> None:
    """Deletes files written for a commit that can never be made (WindowConflict): no version
    refers to them. A Spark job's files go with their folder, which holds nothing else."""
    fs, root = _filesystem(uri)
    for folder in {a.path.split("/")[0] for a in adds if "/" in a.path}:
        fs.delete_dir(f"{root}/{folder}")
    for add in adds:
        if "/" not in add.path:
            fs.delete_file(f"{root}/{add.path}")


def replace_window(uri: str, df: pl.DataFrame, window: Window, stats_columns: list[str],
                   storage_options: dict[str, str] | None = None) -> int:
    """Makes the table's rows inside `window` exactly `df`, in one commit, the window's edge
    written again on the new version if a concurrent commit replaced the files there
    (commit_rows). Returns the version committed."""
    outside = df.filter(~window.contains())
    if outside.height:
        raise ValueError(f"{outside.height} rows fall outside {window.column} in "
                         f"[{window.start}, {window.end}), e.g. {outside.row(0, named=True)}")
    if "://" not in uri:  # the table's folder, for its first files
        os.makedirs(uri, exist_ok=True)
    rows = _write_files(uri, df, stats_columns, storage_options)
    # The schema alone: converting the whole frame to Arrow for it cost seconds.
    return commit_rows(uri, window, rows, Schema.from_arrow(df.clear().to_arrow().schema),
                       stats_columns, storage_options)


def commit_rows(uri: str, window: Window, rows: list[AddAction], schema: Schema,
                stats_columns: list[str], storage_options: dict[str, str] | None = None) -> int:
    """Commits `rows`, files already written under `uri` holding the window's new rows, as the
    window: plans on the current version, rewrites the rows outside the window of the files
    straddling its edge, and commits (commit_window). When a concurrent commit replaced those
    edge files (WindowConflict), only the edge is written again, up to WRITE_ATTEMPTS times: the
    window's own rows do not depend on the table's state. `schema` is the rows' schema, for a
    table this commit creates; an existing table keeps its log's. Returns the version committed.
    The polars writers share it (replace_window, ml_assets/features/chunked.py)."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        plan = plan_window(uri, window, storage_options)
        edge: list[AddAction] = []
        for path in plan.straddling:  # keep its rows outside the window
            kept = pl.read_parquet(path, storage_options=storage_options)
            edge += _write_files(uri, kept.filter(~window.contains()), stats_columns,
                                 storage_options)
        try:
            return commit_window(plan, [*edge, *rows],
                                 schema if plan.table is None else plan.table.schema(),
                                 storage_options)
        except WindowConflict:
            discard(uri, edge)
            if attempt == WRITE_ATTEMPTS:
                discard(uri, rows)
                raise
            log.info("%s: writing the edge of window %s in [%s, %s) again", uri, window.column,
                     window.start, window.end)
    raise AssertionError("unreachable: the last attempt returns or raises")


def remove_orphans(uri: str, retention: dt.timedelta = dt.timedelta(days=7),
                   storage_options: dict[str, str] | None = None,
                   dry_run: bool = False) -> list[str]:
    """Deletes the table's files that no commit in its log mentions and that were last modified
    more than `retention` ago: what a writer killed before its commit (or one that lost it and
    died) left behind. Returns their paths, relative to the table root.

    `retention` must be longer than any write takes from its first file to its commit, or a
    running writer's files would go. Files the log does mention (removed ones that older
    versions still read) are left to delta-rs's own `vacuum`, which keeps them for the table's
    deleted-file retention; delta-rs's `vacuum(full=True)` would also delete never-committed
    files, but at any age, a running writer's included. Names starting with `_` or `.` at the
    root (the log, change data) are Delta's and never touched.
    """
    table = DeltaTable(uri, storage_options=storage_options)
    fs, root = _filesystem(uri.rstrip("/"))
    known = _paths(table) | _logged_paths(fs, root)
    cutoff = dt.datetime.now(dt.UTC) - retention
    infos = [(info.path[len(root) + 1:], info)
             for info in fs.get_file_info(pafs.FileSelector(root, recursive=True))]
    infos = [(rel, info) for rel, info in infos if rel[:1] not in ("_", ".")]
    files = {rel for rel, info in infos if info.type == pafs.FileType.File}
    old = {rel for rel, info in infos if info.mtime is not None and info.mtime < cutoff}
    orphans = sorted((files - known) & old)
    # A staging folder (Spark's) goes too once nothing is left in it, its empty subfolders too.
    left = {rel.split("/")[0] for rel in files - set(orphans)}
    folders = [rel for rel, info in infos
               if info.type == pafs.FileType.Directory and "/" not in rel
               and rel not in left and rel in old]
    if not dry_run:
        for rel in orphans:
            fs.delete_file(f"{root}/{rel}")
        for rel in folders:
            fs.delete_dir(f"{root}/{rel}")
    return orphans


def _logged_paths(fs: pafs.FileSystem, root: str) -> set[str]:
    """Every file an add or a remove in the log's JSON commits names. A file only the
    checkpoint names is in the snapshot or was removed before every version still readable."""
    paths = set()
    for info in fs.get_file_info(pafs.FileSelector(f"{root}/_delta_log")):
        if not (info.base_name.endswith(".json") and info.base_name[:1].isdigit()):
            continue
        with fs.open_input_stream(info.path) as handle:
            for line in handle.read().decode().splitlines():
                action = json.loads(line) if line.strip() else {}
                for kind in ("add", "remove"):
                    if kind in action:
                        paths.add(unquote(action[kind]["path"]))
    return paths


def _open(uri: str, storage_options: dict[str, str] | None) -> DeltaTable | None:
    try:
        return DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:  # anything else (credentials, network) must surface
        return None
