"""Chunked feature build: the same table as the whole-window build, one commit per run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from ml_assets.features.assets import read_feature_inputs
from ml_assets.features.chunked import build_features_chunked, chunk_of_rows
from ml_assets.features.transforms import FeatureSpec, build_features
from ml_assets.simulation import World, WorldConfig
from resources.delta import DeltaStore

START = dt.date(2023, 1, 2)
DAYS = 500
KEYS = ["date", "store_id", "item_id"]
TABLE = "silver/features"
SPEC = FeatureSpec()


@pytest.fixture(scope="module")
def delta(tmp_path_factory: pytest.TempPathFactory) -> DeltaStore:
    """Bronze of a 4-store x 6-item world, written as the ingest lays it out."""
    root: Path = tmp_path_factory.mktemp("chunked") / "delta"
    world = World(WorldConfig(seed=5, n_stores=4, n_items=6, start_date=START))
    end = START + dt.timedelta(days=DAYS)
    store = DeltaStore(root=str(root))
    bronze = world.sales(START, end).with_columns(
        pl.col("units_sold").cast(pl.Float64),
        pl.lit("landing/sales.csv").alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("date").alias("row_number"))
    store.replace_window("bronze/sales", bronze, "date", START, end, KEYS)
    store.overwrite("bronze/stores", world.stores)
    store.overwrite("bronze/items", world.items)
    store.overwrite("bronze/calendar", world.calendar(START, end + dt.timedelta(days=60)))
    return store


def _whole(delta: DeltaStore, start: dt.date, end: dt.date) -> pl.DataFrame:
    """What the features asset builds today: the window in one piece."""
    inputs = read_feature_inputs(delta, start, end, SPEC, START)
    return build_features(inputs.pop("sales"), SPEC, **inputs).filter(
        pl.col("date").is_between(pl.lit(start), pl.lit(end), closed="left")).sort(KEYS)


def _day(n: int) -> dt.date:
    return START + dt.timedelta(days=n)


def _run(delta: DeltaStore, start: dt.date, end: dt.date, per_chunk: int = 5):
    return build_features_chunked(delta, SPEC, start, end, START, per_chunk, TABLE)


def test_chunk_of_rows_puts_each_series_in_one_chunk() -> None:
    keys = pl.DataFrame({"store_id": ["b", "a", "a", "b", "c", "a"],
                         "item_id": ["x", "y", "x", "x", "x", "y"]}).with_columns(
        pl.all().cast(pl.Categorical))
    chunk, n = chunk_of_rows(keys, 2)
    series = keys.with_columns(chunk=chunk).unique()
    assert n == 2 and series.height == 4  # 4 distinct series, each in exactly one chunk
    assert series.group_by("chunk").len().get_column("len").sort().to_list() == [2, 2]
    with pytest.raises(ValueError):
        chunk_of_rows(keys, 0)


def test_chunked_equals_whole_window_and_replaces_it(delta: DeltaStore) -> None:
    # A late window: its lookback misses the history's start, so first_sale is used.
    start, end = _day(420), _day(DAYS)
    first = _run(delta, start, end)
    assert first is not None and first.chunks >= 3  # ~20 live series, 5 per chunk
    table = delta.read(TABLE).sort(KEYS)
    whole = _whole(delta, start, end)
    assert table.schema == whole.schema
    assert table.equals(whole)
    assert first.rows == whole.height
    assert first.nulls == whole.null_count().row(0, named=True)

    again = _run(delta, start, end, per_chunk=7)  # re-run: replaces, one commit
    assert again is not None and again.version == first.version + 1
    assert delta.version(TABLE) == again.version
    assert delta.read(TABLE).sort(KEYS).equals(whole)


def test_overlapping_window_keeps_rows_outside_it(delta: DeltaStore) -> None:
    # Whole history first (no first_sale), then a window that cuts through its files.
    assert _run(delta, START, _day(300), per_chunk=24) is not None
    assert _run(delta, _day(200), _day(400)) is not None
    table = delta.read(TABLE).filter(pl.col("date") < _day(400)).sort(KEYS)
    assert table.equals(_whole(delta, START, _day(400)))


def test_empty_window_writes_nothing(delta: DeltaStore) -> None:
    before = delta.version(TABLE)
    assert _run(delta, _day(DAYS + 500), _day(DAYS + 510)) is None
    assert delta.version(TABLE) == before
