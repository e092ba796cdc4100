"""`dagster dev` (webserver + daemon, what `make dev` starts) on a free port, through GraphQL.

The module's one webserver runs `features_job`, then `full_pipeline` over the whole partition
range; the Bento that run built is then served by `bentoml serve demand_forecaster:latest` and
must answer what the run's batch forecasts hold.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bentoml
import polars as pl
import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from ml_assets.definitions import build_definitions
from ml_assets.deployment.pointer import read_champion
from ml_assets.simulation.landing import land
from resources.settings import load_settings
from tests.conftest import small_world_env
from tests.e2e.servers import free_port, wait_for_bento

pytestmark = pytest.mark.timeout(900)  # a test's timeout includes its module fixtures' setup

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 600  # seconds for full_pipeline on the small world (2 cores)
# One run at a time: the landing sensor's ingest run queues behind (or ahead of) ours instead
# of writing the same bronze tables concurrently.
DAGSTER_YAML = "run_queue:\n  max_concurrent_runs: 1\n"

ASSETS_QUERY = """
{ assetNodes { assetKey { path } groupName isPartitioned
    partitionDefinition { description }
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
    assetMaterializations(limit: 1) { metadataEntries { label } } } }
"""

EVALUATION_QUERY = """
{ assetNodes(assetKeys: [{path: ["model_evaluation"]}]) {
    assetChecksOrError { ... on AssetChecks { checks { name blocking
        executionForLatestMaterialization { runId status evaluation { success description } } } } }
    assetMaterializations(limit: 1) { runId metadataEntries {
        label ... on MarkdownMetadataEntry { mdStr } } } } }
"""

LOCATIONS_QUERY = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message stack } } } } } }
"""

RUN_ERRORS_QUERY = """
query RunErrors($runId: ID!) { logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename
        ... on MessageEvent { message level stepKey }
        ... on ErrorEvent { error { message cause { message cause { message } } } } } }
    ... on PythonError { message } } }
"""


