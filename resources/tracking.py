"""MLflow tracking through dagster-mlflow: one MLflow run per Dagster run.

dagster-mlflow's `MlFlow` sets (and would create) the experiment itself; with a sqlite backend
MLflow would then put artifacts under the working directory. We create the experiment first,
with its artifact location under RETAIL_ML_HOME, then hand over.
"""

from __future__ import annotations

import dagster as dg
import mlflow
from dagster_mlflow.resources import CONFIG_SCHEMA, MlFlow

REGISTERED_MODEL = "demand_forecaster"


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> str:
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


@dg.resource(config_schema={**CONFIG_SCHEMA,
                            "artifact_location": dg.Field(dg.Noneable(str), default_value=None)},
             description="dagster-mlflow's tracking resource, with the experiment's artifact "
                         "location set first")
def mlflow_tracking(init_context: dg.InitResourceContext) -> MlFlow:
    config = init_context.resource_config
    ensure_experiment(config["mlflow_tracking_uri"], config["experiment_name"],
                      config.get("artifact_location"))
    return MlFlow(init_context)
