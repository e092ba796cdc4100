"""A small local Spark session for the integration tests of the Spark write path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

JAVA = shutil.which("java") or (os.environ.get("JAVA_HOME") and
                                Path(os.environ["JAVA_HOME"], "bin", "java").exists())


@pytest.fixture(scope="module")
def spark():
    if not JAVA:
        pytest.skip("Java is not installed: the Spark engine needs a JVM, Java 17")
    from resources.spark import SparkEngine

    session = SparkEngine(master="local[1]", shuffle_partitions=2, driver_memory="1g", conf={
        "spark.ui.enabled": "false",
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
    }).session()
    yield session
    session.stop()
