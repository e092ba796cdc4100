"""Training assets: the training set (Delta) and the challenger model (MLflow run + version)."""

import datetime as dt
import hashlib
import json
import os
import subprocess

import dagster as dg
import mlflow
import polars as pl
import xgboost as xgb
from mlflow.models import infer_signature
from pydantic import field_validator

from ml_assets.features.assets import FEATURES_TABLE, feature_spec
from ml_assets.features.recent import level_column, with_recent
from ml_assets.features.transforms import SERIES, FeatureSpec
from ml_assets.metadata import table_metadata
from ml_assets.training.dataset import (
    TARGET,
    canonical_order,
    category_levels,
    model_columns,
    split_by_time,
    to_matrix,
)
from ml_assets.training.model import BASE_PARAMS, OBJECTIVES, fit
from ml_assets.training.registry import registry_client
from resources.delta import DeltaStore
from resources.platform import PlatformSettings
from resources.settings import Settings
from resources.tracking import REGISTERED_MODEL, tag_values
from resources.tracking import run_trigger as trigger_of

TRAINING_TABLE = "gold/training_set"
# Run tags a sensor sets that travel to the model version: why it was retrained, on what
TRAIL_TAGS = {"trigger_reason": "retail_ml/trigger_reason",
              "trigger_evidence": "retail_ml/evidence",
              "retrain_policy": "retail_ml/policy_digest"}


def run_trigger(context: dg.AssetExecutionContext) -> str:
    """Why this run happened: an explicit trigger tag, else the schedule, sensor or job."""
    return trigger_of(context.run)


def code_version() -> str:
    """The git commit when there is one (a checkout), else the package version."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=5,
                              cwd=os.path.dirname(__file__)).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return version("retail-ml-platform")


@dg.asset(group_name="training", deps=["features"], kinds={"delta", "polars"},
          description="Rows with a target from the feature table, split by time: the last "
                      "horizon of periods validates (early stopping), the training window "
                      "before it trains, older rows are history for backtests.")
def training_set(context: dg.AssetExecutionContext, platform: PlatformSettings,
                 delta: DeltaStore) -> dg.MaterializeResult:
    ds = platform.get().dataset
    features_version = delta.version(FEATURES_TABLE)
    features = delta.read(FEATURES_TABLE, features_version)
    # Rows the dataset's rule forces to 0 (closed days) are forecast as 0, never by the model:
    # they stay out of its loss.
    spec = feature_spec(ds)
    forced = features.select(spec.forced_zero()).to_series()
    frame = split_by_time(features.filter(~forced), ds.horizon_periods, ds.period_days,
                          ds.training_window_periods)
    frame = with_recent(frame, _sales_before(delta, frame, spec), spec)
    version = delta.overwrite(TRAINING_TABLE, frame)
    counts = dict(frame.group_by("split").len().rows())
    return dg.MaterializeResult(metadata={
        **table_metadata(frame, delta.uri(TRAINING_TABLE), version),
        "features_delta_version": features_version,
        "bronze_sales_delta_version": delta.version("bronze/sales"),
        "forced_zero_rows_left_out": int(forced.sum()),
        "train_rows": counts.get("train", 0),
        "valid_rows": counts.get("valid", 0),
        "history_rows": counts.get("history", 0),
        "valid_from": str(frame.filter(pl.col("split") == "valid").get_column("date").min()),
    })


def _sales_before(delta: DeltaStore, rows: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """The bronze sales the rows' origin-relative features read: from their earliest origin."""
    first = rows.get_column("date").min()
    if first is None:
        return pl.DataFrame(schema={"date": pl.Date, **dict.fromkeys(SERIES, pl.Utf8),
                                    "units_sold": pl.Float64})
    # the longest reach back from a row: its origin (up to H), then the pooled level's window
    start = first - dt.timedelta(days=(spec.horizon + spec.windows[2]) * spec.period_days)
    return (delta.scan("bronze/sales").filter(pl.col("date") >= start)
            .select("date", *SERIES, "units_sold").collect())


class TrainingConfig(dg.Config):
    max_rounds: int = 600  # early stopping usually ends far sooner
    early_stopping_rounds: int = 30
    # The objectives fitted; the lowest validation WAPE wins. One objective pins the recipe.
    objectives: list[str] = list(OBJECTIVES)

    @field_validator("objectives")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in OBJECTIVES]
        if unknown or not names:
            raise ValueError(f"objectives {unknown or names}: choose among {list(OBJECTIVES)}")
        return names

    # Also fit the target divided by each series' recent level (training/model.py); the
    # lower validation WAPE wins. False pins the raw target.
    per_series_scale: bool = True


