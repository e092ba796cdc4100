"""The `rollback` job: the previous champion back in the registry and in serving."""

import dagster as dg

from ml_assets.deployment.assets import build_bento
from ml_assets.deployment.pointer import publish_champion
from ml_assets.deployment.promotion import NothingToRollBackTo, roll_back
from ml_assets.training.registry import load_version, registry_client
from resources.platform import PlatformSettings
from resources.tracking import REGISTERED_MODEL


@dg.op(description="Moves `champion` back to the `previous` version, records the rollback on "
                   "both versions, and points serving at the restored model (running servers "
                   "hot-swap to it).")
def roll_back_champion(context: dg.OpExecutionContext, platform: PlatformSettings) -> None:
    settings = platform.get()
    client = registry_client(settings.mlflow_tracking_uri)
    try:
        done = roll_back(client, by=context.run.run_id)
    except NothingToRollBackTo as exc:
        raise dg.Failure(str(exc)) from exc
    tags = client.get_model_version(REGISTERED_MODEL, done.champion).tags
    model_tag, bento_tag = tags.get("bento_model_tag"), tags.get("bento_tag")
    if model_tag is None or bento_tag is None:  # its Bento was never recorded: build it now
        built, _ = build_bento(settings, load_version(settings.mlflow_tracking_uri,
                                                      done.champion))
        model_tag, bento_tag = built["model_tag"], built["bento_tag"]
    publish_champion(settings.serving_dir, model_tag, done.champion, bento_tag,
                     reason="rollback")
    context.log.info("rolled back from version %s to %s; serving %s", done.replaced,
                     done.champion, model_tag)
    context.log_event(dg.AssetObservation(
        asset_key="champion", metadata={"champion_version": done.champion,
                                        "rolled_back_from": done.replaced,
                                        "previous_version": done.previous or "none",
                                        "rolled_back_at": done.rolled_back_at,
                                        "serving_model_tag": model_tag}))


@dg.job(description="Restores the previous champion (registry aliases and serving). Also "
                    "`retail-ml rollback`.", tags={"retail_ml/trigger": "rollback"})
def rollback() -> None:
    roll_back_champion()
