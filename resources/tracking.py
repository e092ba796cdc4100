"""MLflow tracking through dagster-mlflow: one MLflow run per Dagster run.

dagster-mlflow's `MlFlow` sets (and would create) the experiment itself; with a sqlite backend
MLflow would then put artifacts under the working directory. We create the experiment first,
with its artifact location under RETAIL_ML_HOME, then hand over.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import mlflow
from dagster_mlflow.resources import CONFIG_SCHEMA, MlFlow
from mlflow.exceptions import MlflowException

REGISTERED_MODEL = "demand_forecaster"


@contextlib.contextmanager
def _sqlite_init_lock(tracking_uri: str) -> Iterator[None]:
    """Serializes the first use of a sqlite backend: under `dagster dev` the first steps of a
    run start in parallel processes, and each would create MLflow's tables at once (measured:
    'duplicate column name: step' from the racing migrations). A server backend needs none."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / ".init.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> str:
    with _sqlite_init_lock(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:  # created meanwhile by another process (a server backend)
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id


@dg.resource(config_schema={**CONFIG_SCHEMA,
                            "artifact_location": dg.Field(dg.Noneable(str), default_value=None)},
             description="dagster-mlflow's tracking resource, with the experiment's artifact "
                         "location set first")
def mlflow_tracking(init_context: dg.InitResourceContext) -> MlFlow:
    config = init_context.resource_config
    ensure_experiment(config["mlflow_tracking_uri"], config["experiment_name"],
                      config.get("artifact_location"))
    return MlFlow(init_context)
