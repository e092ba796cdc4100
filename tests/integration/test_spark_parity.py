"""The Spark feature engine against the polars engine: same keys, columns, order, dtypes, nulls
in the same places and values within 1e-6; the same Delta table when written; and the real
`features` asset materialized through Dagster with engine=spark.

One SparkSession (local[2], 4 shuffle partitions, no UI) serves the whole test session. Without
Java the tests are skipped, saying so; with it, a Spark failure is a failure.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_assets.features.transforms import SERIES, FeatureSpec, build_features
from ml_assets.simulation import World, WorldConfig
from resources.delta import DeltaStore
from resources.delta_files import Window
from resources.spark import SparkEngine

KEYS = ["date", *SERIES]
START = dt.date(2024, 1, 1)  # a Monday
END = dt.date(2025, 3, 1)  # 426 days: lag_364 has values
JAVA = shutil.which("java") or (os.environ.get("JAVA_HOME") and
                                Path(os.environ["JAVA_HOME"], "bin", "java").exists())
pytestmark = pytest.mark.skipif(
    not JAVA, reason="Java is not installed (no `java` on PATH or in JAVA_HOME): the Spark "
                     "engine needs a JVM, Java 17")


@pytest.fixture(scope="session")
def spark():
    session = SparkEngine(master="local[2]", shuffle_partitions=4, driver_memory="1g", conf={
        "spark.ui.enabled": "false",
        # The JIT's top tier costs more than it gives on test-sized data.
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
    }).session()
    yield session
    session.stop()


def assert_same(polars_out: pl.DataFrame, spark_out: pl.DataFrame) -> None:
    """Same keys, columns, order and dtypes; nulls and NaN in the same places; floats within
    1e-6 absolute, everything else exact."""
    assert spark_out.schema == polars_out.schema
    assert_frame_equal(spark_out.sort(KEYS), polars_out.sort(KEYS), check_exact=False,
                       abs_tol=1e-6, rel_tol=0.0)


def spark_features(spark, sales: pl.DataFrame, spec: FeatureSpec, first_sale=None,
                   **dims: pl.DataFrame | None) -> pl.DataFrame:
    from ml_assets.features.spark_engine import build_features_spark

    frame = build_features_spark(
        spark.createDataFrame(sales.to_arrow()), spec, sales.get_column("date").min(),
        first_sale=None if first_sale is None else spark.createDataFrame(first_sale.to_arrow()),
        **dims)
    return pl.from_arrow(frame.toArrow())  # small test frames: collected to compare


# --- data: the simulated world, made harder -----------------------------------------------------


@pytest.fixture(scope="module")
def world() -> World:
    return World(WorldConfig(n_stores=2, n_items=6, start_date=START))


def _series(store: str, item: str) -> pl.Expr:
    return (pl.col("store_id") == store) & (pl.col("item_id") == item)


@pytest.fixture(scope="module")
def daily(world: World) -> pl.DataFrame:
    """History with random gaps, a 40-day hole, a run of zeros, a constant series, missing and
    NaN values, prices unknown at a series' start, a series that starts late (a new item with
    no attributes), plus 14 future days with prices and promotions and a null target."""
    rng = np.random.default_rng(5)
    history = world.sales(START, END)
    stores, items = history.get_column("store_id").unique().sort(), \
        history.get_column("item_id").unique().sort()
    s0, s1, i0, i1, i2 = stores[0], stores[1], items[0], items[1], items[2]
    date = pl.col("date")
    history = history.filter(
        pl.Series(rng.random(history.height) > 0.08)
        & ~(_series(s0, i0) & date.is_between(dt.date(2024, 7, 1), dt.date(2024, 8, 9))))
    price_gone = pl.Series(rng.random(history.height) < 0.05) | (
        _series(s1, i0) & (date < dt.date(2024, 2, 1)))
    history = history.with_columns(
        pl.when(_series(s0, i1) & date.is_between(dt.date(2024, 9, 1), dt.date(2024, 11, 1)))
        .then(0).when(_series(s1, i2)).then(3).otherwise(pl.col("units_sold"))
        .cast(pl.Float64).alias("units_sold"),
        pl.when(price_gone).then(None).otherwise(pl.col("price")).alias("price"),
    ).with_columns(pl.when(pl.Series(rng.random(history.height) < 0.01)).then(float("nan"))
                   .otherwise(pl.col("units_sold")).alias("units_sold"))
    late = (world.sales(dt.date(2024, 10, 7), END).filter(_series(s0, i0))
            .with_columns(pl.lit("I_NEW").alias("item_id"),
                          pl.col("units_sold").cast(pl.Float64)))
    future = world.sales(END, END + dt.timedelta(days=14)).with_columns(
        pl.lit(None, pl.Float64).alias("units_sold"))
    return pl.concat([history, late, future], how="vertical_relaxed")


@pytest.fixture(scope="module")
def calendar(world: World) -> pl.DataFrame:
    return world.calendar(START - dt.timedelta(days=10), END + dt.timedelta(days=30))


@pytest.fixture(scope="module")
def weekly(daily: pl.DataFrame) -> pl.DataFrame:
    """By Monday-week, with gaps, a numeric and a categorical covariate."""
    rng = np.random.default_rng(0)
    out = (daily.filter(pl.col("date") < END)
           .group_by(pl.col("date").dt.truncate("1w"), *SERIES)
           .agg(pl.col("units_sold").sum(), pl.col("price").mean(), pl.col("on_promo").max())
           .sort(KEYS))
    out = out.with_columns(
        pl.Series("temperature", rng.normal(12, 8, out.height).round(1)),
        pl.Series("weather", rng.choice(["sun", "rain", "snow"], out.height)))
    return out.filter(pl.Series(rng.random(out.height) > 0.1))


def first_sales(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.group_by(SERIES).agg(pl.col("date").min().alias("first_sale_date"))


# --- parity of the transforms ---------------------------------------------------------------------


def test_daily_features_match(spark, world: World, daily: pl.DataFrame,
                              calendar: pl.DataFrame) -> None:
    dims = {"stores": world.stores, "items": world.items, "calendar": calendar}
    expected = build_features(daily, FeatureSpec(), **dims)
    assert expected.get_column("std_28").drop_nulls().min() == 0.0  # the constant series
    assert_same(expected, spark_features(spark, daily, FeatureSpec(), **dims))


def test_a_read_from_mid_history_with_first_sales_matches(spark, world: World,
                                                          daily: pl.DataFrame) -> None:
    """A window's read starts after some series began: their age comes from `first_sale`
    (one series left out of it: a null age)."""
    first = first_sales(daily).filter(pl.col("item_id") != "I_NEW")
    later = daily.filter(pl.col("date") >= dt.date(2024, 9, 2))
    expected = build_features(later, FeatureSpec(), stores=world.stores, first_sale=first)
    assert expected.get_column("periods_since_first_sale").null_count() > 0
    assert_same(expected, spark_features(spark, later, FeatureSpec(), first, stores=world.stores))


def test_weekly_features_with_covariates_match(spark, world: World,
                                               weekly: pl.DataFrame) -> None:
    spec = FeatureSpec(horizon=8, period_days=7, numeric_covariates=("temperature",),
                       categorical_covariates=("weather",))
    first = first_sales(weekly).with_columns(pl.col("first_sale_date") - dt.timedelta(weeks=3))
    expected = build_features(weekly, spec, items=world.items, first_sale=first)
    assert_same(expected, spark_features(spark, weekly, spec, first, items=world.items))


def test_a_date_off_the_weekly_grid_fails(spark, weekly: pl.DataFrame) -> None:
    spec = FeatureSpec(horizon=8, period_days=7)
    bad = pl.concat([weekly.head(1).with_columns(pl.col("date") + dt.timedelta(days=2)),
                     weekly], how="diagonal_relaxed")
    with pytest.raises(ValueError, match="not on the 7-day grid"):
        build_features(bad, spec)
    with pytest.raises(Exception, match="not on the 7-day grid"):
        spark_features(spark, bad, spec)


# --- the Delta tables both engines write ----------------------------------------------------------


@pytest.fixture(scope="module")
def bronze(tmp_path_factory: pytest.TempPathFactory, world: World,
           daily: pl.DataFrame, calendar: pl.DataFrame) -> DeltaStore:
    """The daily history as bronze tables (bronze's schema: typed units, Int8 promotion)."""
    delta = DeltaStore(root=str(tmp_path_factory.mktemp("spark_delta") / "delta"))
    history = daily.filter(pl.col("date") < END).with_columns(
        pl.col("on_promo").cast(pl.Int8), pl.lit("f.csv").alias("source_file"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("row_number"))
    delta.replace_window("bronze/sales", history, "date", START, END, KEYS)
    delta.overwrite("bronze/stores", world.stores)
    delta.overwrite("bronze/items", world.items)
    delta.overwrite("bronze/calendar", calendar)
    return delta


def polars_window(delta: DeltaStore, table: str, start: dt.date, end: dt.date) -> int:
    from ml_assets.features.assets import read_feature_inputs

    spec = FeatureSpec()
    inputs = read_feature_inputs(delta, start, end, spec, START)
    frame = build_features(inputs.pop("sales"), spec, **inputs).filter(
        Window("date", start, end).contains())
    return delta.replace_window(table, frame, "date", start, end, KEYS)


def test_both_engines_write_the_same_delta_table(spark, bronze: DeltaStore) -> None:
    """Spark creates the table, then re-runs a window inside it (files straddling the
    window's edges are rewritten) and no row changes. Each time the table equals the polars
    engine's, schema included, and the log has date statistics for pruning."""
    from ml_assets.features.spark_pipeline import materialize_window

    delta, spec, begin = bronze, FeatureSpec(), dt.date(2024, 3, 1)
    polars_window(delta, "silver/polars", begin, END)
    expected = delta.read("silver/polars")
    windows = [(begin, END), (dt.date(2024, 11, 4), dt.date(2024, 11, 11))]
    for version, (start, end) in enumerate(windows):
        written = materialize_window(spark, delta, spec, start, end, START, table="silver/spark")
        assert written is not None and written.version == version
        assert written.rows == expected.filter(Window("date", start, end).contains()).height
        assert delta.table("silver/spark").schema() == delta.table("silver/polars").schema()
        assert_same(expected, delta.read("silver/spark"))
    files = pl.DataFrame(delta.table("silver/spark").get_add_actions(flatten=True))
    assert files.select("num_records", "min.date", "max.date").null_count().sum_horizontal()[0] \
        == 0
    assert files.get_column("num_records").sum() == expected.height
    # the engines take turns on one table: polars rewrites Spark's straddling files
    assert polars_window(delta, "silver/spark", dt.date(2024, 12, 2), dt.date(2024, 12, 9)) == 2
    assert_same(expected, delta.read("silver/spark"))


def test_a_crash_before_the_commit_keeps_the_version(spark, bronze: DeltaStore) -> None:
    """Files staged but never committed (the process dies there): readers still see the
    previous version, and the retry replaces the window once."""
    from ml_assets.features.spark_pipeline import feature_window, read_spark_inputs
    from resources.spark import replace_window, stage_window

    delta, spec = bronze, FeatureSpec()
    start, end = dt.date(2025, 1, 6), dt.date(2025, 1, 13)
    polars_window(delta, "silver/crash", dt.date(2024, 12, 1), END)
    before, version = delta.read("silver/crash"), delta.version("silver/crash")
    inputs = read_spark_inputs(spark, delta, start, end, spec, START)
    assert inputs is not None
    frame = feature_window(inputs, spec, start, end)
    uri = delta.uri("silver/crash")
    staged = stage_window(spark, frame, uri, Window("date", start, end), KEYS)
    assert staged.adds and staged.rows == before.filter(
        Window("date", start, end).contains()).height
    assert delta.version("silver/crash") == version
    assert_frame_equal(delta.read("silver/crash").sort(KEYS), before.sort(KEYS))

    written = replace_window(spark, frame, uri, Window("date", start, end), KEYS)
    assert written.version == version + 1
    assert_same(before, delta.read("silver/crash"))


def test_a_row_outside_the_window_fails_the_write(spark, bronze: DeltaStore) -> None:
    from resources.spark import replace_window

    rows = bronze.spark_read(spark, "bronze/sales", "date", dt.date(2024, 5, 1),
                             dt.date(2024, 5, 3))
    with pytest.raises(Exception, match="outside date in"):
        replace_window(spark, rows, bronze.uri("silver/outside"),
                       Window("date", dt.date(2024, 5, 1), dt.date(2024, 5, 2)), KEYS)
    assert not bronze.exists("silver/outside")


# --- the real asset, through Dagster ------------------------------------------------------------


def test_the_features_asset_on_spark_writes_the_polars_table(spark, tmp_path: Path) -> None:
    """`features` materialized by a real Dagster instance over every partition, with the
    polars engine, then (table dropped) with engine=spark, then one partition again on Spark."""
    from ml_assets.definitions import build_definitions
    from ml_assets.partitions import first_day
    from resources.platform import PlatformSettings
    from resources.settings import load_settings
    from tests.conftest import small_world_env

    env = small_world_env(tmp_path / "home")
    settings = load_settings(env)
    first = first_day(settings)
    sim = settings.dataset.simulation
    assert sim is not None
    sim_world = World(WorldConfig(seed=sim.seed, n_stores=sim.n_stores, n_items=sim.n_items,
                                  start_date=first))
    delta = DeltaStore(root=str(settings.delta_root))
    sales = sim_world.sales(first, settings.today).with_columns(
        pl.col("units_sold").cast(pl.Float64), pl.col("on_promo").cast(pl.Int8),
        pl.lit("f.csv").alias("source_file"), pl.int_range(pl.len()).alias("row_number"))
    delta.replace_window("bronze/sales", sales, "date", first, settings.today, KEYS)
    for name in ("stores", "items"):
        delta.overwrite(f"bronze/{name}", getattr(sim_world, name))
    delta.overwrite("bronze/calendar", sim_world.calendar(first, settings.today))

    defs = build_definitions(settings, env["RETAIL_ML_DATASET"])
    features = defs.get_assets_def("features")
    keys = features.partitions_def.get_partition_keys()
    (tmp_path / "home" / "dagster").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "home" / "dagster"))

    def materialize(engine: str, start: str, end: str) -> dg.ExecuteInProcessResult:
        platform = PlatformSettings.from_settings(
            settings.model_copy(update={"engine": engine}), env["RETAIL_ML_DATASET"])
        return dg.materialize([features], instance=instance,
                              resources={**defs.resources, "platform": platform}, tags={
                                  "dagster/asset_partition_range_start": start,
                                  "dagster/asset_partition_range_end": end})

    assert materialize("polars", keys[0], keys[-1]).success
    expected = delta.read("silver/features")
    schema = delta.table("silver/features").schema()
    shutil.rmtree(delta.uri("silver/features"))

    result = materialize("spark", keys[0], keys[-1])
    assert result.success
    metadata = result.asset_materializations_for_node("features")[0].metadata
    assert metadata["engine"].value == "spark"
    assert metadata["dagster/row_count"].value == expected.height == sales.height
    assert delta.table("silver/features").schema() == schema
    assert_same(expected, delta.read("silver/features"))

    assert materialize("spark", keys[-5], keys[-5]).success
    assert delta.version("silver/features") == 1
    assert_same(expected, delta.read("silver/features"))
    instance.dispose()
