"""Moving the registry's aliases: challenger → champion, the old champion → previous."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import mlflow

from ml_assets.training.registry import alias_version
from resources.tracking import REGISTERED_MODEL


class NotPromotable(Exception):
    pass


@dataclass(frozen=True)
class Promotion:
    champion: str
    previous: str | None
    promoted_at: str
    changed: bool


def promote(client: mlflow.MlflowClient, version: str, trigger: str, run_id: str) -> Promotion:
    """Makes `version` the champion if the promotion gate passed it, recording when and why on
    the version. Promoting the current champion again changes nothing."""
    tags = client.get_model_version(REGISTERED_MODEL, version).tags
    if tags.get("gate") != "passed":
        raise NotPromotable(f"Version {version} of {REGISTERED_MODEL} has not passed the "
                            f"promotion gate: {tags.get('gate_reason', 'it was never evaluated')}")
    current = alias_version(client, "champion")
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if current == version:
        return Promotion(version, alias_version(client, "previous"), tags.get("promoted_at", now),
                         changed=False)
    if current is not None:
        client.set_registered_model_alias(REGISTERED_MODEL, "previous", current)
    client.set_registered_model_alias(REGISTERED_MODEL, "champion", version)
    record = {"promoted_at": now, "promotion_trigger": trigger, "promoted_by_run": run_id,
              "replaced_version": current or "none"}
    for key, value in record.items():
        client.set_model_version_tag(REGISTERED_MODEL, version, key, value)
    return Promotion(version, current, now, changed=True)
