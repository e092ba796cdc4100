"""Two processes replacing one window of one table at the same time (issue 15).

Two spawned worker processes live for the module; each trial hands both a write and releases
them together through a barrier. Whatever the timing, the window must end up holding exactly one
writer's rows (none twice, none lost), the rows outside it untouched; each writer either reports
the version it committed (checked by reading that version back) or fails with an error naming
the table and the window. Both paths are raced: the polars writer (`delta_files.replace_window`)
and the commit the Spark engine makes of Spark-staged files (`commit_window`, as
`spark.replace_window` calls it). Commits that lost a race log a retry; the counts show the race
is real.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing as mp
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from resources import delta_files
from resources.delta_files import Window

KEYS = ["date", "store_id", "item_id"]
TRIALS = 20
DAY = dt.date(2024, 3, 4)
WINDOW = Window("date", DAY, DAY + dt.timedelta(days=5))


def rows(start: dt.date, writer: int) -> pl.DataFrame:
    """1,000 rows (5 days x 10 stores x 20 items) from `start`, units_sold = the writer."""
    return pl.DataFrame({"date": [start + dt.timedelta(days=d) for d in range(5)]}).join(
        pl.DataFrame({"store_id": [f"S{s}" for s in range(10)]}), how="cross").join(
        pl.DataFrame({"item_id": [f"I{i}" for i in range(20)]}), how="cross"
    ).with_columns(units_sold=pl.lit(float(writer)))


@dataclass(frozen=True)
class Outcome:
    writer: int
    version: int | None
    error: str | None
    retries: int  # logged by the writer: commits it lost and made again, windows written again


# --- the worker processes -----------------------------------------------------------------------


class _Retries(logging.Handler):
    count = 0

    def emit(self, record: logging.LogRecord) -> None:
        _Retries.count += 1


def _worker(barrier: Any, tasks: Any, results: Any) -> None:
    from deltalake import Schema
    from deltalake.transaction import AddAction

    logger = logging.getLogger(delta_files.__name__)
    logger.setLevel(logging.INFO)
    logger.addHandler(_Retries())
    while (task := tasks.get()) is not None:
        kind, uri, window, writer, staged = task
        if kind == "commit":  # Spark staged the files; this process makes the commit
            plan = delta_files.plan_window(uri, window)
            assert plan.table is not None and plan.table.version() == staged["version"]
            adds = [AddAction(**add) for add in staged["adds"]]
            schema = Schema.from_json(staged["schema"])
        else:
            frame = rows(window.start, writer)
        _Retries.count = 0
        barrier.wait(timeout=60)
        try:
            version = (delta_files.commit_window(plan, adds, schema) if kind == "commit"
                       else delta_files.replace_window(uri, frame, window, KEYS))
            results.put(Outcome(writer, version, None, _Retries.count))
        except Exception as exc:  # reported, and judged by the test
            results.put(Outcome(writer, None, f"{type(exc).__name__}: {exc}", _Retries.count))


@pytest.fixture(scope="module")
def workers() -> Iterator[tuple[list[Any], Any]]:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    queues = [ctx.Queue(), ctx.Queue()]
    procs = [ctx.Process(target=_worker, args=(barrier, q, results), daemon=True)
             for q in queues]
    for p in procs:
        p.start()
    yield queues, results
    for q in queues:
        q.put(None)
    for p in procs:
        p.join(timeout=30)


def race(workers: tuple[list[Any], Any], tasks: list[tuple]) -> list[Outcome]:
    queues, results = workers
    for q, task in zip(queues, tasks, strict=True):
        q.put(task)
    return sorted((results.get(timeout=120) for _ in tasks), key=lambda o: o.writer)


# --- judging a trial ----------------------------------------------------------------------------


def judge(uri: str, window: Window, before: pl.DataFrame | None,
          outcomes: list[Outcome]) -> None:
    """Exactly one writer's rows in `window`, the rest as `before`; every reported version
    holds that writer's rows; a failure names the table and the window."""
    table = pl.read_delta(uri)
    inside = table.filter(window.contains())
    outside = before.filter(~window.contains()) if before is not None else table.clear()
    assert_frame_equal(table.filter(~window.contains()).sort(KEYS), outside.sort(KEYS))
    done = [o for o in outcomes if o.version is not None]
    assert done, outcomes
    last = max(done, key=lambda o: o.version or 0)
    assert DeltaTable(uri).version() == last.version
    expected = rows(window.start, last.writer)
    assert_frame_equal(inside.sort(KEYS), expected.select(inside.columns).sort(KEYS))
    assert len({o.version for o in done}) == len(done), outcomes  # no version reported twice
    for o in done:  # the version reported is the one that holds the writer's rows
        at = pl.read_delta(uri, version=o.version).filter(window.contains())
        assert at.height == expected.height
        assert at.get_column("units_sold").unique().to_list() == [float(o.writer)]
    for o in outcomes:
        if o.error is not None:
            assert uri in o.error and str(window.start) in o.error, o.error


