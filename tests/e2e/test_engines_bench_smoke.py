"""`make bench` at smoke scale, engines part: polars, Spark local and pandas run the same feature
job end to end and write equal tables. Speed is never asserted here (results/engines.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JAVA = shutil.which("java") or (os.environ.get("JAVA_HOME") and
                                Path(os.environ["JAVA_HOME"], "bin", "java").exists())


@pytest.mark.skipif(not JAVA, reason="Java is not installed (no `java` on PATH or in "
                                     "JAVA_HOME): the Spark engine needs a JVM, Java 17")
def test_engines_benchmark_runs_and_engines_agree(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.engines_bench", "--series", "30", "--days", "400",
         "--repeats", "0", "--shuffle-partitions", "2", "--driver-memory", "1g",
         "--spark-conf", "spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=1",
         "--cache", str(tmp_path / "cache"), "--out", str(out)],
        cwd=ROOT, env={**os.environ, "RETAIL_ML_HOME": str(tmp_path / "home")},
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "engines.json").read_text())
    assert set(report["summary"]) == {"polars", "spark", "pandas"}
    assert report["parity"]["equal"], report["parity"]
    assert set(report["parity"]["by_engine"]) == {"spark", "pandas"}
    assert report["ratios"]["spark"]["warm"] > 0
    assert (out / "engines.md").read_text().startswith("# Engines benchmark")