def _graphql(url: str, query: str, **variables: object) -> dict:
    body = requests.post(f"{url}/graphql", json={"query": query, "variables": variables},
                         timeout=60).json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _stop(proc: subprocess.Popen) -> None:
    """Stops a server started in its own session, with the workers it runs as children."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_for_code_location(url: str, proc: subprocess.Popen, log: Path,
                            timeout: float = 180) -> None:
    """Waits for the webserver, then for `ml_assets.definitions` to load (or fails with its
    load error)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster dev exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            entries = _graphql(url, LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
        except requests.RequestException:  # not listening yet
            entries = []
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            errors = [e["locationOrLoadError"] for e in entries
                      if e["locationOrLoadError"]["__typename"] == "PythonError"]
            assert not errors, "".join([errors[0]["message"], *errors[0]["stack"]])
            return
        time.sleep(1)
    pytest.fail(f"dagster dev not ready within {timeout} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("web") / "home"
    # The daemon runs retrain_on_drift too. 24 series make a week's pooled demand too noisy for
    # the default drift thresholds, and a retrain it launched would queue behind (and race)
    # the run under test: this policy never fires (the loop has its own test).
    policy = home / "quiet_policy.yaml"
    home.mkdir(parents=True)
    policy.write_text("drift: {share: 1.0, key_feature_psi: 1000}\n"
                      "performance: {wape_ratio: 1000, abs_bias: 1000}\n")
    world_env = small_world_env(home, RETAIL_ML_RETRAIN_POLICY=str(policy))
    env = {**os.environ, **world_env, "DAGSTER_HOME": str(home / "dagster")}
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text(DAGSTER_YAML)
    settings = load_settings(env)
    land(settings)
    partitions = build_definitions(settings, world_env["RETAIL_ML_DATASET"]).resolve_job_def(
        "full_pipeline").partitions_def
    keys = partitions.get_partition_keys()
    port, log = free_port(), home / "dagster-dev.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1",
         "-p", str(port)], cwd=ROOT, env=env, stdout=open(log, "w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_code_location(url, proc, log)
        yield {"url": url, "port": port, "log": log, "home": home, "env": world_env,
               "range": {"dagster/asset_partition_range_start": keys[0],
                         "dagster/asset_partition_range_end": keys[-1]}}
    finally:
        _stop(proc)  # dagster dev runs the daemon and the code server as child processes


def _run_errors(url: str, run_id: str) -> str:
    """The run's ERROR-level messages from its event log, each with its error's (and cause's)
    message; the stacks are in the dagster dev log."""
    try:
        logs = _graphql(url, RUN_ERRORS_QUERY, runId=run_id)["logsForRun"]
    except (requests.RequestException, AssertionError) as exc:
        return f"(could not fetch the event log: {exc})"
    lines = []
    for event in logs.get("events", []):
        if event.get("level") != "ERROR" and not event.get("error"):
            continue
        lines.append(f"[{event['__typename']} {event.get('stepKey')}] {event.get('message')}")
        error = event.get("error")
        while error:
            lines += [f"    {line}" for line in error["message"].strip().splitlines()[:2]]
            error = error.get("cause")
    return "\n".join(lines) or logs.get("message", "(no error events)")


def _run_to_completion(webserver: dict, job: str) -> str:
    """Launches `job` over the whole partition range; fails unless the run succeeds."""
    client = DagsterGraphQLClient("127.0.0.1", port_number=webserver["port"])
    run_id = client.submit_job_execution(job, tags=webserver["range"])
    deadline = time.monotonic() + RUN_TIMEOUT
    status = None
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    if status != "SUCCESS":
        pytest.fail(f"{job} run {run_id} ended {status}\n--- run errors ---\n"
                    f"{_run_errors(webserver['url'], run_id)}\n--- dagster dev log ---\n"
                    f"{webserver['log'].read_text()[-4000:]}")
    return run_id


@pytest.fixture(scope="module")
def full_pipeline_run(webserver: dict) -> str:
    return _run_to_completion(webserver, "full_pipeline")


@pytest.fixture(scope="module")
def forecaster(webserver: dict, full_pipeline_run: str) -> Iterator[bentoml.SyncHTTPClient]:
    """`bentoml serve demand_forecaster:latest`: the Bento the pipeline built."""
    home = webserver["home"]
    port, log = free_port(), home / "bentoml-serve.log"
    env = {**os.environ, **webserver["env"], "BENTOML_HOME": str(home / "bentoml"),
           "BENTOML_DO_NOT_TRACK": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", "demand_forecaster:latest",
         "--host", "127.0.0.1", "--port", str(port)], cwd=home, env=env, stdout=open(log, "w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_bento(url, proc, log)
        with bentoml.SyncHTTPClient(url, timeout=60) as client:
            yield client
    finally:
        _stop(proc)


def test_full_pipeline_passes_the_gate_and_reports_plots(webserver: dict,
                                                         full_pipeline_run: str) -> None:
    (node,) = _graphql(webserver["url"], EVALUATION_QUERY)["assetNodes"]
    (gate,) = node["assetChecksOrError"]["checks"]
    assert (gate["name"], gate["blocking"]) == ("promotion_gate", True)
    execution = gate["executionForLatestMaterialization"]
    assert (execution["runId"], execution["status"]) == (full_pipeline_run, "SUCCEEDED")
    assert execution["evaluation"]["success"], execution["evaluation"]["description"]
    (materialization,) = node["assetMaterializations"]
    assert materialization["runId"] == full_pipeline_run
    plots = {e["label"]: e for e in materialization["metadataEntries"]}["plots"]
    assert "data:image/png;base64" in plots["mdStr"]


def test_bento_serves_the_batch_forecast(webserver: dict,
                                         forecaster: bentoml.SyncHTTPClient) -> None:
    table = pl.read_delta(str(webserver["home"] / "delta" / "gold" / "batch_forecasts"))
    assert table.height > 0
    # the busiest (store, item, date): a forecast far from zero
    row = table.sort("units_forecast", descending=True).row(0, named=True)
    answer = forecaster.forecast(store_id=row["store_id"], item_id=row["item_id"],
                                 date=row["date"].isoformat())
    assert answer["units"] == pytest.approx(row["units_forecast"], abs=1e-4)
    assert answer["model_version"] == row["model_version"]
    # the Bento asset published the champion pointer that running servers follow
    pointer = read_champion(webserver["home"] / "serving")
    assert pointer is not None and pointer.reason == "promoted"
    assert (pointer.model_tag, pointer.mlflow_version) == (answer["model_tag"],
                                                           row["model_version"])


def test_ui_shows_groups_partitions_checks_and_metadata(webserver: dict,
                                                        full_pipeline_run: str) -> None:
    data = _graphql(webserver["url"], ASSETS_QUERY)["assetNodes"]
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data}
    assert {k: n["groupName"] for k, n in nodes.items()} == {
        "stores": "ingest", "items": "ingest", "calendar": "ingest", "sales": "ingest",
        "plan": "ingest",
        "sales_quarantine": "ingest", "features": "features", "training_set": "training",
        "demand_model": "training", "model_evaluation": "evaluation",
        "champion": "deployment", "demand_forecaster_bento": "deployment",
        "forecast_features": "forecasting", "batch_forecasts": "forecasting",
        "online_features": "forecasting", "prediction_log": "monitoring",
        "forecast_accuracy": "monitoring", "feature_drift": "monitoring"}
    assert nodes["features"]["isPartitioned"]
    assert "Daily" in nodes["features"]["partitionDefinition"]["description"]
    checks = {k: {(c["name"], c["blocking"]) for c in n["assetChecksOrError"]["checks"]}
              for k, n in nodes.items() if n["assetChecksOrError"]["checks"]}
    assert checks == {"sales": {("quarantine_share", True), ("freshness", True)},
                      "model_evaluation": {("promotion_gate", True)}}
    # full_pipeline materialized every asset of the graph
    assert [k for k, n in nodes.items() if not n["assetMaterializations"]] == []
    labels = {e["label"] for e in nodes["features"]["assetMaterializations"][0]["metadataEntries"]}
    assert {"dagster/row_count", "dagster/column_schema", "delta_version",
            "null_share_per_feature"} <= labels
