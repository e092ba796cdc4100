"""Training set and challenger model on a small world: a real instance, MLflow on sqlite."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import polars as pl
import pytest

from ml_assets.training.dataset import Columns, to_matrix
from ml_assets.training.model import predict
from ml_assets.training.registry import registry_client
from resources.tracking import REGISTERED_MODEL
from tests.conftest import featured_world


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    world = featured_world(tmp_path_factory.mktemp("training") / "home")
    assert world.result.success
    settings, defs, instance = world.settings, world.defs, world.instance
    result = dg.materialize(
        [defs.get_assets_def("training_set"), defs.get_assets_def("demand_model")],
        resources=defs.resources, instance=instance, tags={"retail_ml/trigger": "test"})
    mlflow.end_run()
    yield {"settings": settings, "defs": defs, "result": result}
    instance.dispose()


def test_model_is_registered_as_challenger_with_its_lineage(trained) -> None:
    assert trained["result"].success
    client = registry_client(trained["settings"].mlflow_tracking_uri)
    version = client.get_model_version_by_alias(REGISTERED_MODEL, "challenger")
    assert str(version.version) == "1"
    assert version.tags["trigger"] == "test"
    assert version.tags["delta.features"] == "0"
    run = client.get_run(version.run_id)
    assert run.data.tags["dagster_run_id"] == trained["result"].run_id
    assert {"valid_wape_squared_error", "valid_wape_tweedie"} <= set(run.data.metrics)


def test_model_is_stored_in_xgboost_format_not_pickle(trained) -> None:
    artifacts = Path(trained["settings"].mlflow_dir / "artifacts")
    files = [p.name for p in artifacts.rglob("*") if p.is_file()]
    assert any(name.endswith(".ubj") for name in files)
    assert not [n for n in files if n.endswith((".pkl", ".pickle", ".joblib"))]


def test_registered_model_forecasts_finite_non_negative_demand(trained) -> None:
    settings, defs = trained["settings"], trained["defs"]
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    booster = mlflow.xgboost.load_model(f"models:/{REGISTERED_MODEL}@challenger")
    frame = defs.resources["delta"].read("gold/training_set")
    version = registry_client(settings.mlflow_tracking_uri).get_model_version_by_alias(
        REGISTERED_MODEL, "challenger")
    run = mlflow.get_run(version.run_id)
    features = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/features.json")
    columns = Columns(features["numeric"], features["categorical"])
    forecast = predict(booster, to_matrix(frame.head(500), columns, features["category_levels"]))
    assert np.isfinite(forecast).all() and (forecast >= 0).all() and forecast.sum() > 0
    valid = frame.filter(pl.col("split") == "valid")
    assert valid.height > 0
