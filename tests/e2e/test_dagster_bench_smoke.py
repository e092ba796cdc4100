"""`make bench`'s Dagster benchmark at smoke scale, and the instance setting it measures: a run
over a partition range records one "planned" event per asset, not one per partition."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DAYS = 90  # the Rossmann-shaped generator needs about 80 days


def test_a_ranged_run_plans_once_per_asset_and_materializes_every_partition(
        tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.dagster_bench", "--quick", "--days", str(DAYS),
         "--variant", "sqlite, one planned event per asset", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "dagster.json").read_text())
    (run,) = report["variants"].values()
    assert run["success"] and run["partitions"] == DAYS + 1, run
    # sales, sales_quarantine and features: a materialization per partition each; planned
    # events only per asset (the ingest group's dimensions and plan too), never per partition
    assert run["materialization_events"] >= 3 * run["partitions"], run
    assert 0 < run["planned_events"] < run["partitions"], run
    assert "| sqlite, one planned event per asset | 91 |" in (tmp_path / "dagster.md").read_text()
