"""A window write killed (SIGKILL) at a random point: the table stays readable at its previous
version (or at the new one, when the commit got through), a re-run gives exactly the intended
rows, and `remove_orphans` deletes the files the killed writer left, and nothing else.

Each trial starts a writer process (forkserver, with polars and delta-rs imported once: a spawned
interpreter's imports cost more than the trials), lets it start the write, sleeps a random time
within the write's measured duration and kills it. The polars writer is killed anywhere in
`replace_window` (reading the file at the window's edge, writing files, committing); the Spark
path's commit is killed anywhere in `commit_window`, with the files staged by Spark in this
process (the staging itself never touches the log: tests/integration/test_spark_parity.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing as mp
import os
import random
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from resources import delta_files
from resources.delta_files import Window, remove_orphans

KEYS = ["date", "store_id", "item_id"]
TRIALS = 20
DAY = dt.date(2024, 3, 4)
WINDOW = Window("date", DAY, DAY + dt.timedelta(days=10))
AROUND = Window("date", DAY - dt.timedelta(days=10), DAY + dt.timedelta(days=20))
CTX = mp.get_context("forkserver")
CTX.set_forkserver_preload([__name__])


def rows(window: Window, units: float) -> pl.DataFrame:
    """One row a day per store x item (20 x 50) in `window`."""
    days = (window.end - window.start).days
    return pl.DataFrame({"date": [window.start + dt.timedelta(days=d) for d in range(days)]}).join(
        pl.DataFrame({"store_id": [f"S{s}" for s in range(20)]}), how="cross").join(
        pl.DataFrame({"item_id": [f"I{i}" for i in range(50)]}), how="cross"
    ).with_columns(units_sold=pl.lit(units))


def base_table(uri: str) -> pl.DataFrame:
    """30 days in one file, so the window's write must also rewrite the rows around it."""
    delta_files.replace_window(uri, rows(AROUND, 0.0), AROUND, KEYS)
    return pl.read_delta(uri)


# --- the writer processes -----------------------------------------------------------------------


def _polars_writer(uri: str, go: Any, took: Any) -> None:
    delta_files.ROWS_PER_FILE = 1_000  # many files: many points to be killed at
    frame = rows(WINDOW, 1.0)
    _wait(go)
    start = time.perf_counter()
    delta_files.replace_window(uri, frame, WINDOW, KEYS)
    took.put(time.perf_counter() - start)


def _committer(uri: str, staged: dict[str, Any], go: Any, took: Any) -> None:
    from deltalake import Schema
    from deltalake.transaction import AddAction

    plan = delta_files.plan_window(uri, WINDOW)
    assert plan.table is not None and plan.table.version() == staged["version"]
    adds = [AddAction(**add) for add in staged["adds"]]
    schema = Schema.from_json(staged["schema"])
    _wait(go)
    start = time.perf_counter()
    delta_files.commit_window(plan, adds, schema)
    took.put(time.perf_counter() - start)


def _wait(go: Any) -> None:
    """Tells the parent the writer is ready, then spins until it says go: the parent's clock
    and the write's start then differ by microseconds, not a scheduler's wake-up."""
    go.value = 1
    while go.value != 2:
        pass


def run(target: Any, args: tuple, kill_after: float | None) -> tuple[int, float | None]:
    """Runs a writer up to its write, starts it, and kills it `kill_after` seconds later (None:
    lets it finish). Returns its exit code and, when it finished, how long its write took."""
    go, took = CTX.RawValue("b", 0), CTX.Queue()
    proc = CTX.Process(target=target, args=(*args, go, took))
    proc.start()
    deadline = time.monotonic() + 60
    while go.value != 1:
        assert time.monotonic() < deadline and proc.exitcode is None
        time.sleep(0.001)
    go.value = 2
    if kill_after is not None:
        time.sleep(kill_after)
        with contextlib.suppress(ProcessLookupError):  # it finished first
            os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=60)
    assert proc.exitcode is not None
    return proc.exitcode, took.get(timeout=5) if proc.exitcode == 0 else None


# --- judging a trial ----------------------------------------------------------------------------


def referenced(uri: str) -> set[str]:
    """Every file some version of the table reads, by loading each version."""
    table = DeltaTable(uri)
    paths: set[str] = set()
    for version in range(table.version() + 1):
        table.load_as_version(version)
        paths |= set(table.get_add_actions(flatten=True).column("path").to_pylist())
    return paths


def on_disk(uri: str) -> set[str]:
    return {str(p.relative_to(uri)) for p in Path(uri).rglob("*")
            if p.is_file() and not p.relative_to(uri).parts[0].startswith("_")}


def judge(uri: str, version: int, before: pl.DataFrame, intended: pl.DataFrame,
          rerun: Callable[[str], int]) -> tuple[str, int]:
    """The killed write left version `version` (the previous one) or its successor, each read as
    it should; the re-run (`rerun(uri)`) gives the intended rows; remove_orphans then deletes
    exactly the files no version reads. Returns where the kill landed and the orphans removed."""
    table = DeltaTable(uri)
    assert table.version() in (version, version + 1)
    landed = table.version() == version + 1
    after = before.filter(~WINDOW.contains())
    expected = pl.concat([after, intended]) if landed else before
    assert_frame_equal(pl.read_delta(uri).sort(KEYS), expected.sort(KEYS))

    assert rerun(uri) == table.version() + 1
    assert_frame_equal(pl.read_delta(uri).sort(KEYS), pl.concat([after, intended]).sort(KEYS))

    orphans = remove_orphans(uri, retention=dt.timedelta(0))
    assert on_disk(uri) == referenced(uri)  # orphans gone, every version's files kept
    assert_frame_equal(pl.read_delta(uri, version=version).sort(KEYS), before.sort(KEYS))
    assert remove_orphans(uri, retention=dt.timedelta(0)) == []
    return ("committed" if landed else "not committed"), len(orphans)


