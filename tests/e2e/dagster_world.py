"""One `dagster dev` world for the webserver and browser tests (a pytest plugin).

`dagster dev` (webserver + daemon, what `make dev` starts) on a free port over a small landed
world with one day's sales file removed; `full_pipeline` launched through GraphQL over the whole
partition range; then `bentoml serve demand_forecaster:latest`, the Bento that run built. That
run takes minutes on 2 cores, so tests/e2e/test_webserver.py and tests/e2e/test_browser.py
share it: both load this module with `pytest_plugins`, which registers its session fixtures
once. The tests using it run one after another, and the servers stop after the last of them
(not at the end of the whole session: they would keep the daemon busy through the rest of the
suite).
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bentoml
import pytest
import requests
import yaml
from dagster_graphql import DagsterGraphQLClient

from ml_assets.definitions import build_definitions
from ml_assets.simulation.landing import land
from resources.settings import load_settings
from tests.conftest import small_world_env
from tests.e2e.servers import free_port, stop, wait_for_bento

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 600  # seconds for full_pipeline on the small world (2 cores)


def _instance_config() -> str:
    """The laptop instance's (deploy/dagster.local.yaml: what `make dev` uses, without the
    first-visit modal), with one run at a time: the landing sensor's ingest run queues behind
    (or ahead of) ours instead of writing the same bronze tables concurrently."""
    config = yaml.safe_load((ROOT / "deploy" / "dagster.local.yaml").read_text())
    config.setdefault("concurrency", {}).setdefault("runs", {})["max_concurrent_runs"] = 1
    return yaml.safe_dump(config)

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

# What the servers of the shared world need stopped; closed after the last test using them.
_SERVERS = contextlib.ExitStack()
_LAST_USER: list[str] = []


def post_graphql(url: str, query: str, **variables: object) -> dict:
    body = requests.post(f"{url}/graphql", json={"query": query, "variables": variables},
                         timeout=60).json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _wait_for_code_location(url: str, proc: subprocess.Popen, log: Path,
                            timeout: float = 180) -> str:
    """Waits for the webserver, then for `ml_assets.definitions` to load (or fails with its
    load error); returns the code location's name."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster dev exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            entries = post_graphql(url, LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
        except requests.RequestException:  # not listening yet
            entries = []
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            errors = [e["locationOrLoadError"] for e in entries
                      if e["locationOrLoadError"]["__typename"] == "PythonError"]
            assert not errors, "".join([errors[0]["message"], *errors[0]["stack"]])
            return entries[0]["name"]
        time.sleep(1)
    pytest.fail(f"dagster dev not ready within {timeout} s:\n{log.read_text()[-4000:]}")


def _remove_landed_day(landing: Path, keys: list[str]) -> tuple[str, str]:
    """Deletes the sales file of the day in the middle of the history: a partition with no
    data. Returns that day's partition key and its (landed) neighbour's."""
    middle = len(keys) // 2
    (missing,) = (landing / "sales").glob(f"sales_{keys[middle]}.*")
    missing.unlink()
    return keys[middle], keys[middle - 1]


@pytest.fixture(scope="session")
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
    (home / "dagster" / "dagster.yaml").write_text(_instance_config())
    settings = load_settings(env)
    land(settings)
    partitions = build_definitions(settings, world_env["RETAIL_ML_DATASET"]).resolve_job_def(
        "full_pipeline").partitions_def
    keys = partitions.get_partition_keys()
    missing, neighbour = _remove_landed_day(settings.landing_dir, keys)
    port, log = free_port(), home / "dagster-dev.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1",
         "-p", str(port)], cwd=ROOT, env=env, stdout=open(log, "w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    # dagster dev runs the daemon and the code server as child processes
    _SERVERS.callback(stop, proc)
    try:
        url = f"http://127.0.0.1:{port}"
        location = _wait_for_code_location(url, proc, log)
        yield {"url": url, "port": port, "log": log, "home": home, "env": world_env,
               "location": location, "missing_day": missing, "landed_neighbour": neighbour,
               "range": {"dagster/asset_partition_range_start": keys[0],
                         "dagster/asset_partition_range_end": keys[-1]}}
    finally:
        _SERVERS.close()  # a no-op when the last test using it already stopped them


def _run_errors(url: str, run_id: str) -> str:
    """The run's ERROR-level messages from its event log, each with its error's (and cause's)
    message; the stacks are in the dagster dev log."""
    try:
        logs = post_graphql(url, RUN_ERRORS_QUERY, runId=run_id)["logsForRun"]
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


def run_to_completion(webserver: dict, job: str) -> str:
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


@pytest.fixture(scope="session")
def graphql(webserver: dict) -> Callable[..., dict]:
    """`graphql(query, **variables)`: the webserver's answer's data (fails on errors)."""
    return functools.partial(post_graphql, webserver["url"])


@pytest.fixture(scope="session")
def full_pipeline_run(webserver: dict) -> str:
    return run_to_completion(webserver, "full_pipeline")


@pytest.fixture(scope="session")
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
    _SERVERS.callback(stop, proc)
    url = f"http://127.0.0.1:{port}"
    wait_for_bento(url, proc, log)
    with bentoml.SyncHTTPClient(url, timeout=60) as client:
        yield client


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Runs the tests that use the shared world one after another, from where the first of them
    was collected, and remembers the last of them: the servers stop after it rather than run
    (and load the machine) through the tests collected between the two modules."""
    users = [item for item in items if "webserver" in getattr(item, "fixturenames", ())]
    if users:
        first, ids = items.index(users[0]), {id(item) for item in users}
        others = [item for item in items if id(item) not in ids]
        items[:] = others[:first] + users + others[first:]
    _LAST_USER[:] = [item.nodeid for item in users[-1:]]


def pytest_runtest_teardown(item: pytest.Item) -> None:
    if _LAST_USER and item.nodeid == _LAST_USER[0]:
        _SERVERS.close()
