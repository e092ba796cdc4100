"""MLflow as a forecasting team sees it: an experiment marked as model training, runs named
after what ran, why and when, tags without 16-digit floats, and a `make mlflow` that starts
only what one person's UI needs. A real instance, MLflow on sqlite, the real Makefile target."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import psutil
import pytest
import requests

from ml_assets.training.registry import registry_client
from resources.tracking import EXPERIMENT_KIND, REGISTERED_MODEL, ensure_experiment, tag_value
from tests.conftest import TODAY, featured_world
from tests.e2e.servers import free_port, stop, wait_for_http

ROOT = Path(__file__).resolve().parents[2]
DECIMAL = re.compile(r"-?(\d+)\.(\d+)(?:[eE][-+]?\d+)?")


def _digits(text: str) -> int:
    """Significant digits of a decimal number's text ("0.05234" -> 4, "12.5" -> 3)."""
    whole, fraction = DECIMAL.fullmatch(text).groups()  # type: ignore[union-attr]
    return len((whole + fraction).lstrip("0"))


def _unrounded(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if DECIMAL.fullmatch(v) and _digits(v) > 4}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    world = featured_world(tmp_path_factory.mktemp("mlflow_ux") / "home")
    assert world.result.success
    result = dg.materialize(
        [world.defs.get_assets_def(a) for a in ("training_set", "demand_model")],
        resources=world.defs.resources, instance=world.instance,
        tags={"retail_ml/trigger": "test"},
        run_config={"ops": {"demand_model": {"config": {"objectives": ["tweedie"]}}}})
    mlflow.end_run()
    assert result.success
    (materialization,) = [m for m in result.get_asset_materialization_events()
                          if m.asset_key == dg.AssetKey("demand_model")]
    run_id = materialization.materialization.metadata["mlflow_run_id"].value
    client = registry_client(world.settings.mlflow_tracking_uri)
    yield {"world": world, "client": client, "run": client.get_run(str(run_id))}
    world.instance.dispose()


def test_experiment_is_marked_as_model_training(world) -> None:
    client, run = world["client"], world["run"]
    key, kind = EXPERIMENT_KIND
    assert client.get_experiment(run.info.experiment_id).tags.get(key) == kind
    # an experiment created before the mark gets it, and keeps its id
    uri = world["world"].settings.mlflow_tracking_uri
    old = client.create_experiment("created-before-the-mark")
    assert key not in client.get_experiment(old).tags
    assert ensure_experiment(uri, "created-before-the-mark", None) == old
    assert client.get_experiment(old).tags.get(key) == kind


def test_run_is_named_after_the_asset_the_trigger_and_the_day(world) -> None:
    # the settings' today: pinned to TODAY in the tests, the calendar's day otherwise
    assert world["run"].info.run_name == f"demand_model · test · {TODAY.isoformat()}"


def test_run_and_version_tags_keep_four_significant_digits(world) -> None:
    client, run = world["client"], world["run"]
    version = client.get_model_version_by_alias(REGISTERED_MODEL, "challenger")
    assert version.run_id == run.info.run_id
    assert _unrounded(run.data.tags) == {}
    assert _unrounded(version.tags) == {}
    assert run.data.tags["dagster_run_id"] and version.tags["trigger"] == "test"


def test_evaluation_tags_keep_four_significant_digits(world) -> None:
    """`model_evaluation` writes the backtest WAPEs as tags of the version it judged."""
    w = world["world"]
    result = dg.materialize([w.defs.get_assets_def("model_evaluation")],
                            resources=w.defs.resources, instance=w.instance,
                            tags={"retail_ml/trigger": "test"}, raise_on_error=False)
    mlflow.end_run()
    assert result.success
    client = world["client"]
    versions = client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    assert any("backtest_wape" in v.tags for v in versions)
    assert {v.version: _unrounded(v.tags) for v in versions} == {v.version: {} for v in versions}


@pytest.mark.parametrize(("value", "text"), [
    (0.52341894756, "0.5234"), ("0.52341894756", "0.5234"), (np.float32(1 / 3), "0.3333"),
    (1234567.8, "1.235e+06"), (0.5, "0.5"), (7, "7"), (True, "True"),
    ("3.17.2", "3.17.2"), ("1234e56", "1234e56"), ("make demo", "make demo")])
def test_tag_value_rounds_floats_only(value: object, text: str) -> None:
    assert tag_value(value) == text


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def test_make_mlflow_starts_only_the_ui(tmp_path: Path) -> None:
    """`make mlflow` as a user starts it: the web server and no job runner (MLflow 3 starts
    eight more processes for GenAI jobs by default), and a link that opens the experiment in
    the model-training view."""
    home, port = tmp_path / "home", free_port()
    experiment = ensure_experiment(f"sqlite:///{home}/mlflow/mlflow.db", "retail-demand", None)
    env = {k: v for k, v in os.environ.items() if k not in ("BENTOML_HOME", "DAGSTER_HOME")}
    log = home / "make-mlflow.log"
    # -o: never re-sync the environment from inside a test
    proc = subprocess.Popen(["make", "-s", "-o", ".venv/.synced", "mlflow", f"PORT={port}"],
                            cwd=ROOT, env={**env, "RETAIL_ML_HOME": str(home)},
                            stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", proc, log, "make mlflow", timeout=240)
        time.sleep(5)  # MLflow starts its job runner next to the server; give it the time
        tree = [p for p in _tree(proc.pid) if p.name() not in ("make", "bash", "sh")]
        commands = [" ".join(p.cmdline()) for p in tree]
        assert len(tree) == 2, commands  # `mlflow ui` and its one uvicorn worker
        assert not [c for c in commands if "huey" in c or "_job_runner" in c], commands
        assert all(p.environ().get("MLFLOW_DISABLE_TELEMETRY") == "true" for p in tree)
        info = requests.get(f"{url}/api/3.0/mlflow/server-info", timeout=30).json()
        assert info["features_enabled"]["gateway"] is False
        assert (f"{url}/#/experiments/{experiment}?workflowType=machine_learning"
                in log.read_text())
    finally:
        stop(proc, timeout=60)