def trials(name: str, target: Any, prepare: Callable[[int], tuple[str, tuple]],
           rerun: Callable[[str], int], min_before_commit: int = TRIALS // 10) -> Counter[str]:
    """Three calibrating runs (not killed), then TRIALS kills at random points of the write."""
    times = []
    for calibration in range(3):
        uri, args = prepare(TRIALS + 1 + calibration)
        code, took = run(target, (uri, *args), None)
        assert code == 0 and took is not None
        times.append(took)
    took = sorted(times)[1]
    outcomes: Counter[str] = Counter()
    rng = random.Random(15)
    for trial in range(1, TRIALS + 1):
        uri, args = prepare(trial)
        before, version = pl.read_delta(uri), DeltaTable(uri).version()
        # Stratified: each trial's kill point random within its own slice of the write.
        code, _ = run(target, (uri, *args), took * 1.2 * (trial - rng.random()) / TRIALS)
        assert code in (0, -signal.SIGKILL), code  # killed, or done before the kill
        where, orphans = judge(uri, version, before, rows(WINDOW, 1.0), rerun)
        outcomes[f"{where} ({'killed' if code == -signal.SIGKILL else 'finished'})"] += 1
        outcomes["orphaned files removed"] += orphans
    print(f"{name}: write took {took * 1000:.0f} ms; {dict(outcomes)}")
    killed = outcomes["not committed (killed)"] + outcomes["committed (killed)"]
    assert killed >= TRIALS // 2  # the kills hit the writer while it lived
    assert outcomes["not committed (killed)"] >= min_before_commit  # and before its commit
    return outcomes


# --- the tests ----------------------------------------------------------------------------------


def test_a_killed_polars_write(tmp_path: Path) -> None:
    def prepare(trial: int) -> tuple[str, tuple]:
        uri = str(tmp_path / f"polars-{trial}")
        base_table(uri)
        return uri, ()

    trials("polars", _polars_writer, prepare,
           lambda uri: delta_files.replace_window(uri, rows(WINDOW, 1.0), WINDOW, KEYS))


def test_a_killed_spark_commit(tmp_path: Path, spark) -> None:
    """Spark stages the window's files once (with the rewritten rows around it); each trial
    copies that table and its staged files and kills the commit of a copy."""
    from resources.spark import delta_schema, replace_window, stage_window

    def frame() -> Any:
        return spark.createDataFrame(rows(WINDOW, 1.0).to_arrow())

    template = str(tmp_path / "staged")
    base_table(template)
    staged = stage_window(spark, frame(), template, WINDOW, KEYS)
    assert staged.plan.table is not None and len(staged.plan.touched) == 1
    commit = {"version": staged.plan.table.version(), "adds": [vars(a) for a in staged.adds],
              "schema": delta_schema(frame().schema).to_json()}

    def prepare(trial: int) -> tuple[str, tuple]:
        uri = str(tmp_path / f"spark-{trial}")
        shutil.copytree(template, uri)
        return uri, (commit,)

    # The commit alone takes about 5 ms: on a loaded machine a kill lands before it in 1 to 5
    # trials of 20, so only "some kills hit the live writer" is required of the timing here;
    # every trial's table is judged all the same.
    trials("spark commit", _committer, prepare,
           lambda uri: replace_window(spark, frame(), uri, WINDOW, KEYS).version,
           min_before_commit=0)


# --- what remove_orphans keeps ------------------------------------------------------------------


def test_remove_orphans_keeps_young_files_and_every_version(tmp_path: Path) -> None:
    """Only files no commit mentions and older than the retention go: a running writer's files
    and the files an older version reads stay. Through the Dagster job as well."""
    from ml_assets.maintenance import remove_orphaned_files
    from resources.delta import DeltaStore

    store = DeltaStore(root=str(tmp_path / "delta"))
    uri = store.uri("silver/t")
    base_table(uri)
    delta_files.replace_window(uri, rows(WINDOW, 1.0), WINDOW, KEYS)  # version 0's file removed
    day_old = time.time() - 86_400
    for rel, old in [("part-killed.parquet", True), ("part-running.parquet", False),
                     ("spark-killed/_temporary/0/part-0.parquet", True),
                     ("spark-killed/part-1.parquet", True),
                     ("spark-running/part-0.parquet", False)]:
        path = Path(uri, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PAR1")
        if old:
            os.utime(path, (day_old, day_old))
    for folder in ("spark-killed/_temporary/0", "spark-killed/_temporary", "spark-killed"):
        os.utime(Path(uri, folder), (day_old, day_old))
    base_table(store.uri("bronze/other"))

    assert remove_orphans(uri, dt.timedelta(hours=1), dry_run=True) == [
        "part-killed.parquet", "spark-killed/_temporary/0/part-0.parquet",
        "spark-killed/part-1.parquet"]
    assert len(remove_orphans(uri, dt.timedelta(hours=1))) == 3
    assert not Path(uri, "spark-killed").exists()
    assert {"part-running.parquet", "spark-running/part-0.parquet"} <= on_disk(uri)
    assert on_disk(uri) - {"part-running.parquet", "spark-running/part-0.parquet"} \
        == referenced(uri)
    assert pl.read_delta(uri, version=0).height == rows(AROUND, 0.0).height  # time travel

    assert store.tables() == ["bronze/other", "silver/t"]
    result = remove_orphaned_files.execute_in_process(
        resources={"delta": store},
        run_config={"ops": {"remove_orphans": {"config": {"retention_hours": 0}}}})
    assert result.success
    assert on_disk(uri) == referenced(uri)
