"""`retail-ml demo`: the whole graph in the real instance under RETAIL_ML_HOME, then a summary."""

from __future__ import annotations

import time
import warnings

import dagster as dg

from resources.settings import Settings

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def gate_blocked(result: dg.ExecuteInProcessResult) -> bool:
    """True when the run failed only because the promotion gate held the challenger back."""
    checks = result.get_asset_check_evaluations()
    failed = {e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"}
    return failed == {"model_evaluation"} and any(
        c.check_name == "promotion_gate" and not c.passed for c in checks)


def run(settings: Settings, dataset_ref: str) -> int:
    # Dagster's beta notices concern its API, not the user's demo: keep the output readable.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    from ml_assets.definitions import build_definitions
    from ml_assets.instance import prepare_dagster_home
    from ml_assets.simulation.landing import land, landed_days

    dagster_home = prepare_dagster_home(settings)
    started = time.monotonic()
    if settings.dataset.simulation is not None and not landed_days(settings):
        land(settings)  # the history; `retail-ml simulate` lands the days since, while you watch
    defs = build_definitions(settings, dataset_ref)
    job = defs.resolve_job_def("full_pipeline")
    keys = job.partitions_def.get_partition_keys()  # type: ignore[union-attr]
    print(f"retail-ml demo: running full_pipeline over {len(keys)} partitions "
          f"({keys[0]} .. {keys[-1]}) in {dagster_home}", flush=True)
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET,
            tags={"dagster/asset_partition_range_start": keys[0],
                  "dagster/asset_partition_range_end": keys[-1],
                  "retail_ml/trigger": "make demo"})
    print(summary(defs, settings, result, time.monotonic() - started))
    return 0 if result.success or gate_blocked(result) else 1


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict[str, object]:
    found = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in found[-1].metadata.items()} if found else {}


def summary(defs: dg.Definitions, settings: Settings, result: dg.ExecuteInProcessResult,
            seconds: float) -> str:
    delta = defs.resources["delta"]
    status = "succeeded" if result.success else (
        "finished: the promotion gate kept the current champion" if gate_blocked(result)
        else "FAILED")
    lines = [f"retail-ml demo: {status} in {seconds:.0f} s (run {result.run_id})",
             f"  RETAIL_ML_HOME   {settings.home}"]
    for table in ("bronze/sales", "bronze/sales_quarantine", "silver/features",
                  "gold/batch_forecasts"):
        if delta.exists(table):
            rows = delta.scan(table).select("date").collect().height
            lines.append(f"  {table:<24}{rows:>11,} rows, Delta v{delta.version(table)}")
    evaluation = _metadata(result, "model_evaluation")
    if evaluation:
        model, naive = evaluation["wape_challenger"], evaluation["wape_seasonal_naive"]
        change = (f" ({1 - model / naive:.0%} lower)" if naive > 0  # type: ignore[operator]
                  else "")
        lines.append(f"  challenger       v{evaluation['challenger_version']}: backtest WAPE "
                     f"{model:.4f} vs seasonal naive {naive:.4f}{change}")
        if "wape_ratio_challenger_oracle" in evaluation:
            lines.append(f"  noise floor      the oracle (true expected demand) scores WAPE "
                         f"{evaluation['wape_oracle']:.4f}: the challenger's is "
                         f"{evaluation['wape_ratio_challenger_oracle']:.2f}x that")
        if "wape_ratio_challenger_origin_oracle" in evaluation:
            lines.append(f"  reachable floor  the oracle as of each origin (the world's rules, "
                         f"not its later draws) scores {evaluation['wape_origin_oracle']:.4f}: "
                         f"the challenger's is "
                         f"{evaluation['wape_ratio_challenger_origin_oracle']:.2f}x that")
        if "interval_coverage" in evaluation:
            coverage = evaluation["interval_coverage"]
            buckets = ", ".join(f"{b} {c:.0%}" for b, c in coverage.items()  # type: ignore[union-attr]
                                if b != "all")
            lines.append(f"  intervals        {evaluation['interval_level']:.0%} intervals held "
                         f"{coverage['all']:.1%} of the backtest's actuals "  # type: ignore[index]
                         f"(by horizon: {buckets})")
        lines.append(f"  promotion gate   {evaluation['gate']}")
    champion = _metadata(result, "champion")
    if champion:
        kind = champion.get("kind", "xgboost")
        what = ("the XGBoost model" if kind == "xgboost" else
                f"the {kind} baseline: the XGBoost challenger did not beat it")
        lines.append(f"  champion         demand_forecaster v{champion['champion_version']}, "
                     f"{what} (previous: {champion['previous_version']})")
    bento = _metadata(result, "demand_forecaster_bento")
    if bento:
        lines.append(f"  Bento            {bento['bento_tag']}")
    served = bool(bento) or gate_blocked(result)  # blocked: the earlier champion still serves
    lines += ["next:",
              "  make dev     Dagster UI on http://127.0.0.1:3000 (lineage, report, gate)",
              *(["  make serve   the Bento on http://127.0.0.1:3001 (POST /forecast)"]
                if served else ["  (no champion, so nothing to serve: see the gate above)"]),
              "  make mlflow  MLflow UI on http://127.0.0.1:5000 (runs, versions, aliases)"]
    if settings.dataset.simulation is not None:
        lines += ["  .venv/bin/retail-ml simulate --days 14   two more weeks land; with `make dev` "
                  "running, the daily cycle and monitoring follow",
                  "  .venv/bin/retail-ml simulate --days 42 --scenario level_shift:2.0   demand "
                  "doubles: drift, one retrain, the gate, the new champion served"]
    return "\n".join(lines)
