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


class NothingToRollBackTo(Exception):
    pass


@dataclass(frozen=True)
class Rollback:
    champion: str  # restored
    replaced: str  # the champion rolled back from
    previous: str | None  # the champion before the restored one, if any
    rolled_back_at: str


def roll_back(client: mlflow.MlflowClient, by: str) -> Rollback:
    """Restores the `previous` champion: `champion` moves back to it, `previous` to the one it
    had replaced (so another rollback walks further back), and both versions record it."""
    current = alias_version(client, "champion")
    restored = alias_version(client, "previous")
    if current is None or restored is None:
        raise NothingToRollBackTo(
            f"{REGISTERED_MODEL} has no {'champion' if current is None else 'previous'} "
            "version to roll back from or to")
    before = client.get_model_version(REGISTERED_MODEL, restored).tags.get("replaced_version")
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    client.set_registered_model_alias(REGISTERED_MODEL, "champion", restored)
    if before and before != "none":
        client.set_registered_model_alias(REGISTERED_MODEL, "previous", before)
    else:
        client.delete_registered_model_alias(REGISTERED_MODEL, "previous")
    for key, value in {"promoted_at": now, "promotion_trigger": "rollback",
                       "promoted_by_run": by, "replaced_version": current}.items():
        client.set_model_version_tag(REGISTERED_MODEL, restored, key, value)
    client.set_model_version_tag(REGISTERED_MODEL, current, "rolled_back_at", now)
    client.set_model_version_tag(REGISTERED_MODEL, current, "rolled_back_by", by)
    return Rollback(restored, current, before if before != "none" else None, now)
