"""The README's commands, run as a user runs them: `retail-ml simulate` and `retail-ml demo`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import small_world_env

ROOT = Path(__file__).resolve().parents[2]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # DAGSTER_HOME unset: the CLI must default it under RETAIL_ML_HOME (make exports its own)
    base = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return subprocess.run([sys.executable, "-m", "ml_assets.cli", *args], cwd=ROOT,
                          env={**base, **env}, capture_output=True, text=True, timeout=600)


def test_simulate_lands_history_then_days_up_to_yesterday(tmp_path: Path) -> None:
    env = small_world_env(tmp_path / "home", offset_days=10, RETAIL_ML_TODAY="2025-03-11")
    history = _cli(env, "simulate", "--history")
    assert history.returncode == 0, history.stderr
    files = sorted((tmp_path / "home" / "landing" / "sales").glob("sales_*.csv"))
    assert len(files) == 180 and files[-1].name == "sales_2025-02-28.csv"
    rest = _cli(env, "simulate", "--scenario", "level_shift:1.5")
    assert rest.returncode == 0, rest.stderr
    files = sorted((tmp_path / "home" / "landing" / "sales").glob("sales_*.csv"))
    assert files[-1].name == "sales_2025-03-10.csv"  # yesterday, never today
    assert "level_shift" in (tmp_path / "home" / "landing" / "scenarios.json").read_text()
    again = _cli(env, "simulate")
    assert "up to date" in again.stdout


def test_demo_runs_the_whole_graph_and_prints_the_summary(tmp_path: Path) -> None:
    env = small_world_env(tmp_path / "home")
    done = _cli(env, "demo")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "retail-ml demo: succeeded" in out
    assert re.search(r"challenger +v1: backtest WAPE [0-9.]+ vs seasonal naive [0-9.]+", out)
    assert "champion         demand_forecaster v1" in out
    bento_tag = re.search(r"Bento +(demand_forecaster:\w+)", out)
    assert bento_tag, out
    assert (tmp_path / "home" / "bentoml" / "bentos" / "demand_forecaster").is_dir()
    assert "gold/batch_forecasts" in out and "make serve" in out and "make dev" in out
    # the run is recorded where `make dev` will find it
    assert (tmp_path / "home" / "dagster" / "history" / "runs.db").exists()

    # a second demo on unchanged data retrains, and the gate keeps the champion: not an error
    again = _cli(env, "demo")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "the promotion gate kept the current champion" in again.stdout
    assert "challenger       v2" in again.stdout
