"""The README's commands, run as a user runs them: `retail-ml simulate` and `retail-ml demo`."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import requests

from ml_assets.partitions import first_day
from resources.settings import load_settings
from tests.conftest import small_world_env
from tests.e2e.servers import free_port

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


def test_simulate_days_continues_the_same_world_on_a_later_day(tmp_path: Path) -> None:
    """The world's first day is kept at the first landing: derived again a day later, it would
    start a day later and disagree with the days already landed."""
    home = tmp_path / "home"
    env = small_world_env(home, offset_days=20, RETAIL_ML_TODAY="2025-03-11")
    assert _cli(env, "simulate", "--history").returncode == 0
    later = {**env, "RETAIL_ML_TODAY": "2025-03-12"}
    done = _cli(later, "simulate", "--days", "3")
    assert done.returncode == 0, done.stderr
    assert "sales_2025-02-19.csv .. sales_2025-02-21.csv" in done.stdout
    files = sorted((home / "landing" / "sales").glob("sales_*.csv"))
    assert len(files) == 183 and files[0].name == "sales_2024-08-23.csv"
    assert first_day(load_settings(later)).isoformat() == "2024-08-23"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("demo") / "home"
    env = small_world_env(home)
    done = _cli(env, "demo")
    assert done.returncode == 0, done.stderr[-3000:]
    return {"home": home, "env": env, "out": done.stdout}


def test_demo_runs_the_whole_graph_and_prints_the_summary(demo: dict) -> None:
    out, home = demo["out"], demo["home"]
    assert "retail-ml demo: succeeded" in out
    assert re.search(r"challenger +v1: backtest WAPE [0-9.]+ vs seasonal naive [0-9.]+", out)
    assert "champion         demand_forecaster v1" in out
    assert re.search(r"Bento +demand_forecaster:\w+", out), out
    assert (home / "bentoml" / "bentos" / "demand_forecaster").is_dir()
    assert "gold/batch_forecasts" in out and "make serve" in out and "make dev" in out
    # the run is recorded where `make dev` will find it
    assert (home / "dagster" / "history" / "runs.db").exists()


def _make(target: str, env: dict[str, str], port: int) -> subprocess.Popen:
    # BENTOML_HOME and DAGSTER_HOME unset: the Makefile derives them from RETAIL_ML_HOME
    base = {k: v for k, v in os.environ.items() if k not in ("BENTOML_HOME", "DAGSTER_HOME")}
    return subprocess.Popen(["make", "-s", target, f"PORT={port}"], cwd=ROOT,
                            env={**base, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for(url: str, proc: subprocess.Popen, seconds: float = 120) -> requests.Response:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url}: the server exited: {proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
        try:
            response = requests.get(url, timeout=5)
            if response.ok:
                return response
        except requests.RequestException:
            pass
        time.sleep(1)
    pytest.fail(f"{url} did not answer within {seconds} s")


@contextlib.contextmanager
def _running(target: str, env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    """`make <target> PORT=<a free port>`: a user's own server on the default port is left
    alone. Yields the server's URL and process."""
    port = free_port()
    proc = _make(target, env, port)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.mark.timeout(300)
def test_make_serve_answers_with_the_batch_forecast(demo: dict) -> None:
    table = demo["home"] / "delta" / "gold" / "batch_forecasts"
    batch = pl.read_delta(str(table)).row(0, named=True)
    request = {"store_id": batch["store_id"], "item_id": batch["item_id"],
               "date": batch["date"].isoformat()}
    with _running("serve", demo["env"]) as (url, proc):
        _wait_for(f"{url}/readyz", proc)
        answer = requests.post(f"{url}/forecast", timeout=30, json=request).json()
        # a what-if: the row is rebuilt from the online state that `full_pipeline` published
        promoted = requests.post(f"{url}/forecast", timeout=30,
                                 json={**request, "on_promo": 1})
    assert answer["units"] == pytest.approx(batch["units_forecast"], abs=1e-4)
    # with its interval, as the batch forecast has it
    assert batch["lower"] <= batch["units_forecast"] <= batch["upper"]
    assert (answer["lower"], answer["upper"]) == pytest.approx((batch["lower"], batch["upper"]),
                                                               abs=1e-3)
    assert answer["model_version"] == batch["model_version"] == "1"
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["units"] >= 0 and promoted.json()["model_version"] == "1"


@pytest.mark.timeout(300)
def test_make_mlflow_shows_the_registered_versions_and_aliases(demo: dict) -> None:
    with _running("mlflow", demo["env"]) as (url, proc):
        _wait_for(f"{url}/health", proc)
        model = requests.get(f"{url}/api/2.0/mlflow/registered-models/get",
                             params={"name": "demand_forecaster"}, timeout=30).json()
    aliases = {a["alias"]: a["version"] for a in model["registered_model"]["aliases"]}
    assert aliases == {"challenger": "1", "champion": "1"}


def test_make_bento_export_writes_the_champions_bento(demo: dict, tmp_path: Path) -> None:
    """The CI workflow's `bento` job: `make demo`, then this target uploads the file."""
    out = tmp_path / "demand_forecaster.bento"
    base = {k: v for k, v in os.environ.items() if k not in ("BENTOML_HOME", "DAGSTER_HOME")}
    done = subprocess.run(["make", "-s", "bento-export", f"OUT={out}"], cwd=ROOT,
                          env={**base, **demo["env"]}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with tarfile.open(out) as archive:
        names = [n.removeprefix("./") for n in archive.getnames()]
    assert "bento.yaml" in names and any(n.startswith("models/demand_forecaster") for n in names)


def test_second_demo_on_unchanged_data_keeps_the_champion(demo: dict) -> None:
    again = _cli(demo["env"], "demo")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "the promotion gate kept the current champion" in again.stdout
    assert "challenger       v2" in again.stdout


def test_reproduce_gives_the_champion_s_predictions(demo: dict) -> None:
    done = _cli(demo["env"], "reproduce", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"version 1 refitted from gold/training_set at Delta version \d+ "
                     r"\(\w+, \d+ rounds\): identical predictions on \d+ rows", done.stdout)


def test_rollback_with_nothing_to_roll_back_to_says_so(demo: dict) -> None:
    # after the second demo the gate kept v1: no previous champion exists
    done = _cli(demo["env"], "rollback")
    assert done.returncode == 1
    assert "has no previous version to roll back from or to" in done.stderr
