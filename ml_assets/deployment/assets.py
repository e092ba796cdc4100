"""Deployment assets: the champion alias and the Bento that serves it."""

import dagster as dg

from ml_assets.deployment.bento import save_and_build
from ml_assets.deployment.pointer import POINTER, publish_champion
from ml_assets.deployment.promotion import NotPromotable, promote
from ml_assets.training.assets import run_trigger
from ml_assets.training.registry import (
    RegisteredModel,
    alias_version,
    load_alias,
    registry_client,
)
from resources.platform import PlatformSettings
from resources.settings import Settings
from resources.tracking import REGISTERED_MODEL


@dg.asset(group_name="deployment", deps=["model_evaluation"], kinds={"mlflow"},
          description=f"The `champion` alias of `{REGISTERED_MODEL}`: the challenger, once the "
                      "promotion gate passed it; the old champion becomes `previous`. Records "
                      "when, why (the run's trigger) and the backtest metrics it won with.")
def champion(context: dg.AssetExecutionContext, platform: PlatformSettings
             ) -> dg.MaterializeResult:
    uri = platform.get().mlflow_tracking_uri
    client = registry_client(uri)
    version = alias_version(client, "challenger")
    if version is None:
        raise dg.Failure("No model has the alias `challenger`: run the `retrain` job")
    try:
        done = promote(client, version, run_trigger(context), context.run.run_id)
    except NotPromotable as exc:
        raise dg.Failure(str(exc)) from exc
    tags = client.get_model_version(REGISTERED_MODEL, version).tags
    return dg.MaterializeResult(metadata={
        "champion_version": done.champion,
        # "xgboost", or the baseline that is champion because no model beat it yet
        "kind": tags.get("baseline_column", "xgboost"),
        "previous_version": done.previous or "none",
        "promoted_at": done.promoted_at,
        "why": tags.get("promotion_trigger", "manual"),
        "changed": done.changed,
        "backtest_wape": float(tags["backtest_wape"]),
        "seasonal_naive_wape": float(tags["seasonal_naive_wape"]),
        "gate": tags.get("gate_reason", ""),
    })


@dg.asset(group_name="deployment", deps=["champion"], kinds={"bentoml", "xgboost"},
          description="The champion in the BentoML model store (XGBoost UBJ, labelled with its "
                      "MLflow version, run and Delta versions, with its interval calibration "
                      "as metadata) and the `demand_forecaster` "
                      "Bento built from bentos/demand_forecaster, under BENTOML_HOME. Publishes "
                      "the champion pointer that running forecasters hot-swap to.")
def demand_forecaster_bento(platform: PlatformSettings) -> dg.MaterializeResult:
    settings = platform.get()
    model = load_alias(settings.mlflow_tracking_uri, "champion")
    if model is None:
        raise dg.Failure("No model has the alias `champion`: run the `retrain` job")
    tags, labels = build_bento(settings, model)
    publish_champion(settings.serving_dir, tags["model_tag"], model.version, tags["bento_tag"],
                     reason="promoted")
    return dg.MaterializeResult(metadata={
        **tags, **labels,
        "intervals": (f"level {model.intervals.level}" if model.intervals
                      else f"none: {model.intervals_missing}"),
        "champion_pointer": dg.MetadataValue.path(str(settings.serving_dir / POINTER)),
        "bentoml_home": dg.MetadataValue.path(str(settings.bentoml_home)),
        "serve": f"BENTOML_HOME={settings.bentoml_home} bentoml serve {tags['bento_tag']}",
    })


def build_bento(settings: Settings, model: RegisteredModel) -> tuple[dict[str, str],
                                                                    dict[str, str]]:
    """Saves `model` into the BentoML store and builds its Bento, labelled with its MLflow
    version, run, Delta versions and backtest metrics; records the tags on the version (a
    rollback serves that model again without rebuilding). Returns the tags and the labels."""
    labels = {"mlflow_version": model.version, "mlflow_run_id": model.run_id,
              **{key.replace("delta.", "delta_"): value for key, value in model.tags.items()
                 if key.startswith("delta.")},
              **{f"metric_{key}": model.tags[key] for key in ("backtest_wape",
                                                             "seasonal_naive_wape")
                 if key in model.tags}}
    tags = save_and_build(model.booster, model.column_info, labels, settings.bentoml_home,
                          intervals=model.intervals.to_json() if model.intervals else None)
    client = registry_client(settings.mlflow_tracking_uri)
    client.set_model_version_tag(REGISTERED_MODEL, model.version, "bento_model_tag",
                                 tags["model_tag"])
    client.set_model_version_tag(REGISTERED_MODEL, model.version, "bento_tag", tags["bento_tag"])
    return tags, labels
