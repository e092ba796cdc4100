"""`retrain_on_drift`: monitoring evidence in, at most one `retrain` run per drift event out.

It reads the latest `feature_drift` materialization (its `windows`: the recent daily windows
with their drift share and key-feature PSI) and the latest `forecast_accuracy` one (its
`windows`: realized over expected WAPE for the week up to each day), and applies the retrain policy
(ml_assets/monitoring/policy.py). A retrain is tagged with its trigger and its evidence. The
cursor remembers the drift event already acted on, and the run key names that event, so the
same event never launches twice, across daemon restarts too. One exception: when the event's
retrain did not promote (the gate held the challenger back, typically because too little of the
shift had landed for the backtest to see it, or the run failed), the event asks again once the
cooldown has passed, under a new run key (`...-2`). Otherwise the skip reason says which rule
held the retrain back.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from typing import Any

import dagster as dg

from ml_assets.monitoring.policy import (
    DEFAULT_POLICY,
    RetrainPolicy,
    Window,
    decide,
    load_policy,
)
from resources.platform import PlatformSettings

RETRAIN_JOB = "retrain"
TRIGGER = "retrain_on_drift"
EVENT_TAG = "retail_ml/drift_event"
NOT_PROMOTED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def _metadata(record: Any) -> dict[str, Any]:
    materialization = record.asset_materialization
    return {k: v.value for k, v in materialization.metadata.items()} if materialization else {}


def monitoring_windows(instance: dg.DagsterInstance) -> list[Window]:
    """The drift report's recent windows, oldest first, each with the realized/expected WAPE
    evaluated through its day (when there is one)."""
    drift = instance.fetch_materializations(dg.AssetKey("feature_drift"), limit=1).records
    if not drift:
        return []
    windows = json.loads(_metadata(drift[0]).get("windows", "[]"))
    ratios: dict[str, dict] = {}
    accuracy = instance.fetch_materializations(dg.AssetKey("forecast_accuracy"), limit=1).records
    if accuracy:
        meta = _metadata(accuracy[0])
        ratios = {w["end"]: w for w in json.loads(meta.get("windows", "[]"))}
    return [Window(dt.date.fromisoformat(w["end"]), w.get("drift_share"), w.get("key_psi", {}),
                   ratios.get(w["end"], {}).get("wape_ratio"), ratios.get(w["end"], {}).get("bias"))
            for w in sorted(windows, key=lambda w: w["end"])]


def recent_retrains(instance: dg.DagsterInstance, now: dt.datetime
                    ) -> tuple[dt.datetime | None, int]:
    """When the last `retrain` run was created, and how many were created today (UTC)."""
    records = instance.get_run_records(dg.RunsFilter(job_name=RETRAIN_JOB), limit=50)
    created = [r.create_timestamp.astimezone(dt.UTC) for r in records]
    return (max(created) if created else None,
            sum(c.date() == now.date() for c in created))


def evaluate(instance: dg.DagsterInstance, policy: RetrainPolicy, cursor: str | None,
             now: dt.datetime) -> dg.RunRequest | dg.SkipReason:
    state = json.loads(cursor) if cursor else {}
    acted_on = dt.date.fromisoformat(state["acted_on"]) if state.get("acted_on") else None
    windows = monitoring_windows(instance)
    last, today = recent_retrains(instance, now)
    decision = decide(policy, windows, acted_on, last, today, now)
    attempt = 1
    if decision.rule == "already retrained":
        tried = instance.get_run_records(
            dg.RunsFilter(job_name=RETRAIN_JOB, tags={EVENT_TAG: str(decision.event_start)}))
        if tried and tried[0].dagster_run.status in NOT_PROMOTED:
            # the cooldown and the daily maximum still apply to the retry
            decision = decide(policy, windows, None, last, today, now)
            attempt = len(tried) + 1
            decision = replace(decision, reason=f"{decision.reason} (attempt {attempt}: the "
                               "event's last retrain was not promoted)")
    if not decision.retrain:
        return dg.SkipReason(f"{decision.rule}: {decision.reason}")
    latest = windows[-1]
    evidence = {"window": str(latest.end), "drift_share": latest.drift_share,
                "key_psi": latest.key_psi, "wape_ratio": latest.wape_ratio,
                "bias": latest.bias,
                "event_start": str(decision.event_start)}
    return dg.RunRequest(
        run_key=f"{TRIGGER}-{decision.event_start}" + (f"-{attempt}" if attempt > 1 else ""),
        tags={"retail_ml/trigger": TRIGGER, "retail_ml/trigger_rule": decision.rule,
              EVENT_TAG: str(decision.event_start),
              "retail_ml/trigger_reason": decision.reason,
              "retail_ml/evidence": json.dumps(evidence, sort_keys=True),
              "retail_ml/policy_digest": policy.digest()})


@dg.sensor(job_name=RETRAIN_JOB, minimum_interval_seconds=10,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Retrains when drift or realized error breaches the retrain policy "
                       "(sensors/retrain_policy.yaml or RETAIL_ML_RETRAIN_POLICY) for enough "
                       "consecutive windows, outside the cooldown and under the daily maximum. "
                       "One drift event gives one retrain; the gate decides promotion.")
def retrain_on_drift(context: dg.SensorEvaluationContext, platform: PlatformSettings):
    policy = load_policy(platform.get().retrain_policy or DEFAULT_POLICY)
    result = evaluate(context.instance, policy, context.cursor, dt.datetime.now(dt.UTC))
    if isinstance(result, dg.RunRequest):
        context.update_cursor(json.dumps({"acted_on": result.tags[EVENT_TAG]}))
    return result
