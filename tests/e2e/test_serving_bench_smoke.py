"""`make bench` at smoke scale, serving part: raw ASGI app and Bento both served every request,
with the same forecasts. Speed is never asserted here (benchmarks/README.md has the numbers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serving_benchmark_runs_and_servers_agree(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "RETAIL_ML_HOME": str(tmp_path / "home")}
    env.pop("RETAIL_ML_API_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving_bench", "--quick", "--cache",
         str(tmp_path / "cache"), "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "serving.json").read_text())
    assert report["summary"]["non_2xx_or_errors"] == 0
    assert report["parity"]["equal"], report["parity"]
    for name in ("raw", "shipped"):
        served = report["summary"]["variants"][name]
        assert served["max_rps"] > 0 and served["fixed_achieved_rps"] > 0, served
        assert served["fixed_p99_ms"] > 0 and served["cpu_ms_per_request"] > 0, served
        assert all(v > 0 for v in served["batch_forecasts_per_s"].values()), served
    assert report["runs"]["raw"]["ping_max"]["rps"] > 0
    assert (out / "serving.md").read_text().startswith("# Serving benchmark")