def polars_trials(tmp_path: Path, workers, name: str,
                  setup: Any) -> tuple[int, int]:
    """TRIALS races of two polars writers on WINDOW of a table `setup` prepares; returns how many
    trials had a writer retry, and how many a writer fail."""
    retried = failed = 0
    for trial in range(TRIALS):
        uri = str(tmp_path / f"{name}-{trial}")
        setup(uri, trial)
        before = pl.read_delta(uri) if os.path.exists(f"{uri}/_delta_log") else None
        outcomes = race(workers, [("replace", uri, WINDOW, 1, None),
                                  ("replace", uri, WINDOW, 2, None)])
        judge(uri, WINDOW, before, outcomes)
        retried += any(o.retries for o in outcomes)
        failed += any(o.error for o in outcomes)
    print(f"{name}: {TRIALS} trials, {retried} with a retried commit, {failed} with a failure")
    return retried, failed


# --- the polars writer --------------------------------------------------------------------------


def test_a_new_window_is_written_once(tmp_path: Path, workers) -> None:
    """The table exists but holds no row in the window: issue 15 found the rows twice."""
    def setup(uri: str, _: int) -> None:
        delta_files.replace_window(uri, rows(DAY - dt.timedelta(days=5), 0),
                                   Window("date", DAY - dt.timedelta(days=5), DAY), KEYS)

    retried, _ = polars_trials(tmp_path, workers, "new-window", setup)
    assert retried >= TRIALS // 2  # the two writers really did collide


def test_an_existing_window_is_written_once(tmp_path: Path, workers) -> None:
    """The window holds rows: in its own file (even trials), or in a file that also holds rows
    before it, which the winner rewrites (odd trials: the loser must write its files again)."""
    def setup(uri: str, trial: int) -> None:
        if trial % 2:
            start = DAY - dt.timedelta(days=5)
            delta_files.replace_window(uri, pl.concat([rows(start, 0), rows(DAY, 0)]),
                                       Window("date", start, WINDOW.end), KEYS)
        else:
            delta_files.replace_window(uri, rows(DAY - dt.timedelta(days=5), 0),
                                       Window("date", DAY - dt.timedelta(days=5), DAY), KEYS)
            delta_files.replace_window(uri, rows(DAY, 0), WINDOW, KEYS)

    retried, _ = polars_trials(tmp_path, workers, "existing-window", setup)
    assert retried >= TRIALS // 2


def test_two_creators_of_a_table(tmp_path: Path, workers) -> None:
    retried, _ = polars_trials(tmp_path, workers, "new-table", lambda uri, _: None)
    assert retried >= TRIALS // 4  # a creator that starts late sees the table and never retries


