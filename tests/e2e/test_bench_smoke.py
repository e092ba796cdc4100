"""`make bench` at smoke scale: the benchmark runs end to end and its engines agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_feature_benchmark_runs_and_engines_agree(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.features_bench", "--series", "60", "--days", "400",
         "--repeats", "1", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")],
        cwd=ROOT, env={**os.environ, "RETAIL_ML_HOME": str(tmp_path / "home")},
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "features.json").read_text())
    assert report["parity"]["equal"], report["parity"]
    assert (tmp_path / "out" / "features.md").read_text().startswith("# Feature benchmark")


def test_m5_bench_runs_at_smoke_scale_and_matches_the_one_piece_build(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.m5_bench", "--series", "120", "--days", "400",
         "--chunks", "50", "--check", "--cache", str(tmp_path / "cache"),
         "--out", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = json.loads((tmp_path / "out" / "m5.json").read_text())["runs"]
    assert run["chunks"] == 3 and run["rows"] > 0
    assert run["equal_to_unchunked"] is True, run
