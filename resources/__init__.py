"""Resource sets per environment, picked by one setting (RETAIL_ML_ENV)."""

from __future__ import annotations

from typing import Any

from resources.delta import DeltaStore
from resources.platform import PlatformSettings
from resources.settings import Settings
from resources.tracking import mlflow_tracking


def local_resources(settings: Settings, dataset_ref: str) -> dict[str, Any]:
    """Embedded defaults: Delta tables in folders, MLflow on sqlite, all under RETAIL_ML_HOME."""
    return {
        "platform": PlatformSettings.from_settings(settings, dataset_ref),
        "delta": DeltaStore(root=str(settings.delta_root)),
        "mlflow": mlflow_tracking.configured({
            "experiment_name": "retail-demand",
            "mlflow_tracking_uri": settings.mlflow_tracking_uri,
            "artifact_location": (settings.mlflow_dir / "artifacts").as_uri(),
        }),
    }


def build_resources(settings: Settings, dataset_ref: str) -> dict[str, Any]:
    if settings.env == "local":
        return local_resources(settings, dataset_ref)
    raise NotImplementedError(
        f"RETAIL_ML_ENV={settings.env!r}: the production resource set is not built yet; "
        "use RETAIL_ML_ENV=local")