def test_different_windows_both_land(tmp_path: Path, workers) -> None:
    """Two windows of one table at once, both cut from one file that spans them: both writes
    succeed (the loser writes its files again), each window holds its writer's rows."""
    first, second = Window("date", DAY, DAY + dt.timedelta(days=5)), \
        Window("date", DAY + dt.timedelta(days=5), DAY + dt.timedelta(days=10))
    start, rewritten = DAY - dt.timedelta(days=5), 0
    for trial in range(TRIALS // 2):
        uri = str(tmp_path / f"windows-{trial}")
        delta_files.replace_window(
            uri, pl.concat([rows(start + dt.timedelta(days=5 * k), 0) for k in range(4)]),
            Window("date", start, start + dt.timedelta(days=20)), KEYS)
        before = pl.read_delta(uri)
        outcomes = race(workers, [("replace", uri, first, 1, None),
                                  ("replace", uri, second, 2, None)])
        assert all(o.error is None for o in outcomes), outcomes
        table = pl.read_delta(uri)
        assert table.height == before.height
        for window, writer in ((first, 1), (second, 2)):
            assert table.filter(window.contains()).get_column("units_sold").unique().to_list() \
                == [float(writer)]
        untouched = ~first.contains() & ~second.contains()
        assert_frame_equal(table.filter(untouched).sort(KEYS), before.filter(untouched).sort(KEYS))
        assert sorted(o.version or 0 for o in outcomes) == [1, 2]
        rewritten += any(o.retries for o in outcomes)
    print(f"different windows: {TRIALS // 2} trials, {rewritten} with a window written again")
    assert rewritten >= TRIALS // 4


# --- the Spark path's commit --------------------------------------------------------------------


@pytest.mark.parametrize("existing", [False, True], ids=["new-window", "existing-window"])
def test_spark_staged_commits_race(tmp_path: Path, workers, spark, existing: bool) -> None:
    """One Spark session stages both writers' files on the same table version, exactly as
    `spark.replace_window` does before its commit (`stage_window`); the two commits then race in
    the worker processes through `commit_window`, the function `spark.replace_window` calls."""
    from resources.spark import delta_schema, stage_window

    retried = 0
    for trial in range(TRIALS):
        uri = str(tmp_path / f"spark-{trial}")
        delta_files.replace_window(uri, rows(DAY - dt.timedelta(days=5), 0),
                                   Window("date", DAY - dt.timedelta(days=5), DAY), KEYS)
        if existing:
            delta_files.replace_window(uri, rows(DAY, 0), WINDOW, KEYS)
        before = pl.read_delta(uri)
        tasks = []
        for writer in (1, 2):
            frame = spark.createDataFrame(rows(DAY, writer).select(before.columns).to_arrow())
            staged = stage_window(spark, frame, uri, WINDOW, KEYS)
            assert staged.plan.table is not None
            tasks.append(("commit", uri, WINDOW, writer, {
                "version": staged.plan.table.version(),
                "adds": [vars(add) for add in staged.adds],
                "schema": delta_schema(frame.schema).to_json()}))
        outcomes = race(workers, tasks)
        judge(uri, WINDOW, before, outcomes)
        retried += any(o.retries for o in outcomes)
    print(f"spark commits ({'existing' if existing else 'new'} window): {TRIALS} trials, "
          f"{retried} with a retried commit")
    assert retried >= TRIALS // 2


def test_spark_writes_again_when_its_edge_file_was_replaced(tmp_path: Path, spark,
                                                            monkeypatch) -> None:
    """`spark.replace_window` staged its files, then another writer's commit replaced the file
    at the window's edge: it stages again on the new version, and the first staging's files
    are deleted."""
    from resources import spark as spark_io

    uri, start = str(tmp_path / "edge"), DAY - dt.timedelta(days=5)
    delta_files.replace_window(  # one file from 5 days before the window to 10 days after it
        uri, pl.concat([rows(start + dt.timedelta(days=5 * k), 0) for k in range(4)]),
        Window("date", start, start + dt.timedelta(days=20)), KEYS)
    before = pl.read_delta(uri)
    after = Window("date", WINDOW.end, WINDOW.end + dt.timedelta(days=5))
    stage, folders = spark_io.stage_window, []

    def stage_then_lose(*args: Any, **kwargs: Any) -> Any:
        staged = stage(*args, **kwargs)
        if not folders:  # a concurrent writer commits first, cutting the same file
            delta_files.replace_window(uri, rows(after.start, 2), after, KEYS)
        folders.append({add.path.split("/")[0] for add in staged.adds})
        return staged

    monkeypatch.setattr(spark_io, "stage_window", stage_then_lose)
    frame = spark.createDataFrame(rows(DAY, 1).select(before.columns).to_arrow())
    written = spark_io.replace_window(spark, frame, uri, WINDOW, KEYS)
    assert len(folders) == 2 and (written.version, written.rows) == (2, 1_000)
    assert not any(os.path.exists(f"{uri}/{folder}") for folder in folders[0])
    table = pl.read_delta(uri)
    assert table.height == before.height
    for window, writer in ((WINDOW, 1), (after, 2)):
        assert table.filter(window.contains()).get_column("units_sold").unique().to_list() \
            == [float(writer)]
