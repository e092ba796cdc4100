"""The accuracy benchmark end to end on a tiny simulated world: the platform's real assets on a
real Dagster instance, mlforecast + LightGBM at the same origins, both baselines, one report."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"platform", "mlforecast", "seasonal_naive", "moving_average"}


def test_accuracy_bench_quick_scores_every_method_on_the_same_rows(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.accuracy_bench", "--quick", "--datasets",
         "simulated", "--sim-stores", "3", "--sim-items", "4", "--sim-days", "180",
         "--rounds", "60", "--out", str(out), "--work", str(tmp_path / "work")],
        cwd=ROOT, env={**os.environ, "RETAIL_ML_HOME": str(tmp_path / "unused")},
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]

    report = json.loads((out / "accuracy.json").read_text())
    (result,) = report["datasets"]
    assert result["name"] == "simulated" and "error" not in result, result
    # and, on simulated data, the oracles (the world's expected demand, and that as expected
    # at each origin) as references
    assert set(result["methods"]) == METHODS | {"oracle", "origin_oracle"}
    for name, method in result["methods"].items():
        assert math.isfinite(method["wape"]), (name, method)
        # every method is scored on the same rows
        assert method["n"] == result["rows"] > 0
        assert set(method["by_bucket"]) == set(result["buckets"])
    assert result["buckets"] == ["1-7", "8-14", "15-28"]
    assert len(result["origins"]) == 3
    # the platform's numbers are its own backtest's: the WAPE it reported on its rows
    assert result["rows_without_every_forecast"] == 0
    assert abs(result["methods"]["platform"]["wape"] - result["platform_reported_wape"]) < 1e-3
    # the recipe the platform chose, with every candidate's validation score
    assert result["platform_recipe"]["objective"] in ("squared_error", "tweedie")
    assert len(result["platform_recipe"]["valid_wape"]) == 4

    markdown = (out / "accuracy.md").read_text()
    for title in ("platform (XGBoost challenger)", "mlforecast + LightGBM", "seasonal naive",
                  "moving average", "## Where each approach wins"):
        assert title in markdown
