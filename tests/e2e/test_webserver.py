"""`dagster dev` (webserver + daemon, what `make dev` starts) on a free port, through GraphQL.

The shared world (tests/e2e/dagster_world.py) runs `full_pipeline` over the whole partition
range, one day's sales file missing; the Bento that run built is then served by
`bentoml serve demand_forecaster:latest` and must answer what the run's batch forecasts hold.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import bentoml
import polars as pl
import pytest

from ml_assets.deployment.pointer import read_champion

# webserver, graphql, full_pipeline_run, forecaster
pytest_plugins = ["tests.e2e.dagster_world"]
pytestmark = pytest.mark.timeout(900)  # a test's timeout includes its fixtures' setup

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
        label ... on PathMetadataEntry { path } } } } }
"""

# `sales` after the run: its `landed` check's latest execution, its partitions, and its
# observations of the day without a file and of the day before.
PARTITION_QUERY = """
query Partition($missing: String!, $neighbour: String!) {
  assetNodes(assetKeys: [{path: ["sales"]}]) {
    partitionKeysByDimension { partitionKeys }
    assetChecksOrError { ... on AssetChecks { checks { name
        executionForLatestMaterialization { runId status evaluation { success description
            severity } } } } }
    assetObservations(partitions: [$missing, $neighbour]) { partition metadataEntries { label
        ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue } } } } }
"""


def test_full_pipeline_passes_the_gate_and_writes_the_report(graphql: Callable[..., dict],
                                                             full_pipeline_run: str) -> None:
    (node,) = graphql(EVALUATION_QUERY)["assetNodes"]
    (gate,) = node["assetChecksOrError"]["checks"]
    assert (gate["name"], gate["blocking"]) == ("promotion_gate", True)
    execution = gate["executionForLatestMaterialization"]
    assert (execution["runId"], execution["status"]) == (full_pipeline_run, "SUCCEEDED")
    assert execution["evaluation"]["success"], execution["evaluation"]["description"]
    (materialization,) = node["assetMaterializations"]
    assert materialization["runId"] == full_pipeline_run
    # the plots are in the evaluation report, one self-contained page
    report = {e["label"]: e for e in materialization["metadataEntries"]}["report"]
    assert "data:image/png;base64" in Path(report["path"]).read_text(encoding="utf-8")


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


def test_ui_shows_groups_partitions_checks_and_metadata(graphql: Callable[..., dict],
                                                        full_pipeline_run: str) -> None:
    data = graphql(ASSETS_QUERY)["assetNodes"]
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
    # `landed` fails on a partition without rows; the run goes on with the days that have data
    assert checks == {"sales": {("quarantine_share", True), ("freshness", True),
                                ("landed", False)},
                      "model_evaluation": {("promotion_gate", True)}}
    # full_pipeline materialized every asset of the graph but forecast_accuracy: no forecast
    # has its actual yet, and an asset that measured nothing is not shown as materialized
    assert [k for k, n in nodes.items() if not n["assetMaterializations"]] == [
        "forecast_accuracy"]
    labels = {e["label"] for e in nodes["features"]["assetMaterializations"][0]["metadataEntries"]}
    assert {"dagster/row_count", "dagster/column_schema", "delta_version",
            "null_share_per_feature"} <= labels


def test_a_day_without_a_landed_file_is_not_green(webserver: dict, graphql: Callable[..., dict],
                                                  full_pipeline_run: str) -> None:
    """The day whose sales file was removed before the run: the run's `landed` check warns and
    names it, and the day's own observation counts no rows; the partitions end at the data."""
    missing, neighbour = webserver["missing_day"], webserver["landed_neighbour"]
    (node,) = graphql(PARTITION_QUERY, missing=missing, neighbour=neighbour)["assetNodes"]
    (landed,) = [c for c in node["assetChecksOrError"]["checks"] if c["name"] == "landed"]
    execution = landed["executionForLatestMaterialization"]
    assert (execution["runId"], execution["status"]) == (full_pipeline_run, "FAILED"), execution
    assert execution["evaluation"]["severity"] == "WARN"
    assert missing in execution["evaluation"]["description"], execution
    counts = {o["partition"]: {e["label"]: e.get("intValue", e.get("floatValue"))
                               for e in o["metadataEntries"]}.get("row_count")
              for o in node["assetObservations"]}
    # the neighbour held rows (a run over a long range observes only the days without any)
    assert counts.get(missing) == 0 and counts.get(neighbour, 1) > 0, node["assetObservations"]
    # no partition after the last landed day: the last one holds data
    (dimension,) = node["partitionKeysByDimension"]
    landed_days = sorted(p.stem.removeprefix("sales_")
                         for p in (webserver["home"] / "landing" / "sales").glob("sales_*.csv"))
    assert dimension["partitionKeys"][-1] == landed_days[-1]
