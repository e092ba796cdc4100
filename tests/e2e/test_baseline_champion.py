"""A first challenger that cannot beat seasonal naive still leaves a champion: the baseline.

The data repeat one week exactly (closed on Sundays), so seasonal naive is perfect and no
XGBoost model can beat it. `retail-ml demo` must then register the baseline, make it champion,
write batch forecasts, build a Bento, say so in its summary, and the Bento must answer over HTTP
with the batch forecasts (closed days exactly 0).
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import requests

from tests.e2e.bento_world import bento_server
from tests.e2e.servers import wait_for_bento

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[2]
END = dt.date(2024, 6, 30)  # a Sunday
DAYS, HORIZON, STORES = 140, 14, 3
WEEK = (100, 80, 90, 120, 160, 210, 0)  # Monday .. Sunday (closed)

YAML = f"""
name: weekly_pattern
frequency: daily
horizon: {HORIZON}
end_date: {END}
sales:
  path: data/train.csv
  columns: {{date: Date, store_id: Store, units_sold: Sales}}
  constants: {{item_id: all}}
plan:
  path: data/test.csv
  columns: {{date: Date, store_id: Store}}
  constants: {{item_id: all}}
covariates:
  - {{name: Open, type: numeric, default: 1}}
zero_when: {{Open: 0}}
"""


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("baseline")
    days = [END - dt.timedelta(days=i) for i in range(DAYS)]
    future = [END + dt.timedelta(days=i) for i in range(1, HORIZON + 1)]
    sales = [[s, d.isoformat(), WEEK[d.weekday()] * s, int(d.weekday() != 6)]
             for d in days for s in range(1, STORES + 1)]
    _write(root / "data" / "train.csv", ["Store", "Date", "Sales", "Open"], sales)
    plan = [[s, d.isoformat(), int(d.weekday() != 6)] for d in future
            for s in range(1, STORES + 1)]
    _write(root / "data" / "test.csv", ["Store", "Date", "Open"], plan)
    (root / "weekly_pattern.yaml").write_text(YAML)
    env = {"RETAIL_ML_HOME": str(root / "home"),
           "RETAIL_ML_DATASET": str(root / "weekly_pattern.yaml"),
           "RETAIL_ML_TODAY": (END + dt.timedelta(days=1)).isoformat()}
    base = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "BENTOML_HOME")}
    done = subprocess.run([sys.executable, "-m", "ml_assets.cli", "demo"], cwd=ROOT,
                          env={**base, **env}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"root": root, "env": {**base, **env,
                                  "BENTOML_HOME": str(root / "home" / "bentoml")},
            "out": done.stdout}


def test_demo_says_the_baseline_is_champion_and_why(world: dict) -> None:
    out = world["out"]
    assert "retail-ml demo: succeeded" in out, out
    assert "does not beat the best baseline, seasonal_naive" in out, out
    assert "champion         demand_forecaster v2, the seasonal_naive baseline" in out, out
    assert "make serve" in out


def test_the_baseline_forecasts_are_written_and_served_over_http(world: dict) -> None:
    home = world["root"] / "home"
    batch = pl.read_delta(str(home / "delta" / "gold" / "batch_forecasts")).sort(
        "store_id", "date")
    assert batch.height == STORES * HORIZON
    assert set(batch.get_column("model_version")) == {"2"}
    # seasonal naive repeats last week: exactly the pattern, and 0 on closed Sundays
    expected = [WEEK[d.weekday()] * int(s) for s, d in batch.select("store_id", "date").rows()]
    assert batch.get_column("units_forecast").to_list() == pytest.approx(expected)
    # the baseline's intervals come from its own backtest residuals: none, it never erred
    assert batch.get_column("lower").to_list() == pytest.approx(expected)
    assert batch.get_column("upper").to_list() == pytest.approx(expected)
    assert set(batch.get_column("interval_level")) == {0.8}

    with bento_server("demand_forecaster:latest", world["env"], ROOT,
                      home / "serve.log") as (url, proc):
        wait_for_bento(url, proc, home / "serve.log")
        info = requests.get(f"{url}/model", timeout=30).json()
        rows = batch.select("store_id", "item_id", pl.col("date").cast(pl.Utf8)).to_dicts()
        answers = requests.post(f"{url}/forecast_batch", json={"requests": rows},
                                timeout=60).json()
        monday = next(r for r in rows if dt.date.fromisoformat(r["date"]).weekday() == 0)
        closing = requests.post(f"{url}/forecast", timeout=30,
                                json={**monday, "covariates": {"Open": 0}})
        unknown = requests.post(f"{url}/forecast", timeout=30,
                                json={**monday, "covariates": {"Opn": 0}})
    assert info["model_version"] == "2" and info["kind"] == "seasonal_naive"
    assert info["covariates"] == ["Open"]
    assert [a["units"] for a in answers] == pytest.approx(expected)
    assert [a["lower"] for a in answers] == pytest.approx(expected)
    assert [a["upper"] for a in answers] == pytest.approx(expected)
    assert info["intervals"]["level"] == 0.8 and info["intervals"]["missing"] is None
    # a what-if closing an open day: forced to 0 by the dataset's rule
    assert closing.status_code == 200, closing.text
    assert closing.json()["units"] == 0.0
    assert unknown.status_code == 422 and "covariates.Opn" in unknown.text
