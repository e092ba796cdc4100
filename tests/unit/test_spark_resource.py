"""The Spark resource and the delta-rs side of Spark's Delta I/O, without starting a JVM: the
settings that configure the session, the polars default never paying for Spark, the snapshot's
file list, statistics from Parquet footers and the Delta schema of Spark types."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from resources.delta import DeltaStore
from resources.delta_files import Window, footer_adds, snapshot_files
from resources.platform import PlatformSettings
from resources.settings import load_settings
from resources.spark import delta_schema, spark_config, spark_resource

ROOT = Path(__file__).resolve().parents[2]


def test_settings_configure_the_engine_and_the_session(tmp_path: Path) -> None:
    settings = load_settings({"RETAIL_ML_HOME": str(tmp_path), "RETAIL_ML_ENGINE": "spark",
                              "RETAIL_ML_SPARK_MASTER": "spark://master:7077",
                              "RETAIL_ML_SPARK_SHUFFLE_PARTITIONS": "64",
                              "RETAIL_ML_SPARK_DRIVER_MEMORY": "8g"})
    resource = spark_resource(settings)
    conf = spark_config(resource.master, resource.shuffle_partitions, resource.driver_memory)
    assert conf["spark.master"] == "spark://master:7077"
    assert conf["spark.sql.shuffle.partitions"] == "64"
    assert conf["spark.driver.memory"] == "8g"
    # the engine reaches the assets through the platform resource
    assert PlatformSettings.from_settings(settings, "simulated").get().engine == "spark"
    defaults = load_settings({"RETAIL_ML_HOME": str(tmp_path)})
    assert (defaults.engine, defaults.spark_master) == ("polars", "local[*]")


def test_the_polars_default_pays_nothing_for_spark(tmp_path: Path) -> None:
    """The feature asset and the Spark resource import no pyspark, and building every local
    resource starts no JVM (mlflow imports pyspark on its own when installed: no JVM either)."""
    code = f"""
import sys
import ml_assets.features.assets, resources.spark
assert "pyspark" not in sys.modules and "py4j" not in sys.modules, "pyspark imported"
from resources import build_resources
from resources.settings import load_settings
resources = build_resources(load_settings({{"RETAIL_ML_HOME": {str(tmp_path)!r}}}), "simulated")
assert resources["spark"]._pyspark is None
if "pyspark" in sys.modules:
    from pyspark import SparkContext
    assert SparkContext._gateway is None and SparkContext._active_spark_context is None
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def _days(start: dt.date, n: int) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(n)]


def test_snapshot_files_skip_files_outside_the_window(tmp_path: Path) -> None:
    store = DeltaStore(root=str(tmp_path / "delta"))
    for first in (dt.date(2024, 1, 1), dt.date(2024, 2, 1)):
        frame = pl.DataFrame({"date": _days(first, 10), "v": range(10)})
        store.replace_window("t", frame, "date", first, first + dt.timedelta(days=10))
    table = store.table("t")
    assert table is not None
    assert len(snapshot_files(table)) == 2
    january = snapshot_files(table, Window("date", dt.date(2024, 1, 5), dt.date(2024, 1, 6)))
    assert len(january) == 1
    assert pl.read_parquet(january[0]).get_column("date").max() == dt.date(2024, 1, 10)
    assert snapshot_files(table, Window("date", dt.date(2025, 1, 1), dt.date(2025, 2, 1))) == []


def test_footer_statistics_cover_every_row_group(tmp_path: Path) -> None:
    """What another writer's files get in the log: row count, min and max of the pruning
    columns over all row groups, null counts; and every column's null count."""
    folder = tmp_path / "table" / "spark-x"
    folder.mkdir(parents=True)
    frame = pa.table({"date": _days(dt.date(2024, 3, 1), 6),
                      "store_id": ["S2", "S1", None, "S3", "S1", "S2"],
                      "x": [1.0, None, None, 2.0, None, 3.0]})
    pq.write_table(frame, folder / "part-0.parquet", row_group_size=4)
    (folder / ".part-0.parquet.crc").write_text("")  # Hadoop's checksum files are no data
    ((add, nulls),) = footer_adds(str(tmp_path / "table"), "spark-x", ["date", "store_id"])
    assert add.path == "spark-x/part-0.parquet"
    assert add.size == (folder / "part-0.parquet").stat().st_size
    assert json.loads(add.stats) == {
        "numRecords": 6,
        "minValues": {"date": "2024-03-01", "store_id": "S1"},
        "maxValues": {"date": "2024-03-06", "store_id": "S3"},
        "nullCount": {"date": 0, "store_id": 1},
    }
    assert nulls == {"date": 0, "store_id": 1, "x": 3}


def test_spark_types_give_the_polars_engines_delta_schema(tmp_path: Path) -> None:
    from pyspark.sql import types as T  # no JVM: types are plain Python

    spark_types = T.StructType([
        T.StructField("date", T.DateType(), False), T.StructField("store_id", T.StringType()),
        T.StructField("day_of_week", T.ByteType(), False),
        T.StructField("day_of_year", T.ShortType()), T.StructField("age", T.LongType()),
        T.StructField("price", T.DoubleType()), T.StructField("flag", T.BooleanType())])
    store = DeltaStore(root=str(tmp_path / "delta"))
    store.overwrite("t", pl.DataFrame(schema={
        "date": pl.Date, "store_id": pl.String, "day_of_week": pl.Int8, "day_of_year": pl.Int16,
        "age": pl.Int64, "price": pl.Float64, "flag": pl.Boolean}))
    table = store.table("t")
    assert table is not None
    assert delta_schema(spark_types) == table.schema()
