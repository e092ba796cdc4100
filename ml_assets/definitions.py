"""The one Definitions object: assets, checks, jobs, schedules, sensors and resources.

Built by a function, so settings are read when Dagster loads the code location, never at import.
"""


import os

import dagster as dg
from dagster_mlflow import end_mlflow_on_run_finished

from ml_assets.deployment.assets import champion, demand_forecaster_bento
from ml_assets.deployment.rollback import rollback
from ml_assets.evaluation.assets import model_evaluation
from ml_assets.features.assets import build_feature_assets
from ml_assets.forecasting.assets import batch_forecasts, forecast_features
from ml_assets.forecasting.online_assets import online_features
from ml_assets.ingest.assets import build_ingest_assets
from ml_assets.maintenance import weekly_orphan_removal
from ml_assets.monitoring.accuracy_assets import forecast_accuracy
from ml_assets.monitoring.assets import prediction_log
from ml_assets.monitoring.drift_assets import build_drift_assets
from ml_assets.partitions import build_partitions
from ml_assets.training.assets import demand_model, training_set
from resources import build_resources
from resources.settings import Settings, load_settings
from sensors.landing import DAILY_JOB, INGEST_JOB, build_landing_sensor
from sensors.retrain import RETRAIN_JOB, retrain_on_drift

RETRAIN_ASSETS = ["training_set", "demand_model", "model_evaluation", "champion",
                  "demand_forecaster_bento"]


def build_jobs() -> list:
    def job(name: str, selection: dg.AssetSelection, description: str,
            **kwargs: object):  # noqa: ANN202
        # In process: a step's own process cost 15-40 s of start-up and imports per step under
        # `dagster dev` (measured on the daily cycle), more than most steps compute. Steps
        # are a chain; parallel branches gain little on a laptop, and in production the run
        # launcher already gives each run its own pod.
        return dg.define_asset_job(name, selection=selection, description=description,
                                   executor_def=dg.in_process_executor,
                                   **kwargs)  # type: ignore[arg-type]

    mlflow_hooks = {end_mlflow_on_run_finished}
    return [
        job(INGEST_JOB, dg.AssetSelection.groups("ingest"),
            "Landing files → bronze tables (run by the landing sensor)."),
        job("features_job", dg.AssetSelection.groups("ingest", "features"),
            "Ingest then features for a partition range."),
        job(DAILY_JOB, dg.AssetSelection.groups("ingest", "features", "forecasting",
                                                "monitoring"),
            "The daily cycle: ingest, features, next-horizon feature rows, batch forecasts, then "
            "monitoring (prediction log, realized accuracy, feature drift)."),
        job(RETRAIN_JOB, dg.AssetSelection.assets(*RETRAIN_ASSETS),
            "Training set → challenger → evaluation (promotion gate) → champion → Bento.",
            hooks=mlflow_hooks),
        # No MLflow hook here: a job hook makes every step (ingest included) open MLflow.
        job("full_pipeline", dg.AssetSelection.all(),
            "The whole graph: ingest through Bento and batch forecasts."),
        rollback,
    ]


def build_definitions(settings: Settings, dataset_ref: str = "simulated") -> dg.Definitions:
    partitions = build_partitions(settings)
    assets = [*build_ingest_assets(partitions), *build_feature_assets(partitions, settings.engine),
              training_set, demand_model, model_evaluation, champion, demand_forecaster_bento,
              forecast_features, batch_forecasts, online_features, prediction_log,
              forecast_accuracy, *build_drift_assets(partitions)]
    jobs = build_jobs()
    ingest = next(j for j in jobs if j.name == INGEST_JOB)
    daily = next(j for j in jobs if j.name == DAILY_JOB)
    retrain = next(j for j in jobs if j.name == RETRAIN_JOB)
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=[
            dg.build_schedule_from_partitioned_job(
                daily, hour_of_day=2, name="daily_forecast_schedule",
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description="Every day at 02:00, the daily cycle over yesterday's partition "
                            "(the landing sensor runs it sooner when files land)."),
            dg.ScheduleDefinition(
                name="weekly_retrain", job=retrain, cron_schedule="0 4 * * 1",
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description="Retrains every Monday at 04:00; the gate decides promotion."),
            weekly_orphan_removal,
        ],
        sensors=[build_landing_sensor(ingest, daily), retrain_on_drift],
        resources=build_resources(settings, dataset_ref),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings(), os.environ.get("RETAIL_ML_DATASET", "simulated"))
