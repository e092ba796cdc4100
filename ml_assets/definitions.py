"""The one Definitions object: assets, checks, jobs, schedules, sensors and resources.

Built by a function, so settings are read when Dagster loads the code location, never at import.
"""


import os

import dagster as dg

from ml_assets.features.assets import build_feature_assets
from ml_assets.ingest.assets import build_ingest_assets
from ml_assets.partitions import build_partitions
from ml_assets.training.assets import demand_model, training_set
from resources import build_resources
from resources.settings import Settings, load_settings
from sensors.landing import INGEST_JOB, landing_sensor


def build_definitions(settings: Settings, dataset_ref: str = "simulated") -> dg.Definitions:
    partitions = build_partitions(settings)
    assets = [*build_ingest_assets(partitions), *build_feature_assets(partitions),
              training_set, demand_model]
    ingest_job = dg.define_asset_job(
        INGEST_JOB, selection=dg.AssetSelection.groups("ingest"),
        description="Landing files → bronze tables (run by the landing sensor).")
    features_job = dg.define_asset_job(
        "features_job", selection=dg.AssetSelection.groups("ingest", "features"),
        description="Ingest then features for a partition range.")
    return dg.Definitions(
        assets=assets,
        jobs=[ingest_job, features_job],
        schedules=[dg.build_schedule_from_partitioned_job(
            features_job, hour_of_day=2, name="daily_features",
            default_status=dg.DefaultScheduleStatus.RUNNING)],
        sensors=[landing_sensor],
        resources=build_resources(settings, dataset_ref),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings(), os.environ.get("RETAIL_ML_DATASET", "simulated"))
