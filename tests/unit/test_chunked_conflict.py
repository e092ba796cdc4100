"""The chunked feature writer when a concurrent commit replaces the files at its window's edge
between its plan and its commit (issue 15): the edge is written again, the chunks are not, and
the window ends up holding its features with the other writer's rows outside it kept.

Real Delta tables on a temp dir and a real concurrent commit (the polars `replace_window`). The
only hook is a wrapper around our own `delta_files.plan_window`, which makes that commit right
after the chunked writer's first plan: the moment a race would have to hit, made deterministic.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_assets.features.chunked import STATS_COLUMNS, build_features_chunked
from ml_assets.features.transforms import FeatureSpec
from ml_assets.simulation import World, WorldConfig
from resources import delta_files
from resources.delta import DeltaStore
from resources.delta_files import Window, WindowPlan

START = dt.date(2023, 1, 2)
DAYS = 120
KEYS = ["date", "store_id", "item_id"]
TABLE = "silver/features"
SPEC = FeatureSpec()


def _day(n: int) -> dt.date:
    return START + dt.timedelta(days=n)


@pytest.fixture
def delta(tmp_path: Path) -> DeltaStore:
    """Bronze of a 3-store x 4-item world, and its features over the whole history in one file
    (one chunk), so any window inside it cuts through that file."""
    world = World(WorldConfig(seed=3, n_stores=3, n_items=4, start_date=START))
    store = DeltaStore(root=str(tmp_path / "delta"))
    bronze = world.sales(START, _day(DAYS)).with_columns(pl.col("units_sold").cast(pl.Float64))
    store.replace_window("bronze/sales", bronze, "date", START, _day(DAYS), KEYS)
    store.overwrite("bronze/stores", world.stores)
    store.overwrite("bronze/items", world.items)
    assert build_features_chunked(store, SPEC, START, _day(DAYS), START, 100, TABLE) is not None
    return store


def test_edge_replaced_between_plan_and_commit(delta: DeltaStore, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    uri = delta.uri(TABLE)
    before = delta.read(TABLE)
    window, other = Window("date", _day(60), _day(80)), Window("date", _day(20), _day(30))
    # The other writer's rows: the same keys, a feature changed, so that losing them shows.
    theirs = before.filter(other.contains()).with_columns(pl.col("price") + 1000)
    plan_window = delta_files.plan_window
    raced: list[int] = []

    def plan_then_race(uri_: str, window_: Window,
                       storage_options: dict[str, str] | None = None) -> WindowPlan:
        plan = plan_window(uri_, window_, storage_options)
        if window_ == window and not raced:  # once, right after the chunked writer's first plan
            raced.append(delta_files.replace_window(uri, theirs, other, STATS_COLUMNS))
        return plan

    monkeypatch.setattr(delta_files, "plan_window", plan_then_race)
    with caplog.at_level(logging.INFO, logger=delta_files.__name__):
        written = build_features_chunked(delta, SPEC, window.start, window.end, START, 5, TABLE)

    assert written is not None and written.chunks >= 2
    assert written.version == raced[0] + 1 == delta.version(TABLE)
    assert "writing the edge of window" in caplog.text  # the conflict did happen
    after = delta.read(TABLE)
    # Inside the window, the features again (the table held the same ones before); outside it,
    # the other writer's rows and the rest as they were: nothing lost, nothing twice.
    expected = pl.concat([before.filter(~other.contains()), theirs]).sort(KEYS)
    assert_frame_equal(after.sort(KEYS), expected)
    # The edge files of the attempt that lost were discarded, not left as orphans.
    assert delta_files.remove_orphans(uri, dt.timedelta(0), dry_run=True) == []
