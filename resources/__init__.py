"""Resource sets per environment, picked by one setting (RETAIL_ML_ENV).

The resource classes are imported where the sets are built, so that `resources.settings`
stays light: the Bento service imports it without pulling in Dagster and MLflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resources.settings import Settings


def local_resources(settings: Settings, dataset_ref: str) -> dict[str, Any]:
    """Embedded defaults: Delta tables in folders, MLflow on sqlite, all under RETAIL_ML_HOME."""
    from resources.delta import DeltaStore
    from resources.platform import PlatformSettings
    from resources.spark import spark_resource
    from resources.tracking import mlflow_tracking

    return {
        "platform": PlatformSettings.from_settings(settings, dataset_ref),
        "delta": DeltaStore(root=str(settings.delta_root)),
        "spark": spark_resource(settings),  # lazy: no JVM unless the spark engine runs
        "mlflow": mlflow_tracking.configured({
            "experiment_name": "retail-demand",
            "mlflow_tracking_uri": settings.mlflow_tracking_uri,
            "artifact_location": (settings.mlflow_dir / "artifacts").as_uri(),
        }),
    }


def build_resources(settings: Settings, dataset_ref: str) -> dict[str, Any]:
    if settings.env == "local":
        return local_resources(settings, dataset_ref)
    from resources.prod import prod_resources  # object store, MLflow server, Spark
    from resources.spark import spark_resource

    # `features` requires the `spark` key in every set; prod's engine_resources may replace it.
    return {"spark": spark_resource(settings), **prod_resources(settings, dataset_ref)}
