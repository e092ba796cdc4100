"""The MLflow model registry as the source of truth: load a version with its feature columns.

A model version is only usable together with the columns and category levels it was trained
on (`features.json`, logged next to the model), so they are always loaded together. So is its
interval calibration (`intervals/calibration_v<version>.json`, logged in its run by
`model_evaluation`), when it has one: a version registered before intervals were calibrated
has none, and its forecasts carry no interval (`RegisteredModel.intervals_missing` says why).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import xgboost as xgb
from mlflow.exceptions import MlflowException

from ml_assets.evaluation.intervals import Calibration, no_calibration
from ml_assets.training.dataset import Columns, to_matrix
from ml_assets.training.model import predict
from resources.tracking import REGISTERED_MODEL, tag_value, tag_values

BASELINE_KIND = "baseline"
# per version: a baseline registered by the evaluation shares the challenger's run
INTERVALS_ARTIFACT = "intervals/calibration_v{version}.json"
INTERVALS_TAG = "interval_calibration"  # on a version: the artifact path, in its run


def zeroed(frame: pl.DataFrame, units: np.ndarray) -> np.ndarray:
    """Forecasts with the rows the dataset's `zero_when` rule forces (`forced_zero`) set to 0."""
    if "forced_zero" not in frame.columns:
        return units
    return np.where(frame.get_column("forced_zero").fill_null(False).to_numpy(), 0.0, units)


@dataclass
class RegisteredModel:
    """A registry version: an XGBoost booster with its columns, or a baseline (no booster), whose
    forecast is one column of the rows (`seasonal_naive`, `moving_average_28`) as
    `ml_assets.forecasting.horizon.finish_rows` computes it at the origin."""

    version: str
    run_id: str
    booster: xgb.Booster | None
    columns: Columns
    levels: dict[str, list[str]]
    tags: dict[str, str] = field(default_factory=dict)
    intervals: Calibration | None = None  # None: see `intervals_missing`

    @property
    def intervals_missing(self) -> str:
        """Why this version's forecasts carry no interval ("" when they do)."""
        return "" if self.intervals is not None else no_calibration(self.version)

    @property
    def baseline(self) -> str | None:
        """The column a baseline forecasts with; None for a booster."""
        return self.tags.get("baseline_column") if self.booster is None else None

    def matrix(self, frame: pl.DataFrame) -> pd.DataFrame:
        """Feature rows in this model's columns and levels; a column it knows but the rows lack
        (the feature set changed since) counts as missing rather than failing."""
        absent = [c for c in self.columns.all if c not in frame.columns]
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias(c) for c in absent)
        return to_matrix(frame, self.columns, self.levels)

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        if self.booster is None:
            units = frame.get_column(str(self.baseline)).fill_null(0.0).to_numpy()
        else:
            units = predict(self.booster, self.matrix(frame))
        return zeroed(frame, units)

    @property
    def column_info(self) -> dict[str, object]:
        return {"numeric": self.columns.numeric, "categorical": self.columns.categorical,
                "category_levels": self.levels,
                **({"baseline": self.baseline} if self.baseline else {})}


def registry_client(tracking_uri: str) -> mlflow.MlflowClient:
    """A client on this home's registry: without an explicit registry URI MLflow falls back to
    its process-wide one, which another home may have set."""
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def alias_version(client: mlflow.MlflowClient, alias: str) -> str | None:
    """The version an alias points to, or None when the alias (or the model) does not exist.
    Any other registry failure (an outage, a permission) raises: read as "no champion", it
    would let a challenger through the gate judged against the baselines alone."""
    try:
        return str(client.get_model_version_by_alias(REGISTERED_MODEL, alias).version)
    except MlflowException as e:
        absent = e.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            e.error_code == "INVALID_PARAMETER_VALUE" and "not found" in e.message)
        if absent:
            return None
        raise


@contextlib.contextmanager
def _pointed_at(tracking_uri: str) -> Iterator[None]:
    """MLflow resolves `models:/` URIs through its process-wide URIs (whatever tracking_uri is
    passed), and several homes (tests, reproductions) can live in one process: point them at
    this one for the duration, then back."""
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def load_version(tracking_uri: str, version: str) -> RegisteredModel:
    client = registry_client(tracking_uri)
    mv = client.get_model_version(REGISTERED_MODEL, version)
    intervals = load_intervals(client, mv.run_id, mv.tags.get(INTERVALS_TAG))
    if mv.tags.get("model_kind") == BASELINE_KIND:
        column = mv.tags["baseline_column"]
        return RegisteredModel(version=str(mv.version), run_id=mv.run_id, booster=None,
                               columns=Columns([column], []), levels={}, tags=dict(mv.tags),
                               intervals=intervals)
    with tempfile.TemporaryDirectory() as tmp, _pointed_at(tracking_uri):
        booster = mlflow.xgboost.load_model(f"models:/{REGISTERED_MODEL}/{version}")
        features_file = client.download_artifacts(mv.run_id, "features.json", tmp)
        features = json.loads(Path(features_file).read_text())
    return RegisteredModel(
        version=str(mv.version), run_id=mv.run_id, booster=booster,
        columns=Columns(features["numeric"], features["categorical"]),
        levels=features["category_levels"], tags=dict(mv.tags), intervals=intervals)


def load_intervals(client: mlflow.MlflowClient, run_id: str, artifact: str | None
                   ) -> Calibration | None:
    """The calibration a version's tag points to in its run; None when it has none."""
    if not artifact:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, artifact, tmp)
        return Calibration.from_json(json.loads(Path(path).read_text()))


def save_intervals(tracking_uri: str, version: str, run_id: str, document: dict) -> None:
    """Logs an interval calibration (`Calibration.to_json`, plus what the caller adds) in the
    version's run and points the version to it, replacing an earlier one."""
    client = registry_client(tracking_uri)
    artifact = INTERVALS_ARTIFACT.format(version=version)
    client.log_dict(run_id, document, artifact)
    client.set_model_version_tag(REGISTERED_MODEL, version, INTERVALS_TAG, artifact)
    client.set_model_version_tag(REGISTERED_MODEL, version, "interval_level",
                                 tag_value(document["level"]))


def load_alias(tracking_uri: str, alias: str) -> RegisteredModel | None:
    client = registry_client(tracking_uri)
    version = alias_version(client, alias)
    return None if version is None else load_version(tracking_uri, version)


def register_baseline(tracking_uri: str, run_id: str, artifact_uri: str, column: str,
                      tags: dict[str, object]) -> str:
    """Registers a baseline as a new version: its artifact is a JSON file naming the column it
    forecasts with (`baseline/baseline.json`, logged in the run by the caller), never a pickle.
    Returns the version. Its tags go through `tag_value` (floats rounded)."""
    client = registry_client(tracking_uri)
    mv = client.create_model_version(
        REGISTERED_MODEL, source=f"{artifact_uri.rstrip('/')}/baseline", run_id=run_id,
        tags=tag_values({"model_kind": BASELINE_KIND, "baseline_column": column, **tags}))
    return str(mv.version)