def config_hash(settings: Settings, config: TrainingConfig) -> str:
    """What, beside data and code, decides the model: the dataset's shape, the training recipe
    and the promotion settings (paths left out: they differ between machines)."""
    ds = settings.dataset
    recipe = {"frequency": ds.frequency, "horizon": ds.horizon_periods,
              "training_window": ds.training_window_periods,
              "covariates": [c.model_dump(mode="json") for c in ds.covariates],
              "negative_units": ds.negative_units, "params": BASE_PARAMS,
              "objectives": OBJECTIVES, "training": config.model_dump(),
              "promotion_margin": settings.promotion_margin,
              "backtest_origins": settings.backtest_origins}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()
                          ).hexdigest()[:12]


@dg.asset(group_name="training", deps=["training_set"],
          required_resource_keys={"mlflow", "delta", "platform"}, kinds={"xgboost", "mlflow"},
          description="The challenger: a global XGBoost model (hist, native categoricals), "
                      "early-stopped on the time split, logged to MLflow and registered as a "
                      f"new version of `{REGISTERED_MODEL}` with alias `challenger`.")
def demand_model(context: dg.AssetExecutionContext, config: TrainingConfig
                 ) -> dg.MaterializeResult:
    tracking, delta = context.resources.mlflow, context.resources.delta
    settings = context.resources.platform.get()
    training_version = delta.version(TRAINING_TABLE)
    frame = delta.read(TRAINING_TABLE, training_version)
    columns, levels = category_levels(frame, model_columns(frame.drop("split")))
    train, valid = (canonical_order(frame.filter(pl.col("split") == s), columns)
                    for s in ("train", "valid"))
    if train.height == 0:
        raise dg.Failure("The training set has no training rows: the history is shorter than "
                         "the validation window (one horizon). Land more history first.")
    x_train, x_valid = to_matrix(train, columns, levels), to_matrix(valid, columns, levels)
    result = fit(x_train, train.get_column(TARGET).to_numpy(), x_valid,
                 valid.get_column(TARGET).to_numpy(), max_rounds=config.max_rounds,
                 early_stopping=config.early_stopping_rounds,
                 objectives=tuple(config.objectives),
                 scale_column=(level_column(feature_spec(settings.dataset))
                               if config.per_series_scale else None))
    trigger = run_trigger(context)
    lineage = {"delta.training_set": training_version,
               "delta.features": delta.version(FEATURES_TABLE),
               "delta.bronze_sales": delta.version("bronze/sales")}
    trail = {"trigger": trigger, "code_version": code_version(),
             "config_hash": config_hash(settings, config),
             **{name: context.run.tags[tag] for name, tag in TRAIL_TAGS.items()
                if tag in context.run.tags}}
    tracking.log_params({**BASE_PARAMS, **OBJECTIVES[result.objective],
                         "objective_choice": result.objective,
                         "target_scale": result.scale_column or "none",
                         "best_iteration": result.best_iteration,
                         "n_features": len(columns.all)})
    tracking.log_metrics({f"valid_wape_{name}": score
                          for name, score in result.valid_wape.items()})
    tracking.set_tags({**lineage, **trail, "dagster_run_id": context.run.run_id})
    tracking.name_run("demand_model", settings.today)
    tracking.log_dict({"numeric": columns.numeric, "categorical": columns.categorical,
                       "category_levels": levels}, "features.json")
    # Registered where this run tracks (dagster-mlflow sets only the tracking URI).
    mlflow.set_registry_uri(mlflow.get_tracking_uri())
    # Integer features can be missing at inference: declare them as doubles in the signature.
    sample = x_valid.head(50)
    sample = sample.astype({c: "float64" for c in sample.select_dtypes("integer").columns})
    info = mlflow.xgboost.log_model(
        result.booster, name="model", model_format="ubj",
        signature=infer_signature(sample, result.booster.inplace_predict(sample)),
        registered_model_name=REGISTERED_MODEL, metadata={"features": json.dumps(levels)},
        # Declared, not inferred: inference shells out to `uv export` and costs seconds.
        pip_requirements=[f"xgboost=={xgb.__version__}"])
    version = info.registered_model_version
    client = registry_client(mlflow.get_tracking_uri())
    client.set_registered_model_alias(REGISTERED_MODEL, "challenger", version)
    recipe = {"objective": result.objective, "target_scale": result.scale_column or "none",
              "rounds": result.best_iteration + 1,
              "train_end": str(train.get_column("date").max()),
              "valid_end": str(valid.get_column("date").max())}
    for key, value in tag_values({**lineage, **recipe, **trail}).items():
        client.set_model_version_tag(REGISTERED_MODEL, version, key, value)
    run = mlflow.active_run()
    return dg.MaterializeResult(metadata={
        "mlflow_run_id": run.info.run_id if run else None,
        "model_version": version,
        "objective": result.objective,
        "target_scale": result.scale_column or "none",
        "valid_wape": {k: round(v, 4) for k, v in result.valid_wape.items()},
        "best_iteration": result.best_iteration,
        "features": len(columns.all),
        **lineage, **trail,
    })
