"""`dagster dev` (webserver + daemon, what `make dev` starts) on a free port, through GraphQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from ml_assets.simulation.landing import land
from resources.settings import load_settings
from tests.conftest import small_world_env

ROOT = Path(__file__).resolve().parents[2]

ASSETS_QUERY = """
{ assetNodes { assetKey { path } groupName isPartitioned
    partitionDefinition { description }
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
    assetMaterializations(limit: 1) { metadataEntries { label } } } }
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("web") / "home"
    env = {**os.environ, **small_world_env(home), "DAGSTER_HOME": str(home / "dagster")}
    (home / "dagster").mkdir(parents=True)
    land(load_settings(env))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1",
         "-p", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=open(home / "dagster-dev.log", "w"), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/server_info", timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("dagster-webserver did not start within 180 s")
    yield {"url": url, "port": port, "log": home / "dagster-dev.log"}
    os.killpg(proc.pid, signal.SIGTERM)  # dagster dev runs the daemon as a child process
    proc.wait(timeout=60)


def test_launch_features_job_over_graphql(webserver: dict) -> None:
    client = DagsterGraphQLClient("127.0.0.1", port_number=webserver["port"])
    run_id = client.submit_job_execution(
        "features_job",
        tags={"dagster/asset_partition_range_start": "2024-09-02",
              "dagster/asset_partition_range_end": "2025-02-28"})
    deadline = time.monotonic() + 300
    status = None
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    assert status == "SUCCESS", webserver["log"].read_text()[-3000:]


def test_ui_shows_groups_partitions_checks_and_metadata(webserver: dict) -> None:
    # runs after the launch above (module order), so materializations exist
    data = requests.post(f"{webserver['url']}/graphql", json={"query": ASSETS_QUERY},
                         timeout=60).json()["data"]["assetNodes"]
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data}
    assert {k: n["groupName"] for k, n in nodes.items()} == {
        "stores": "ingest", "items": "ingest", "calendar": "ingest", "sales": "ingest",
        "sales_quarantine": "ingest", "features": "features", "training_set": "training",
        "demand_model": "training"}
    assert nodes["features"]["isPartitioned"]
    assert "Daily" in nodes["features"]["partitionDefinition"]["description"]
    checks = nodes["sales"]["assetChecksOrError"]["checks"]
    assert {(c["name"], c["blocking"]) for c in checks} == {
        ("quarantine_share", True), ("freshness", True)}
    labels = {e["label"] for e in nodes["features"]["assetMaterializations"][0]["metadataEntries"]}
    assert {"dagster/row_count", "dagster/column_schema", "delta_version",
            "null_share_per_feature"} <= labels
