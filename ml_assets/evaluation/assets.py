"""The evaluation report asset and its blocking promotion gate."""

import datetime as dt
import tempfile
from dataclasses import replace
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import polars as pl

from ml_assets.evaluation import plots
from ml_assets.evaluation.gate import GateDecision, decide
from ml_assets.evaluation.intervals import (
    calibrate,
    coverage_by_bucket,
    quantile_names,
    scored_rows,
)
from ml_assets.evaluation.oracle import ORACLE, ORIGIN_ORACLE, oracle_ratios, with_oracle
from ml_assets.evaluation.report import (
    BacktestSpec,
    Candidate,
    RowsAt,
    overall_wape,
    report_tables,
    run_backtest,
)
from ml_assets.features.assets import feature_spec
from ml_assets.features.transforms import SERIES
from ml_assets.forecasting.horizon import rows_at_origin
from ml_assets.ingest.plan import PLAN_TABLE
from ml_assets.metadata import markdown_table
from ml_assets.simulation.landing import world_for
from ml_assets.training.assets import TRAINING_TABLE
from ml_assets.training.dataset import TARGET, canonical_order
from ml_assets.training.model import predict, refit, scale_tag
from ml_assets.training.registry import (
    BASELINE_KIND,
    RegisteredModel,
    load_alias,
    load_version,
    register_baseline,
    registry_client,
    save_intervals,
)
from resources.delta import DeltaStore
from resources.settings import Settings
from resources.tracking import REGISTERED_MODEL

EVALUATION_TABLE = "gold/model_evaluation"
GATE = "promotion_gate"


def backtest_spec(settings: Settings) -> BacktestSpec:
    ds = settings.dataset
    return BacktestSpec(horizon=ds.horizon_periods, period_days=ds.period_days,
                        season=ds.season_periods, ma_window=feature_spec(ds).windows[1],
                        train_window=ds.training_window_periods + ds.horizon_periods,
                        n_origins=settings.backtest_origins)


def candidate(name: str, model: RegisteredModel, lag_days: int = 0) -> Candidate:
    """The model's recipe (columns, objective, rounds), refitted at each backtest origin. A
    baseline has nothing to fit: its forecast is its column of the rows."""
    if model.booster is None:
        return Candidate(name, lambda train, rows: model.predict(rows))

    def fit_predict(train: pl.DataFrame, rows: pl.DataFrame) -> np.ndarray:
        train = canonical_order(train, model.columns)
        booster = refit(model.matrix(train), train.get_column(TARGET).to_numpy(),
                        model.tags["objective"], int(model.tags["rounds"]),
                        scale_tag(model.tags.get("target_scale")))
        return predict(booster, model.matrix(rows))
    return Candidate(name, fit_predict, lag_days)


def rows_at(settings: Settings, delta: DeltaStore) -> RowsAt:
    """The backtest's rows at an origin, from bronze: `rows_at_origin` on one read."""
    spec = feature_spec(settings.dataset)
    sales = delta.read("bronze/sales").drop("source_file", "row_number")
    first_sale = sales.group_by(SERIES).agg(pl.col("date").min().alias("first_sale_date"))
    dims = {name: delta.read(f"bronze/{name}") if delta.exists(f"bronze/{name}") else None
            for name in ("stores", "items", "calendar")}
    plan = delta.read(PLAN_TABLE) if delta.exists(PLAN_TABLE) else None
    return lambda origin: rows_at_origin(sales, origin, spec, plan, first_sale=first_sale,
                                         **dims)


def beats_baselines(wapes: dict[str, float], spec: BacktestSpec) -> bool:
    """A first champion must beat the best baseline, not only seasonal naive."""
    return wapes["challenger"] < min(wapes["seasonal_naive"], wapes[spec.moving_average])


def baseline_challenger(context: dg.AssetExecutionContext, settings: Settings,
                        challenger: RegisteredModel, wapes: dict[str, float],
                        spec: BacktestSpec) -> tuple[RegisteredModel, GateDecision]:
    """Registers the best baseline as a model version, gated through, and moves `challenger`
    to it: with no champion yet, the baseline then becomes champion (the `champion` asset)."""
    name = min(("seasonal_naive", spec.moving_average), key=lambda k: wapes[k])
    tracking = context.resources.mlflow
    tracking.log_dict({"kind": BASELINE_KIND, "forecaster": name, "column": name,
                       "season_periods": spec.season, "window_periods": spec.ma_window},
                      "baseline/baseline.json")
    run = mlflow.active_run()
    assert run is not None
    reason = (f"Passed, as a baseline: there is no champion yet, and the XGBoost challenger "
              f"(v{challenger.version}, WAPE {wapes['challenger']:.4f}) does not beat the best "
              f"baseline, {name} (WAPE {wapes[name]:.4f}), so {name} becomes champion and "
              "forecasts are served. Later challengers must beat it.")
    tags = {"backtest_wape": str(wapes[name]), "seasonal_naive_wape":
            str(wapes["seasonal_naive"]), "compared_with": "none", "gate": "passed",
            "gate_reason": reason, "train_end": challenger.tags.get("train_end", ""),
            "objective": name, "rounds": "0"}
    uri = settings.mlflow_tracking_uri
    version = register_baseline(uri, run.info.run_id, run.info.artifact_uri, name, tags)
    registry_client(uri).set_registered_model_alias(REGISTERED_MODEL, "challenger", version)
    baseline = load_version(uri, version)
    return baseline, GateDecision(True, reason)


def expected_demand(settings: Settings, backtest: pl.DataFrame,
                    at_origin: bool = False) -> pl.DataFrame:
    """The simulated world's true expected demand over the backtest's dates (the world as
    landed: its persisted start and every scenario started so far); `at_origin`: as expected
    at each row's origin, per origin (oracle.py)."""
    world = world_for(settings)

    def expected(rows: pl.DataFrame, known_at: dt.date | None) -> pl.DataFrame:
        dates = rows.get_column("date")
        return world.expected(dates.min(), dates.max() + dt.timedelta(days=1), known_at)
    if not at_origin:
        return expected(backtest, None)
    return pl.concat([expected(rows, origin).with_columns(origin=pl.lit(origin, pl.Date))
                      for (origin,), rows in backtest.group_by("origin")])


def oracle_backtest(settings: Settings, backtest: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """The backtest with the oracles' columns, or unchanged with the reason there are none: the
    world as configured does not know every scored row (its data came from another world),
    and scoring the others on fewer rows would change what the gate compares."""
    joined = with_oracle(with_oracle(backtest, expected_demand(settings, backtest)),
                         expected_demand(settings, backtest, at_origin=True), ORIGIN_ORACLE)
    unknown = joined.filter(pl.col(TARGET).is_not_null() & pl.col(ORACLE).is_null()).height
    if unknown:
        return backtest, (f"none: the simulated world as configured has no expected demand for "
                          f"{unknown} scored rows (was the data landed by another world?)")
    return joined, ""


def intervals_for(backtest: pl.DataFrame, forecaster: str, settings: Settings,
                  spec: BacktestSpec) -> tuple[dict, pl.DataFrame | None, str]:
    """The interval calibration of `forecaster`'s backtest forecasts (the JSON stored with its
    model version, with the coverage measured leaving one origin out) and the coverage table;
    an empty document and the reason when no scored row has an actual."""
    if scored_rows(backtest, forecaster).height == 0:
        return {}, None, "no backtest row has an actual to calibrate intervals on"
    level = settings.interval_level
    coverage, measured = coverage_by_bucket(backtest, forecaster, level, spec.period_days)
    calibration = replace(calibrate(backtest, forecaster, level, spec.period_days),
                          measured=measured, coverage={b: round(c, 4) for b, c in coverage.select(
                              "bucket", "coverage").iter_rows()})
    return calibration.to_json(), coverage, measured


def staleness_days(challenger: RegisteredModel, champion: RegisteredModel) -> int:
    """How much older the champion's training data is than the challenger's."""
    ends = [dt.date.fromisoformat(m.tags["train_end"]) for m in (challenger, champion)]
    return max((ends[0] - ends[1]).days, 0)


def stored_tables(tables: dict[str, pl.DataFrame], version: str) -> pl.DataFrame:
    """The report's tables as one long frame for Delta: (scope, group, forecaster, metrics)."""
    parts = []
    for scope, table in tables.items():
        grouped = scope != "overall"
        group = pl.col(table.columns[0]).cast(pl.Utf8) if grouped else pl.lit("all")
        parts.append(table.select(pl.lit(version).alias("model_version"),
                                  pl.lit(scope).alias("scope"), group.alias("group"),
                                  *(table.columns[1:] if grouped else table.columns)))
    return pl.concat(parts)


def rounded(table: pl.DataFrame) -> list[tuple]:
    return [tuple(round(v, 4) if isinstance(v, float) else v for v in row)
            for row in table.iter_rows()]


def report_images(backtest: pl.DataFrame, forecasters: list[str], model: RegisteredModel,
                  period_days: int) -> dict[str, bytes]:
    series = plots.representative_series(backtest)
    return {
        "forecast_vs_actual": plots.forecast_vs_actual_png(backtest, forecasters, series),
        "error_by_horizon": plots.error_by_horizon_png(backtest, forecasters, period_days),
        "feature_importance": plots.feature_importance_png(
            model.booster.get_score(importance_type="gain")),
    }


@dg.asset(
    group_name="evaluation",
    deps=["demand_model", "plan"],
    required_resource_keys={"mlflow", "delta", "platform"},
    kinds={"mlflow", "polars"},
    check_specs=[dg.AssetCheckSpec(
        GATE, asset="model_evaluation", blocking=True,
        description="Passes only if the challenger beats seasonal naive and the champion's "
                    "backtest WAPE by the configured margin; when it fails, nothing downstream "
                    "(champion, Bento) runs.")],
    description="Rolling-origin backtest (>= 3 origins, each over the full horizon) of the "
                "challenger and the champion (each refitted per origin, the champion on data "
                "as stale as its own), seasonal naive and a moving average on the same rows "
                "(and, on the simulated world, the oracle: its true expected demand); metrics "
                "overall and by store, category and horizon bucket; plots. Calibrates the "
                "prediction intervals on the backtest's residuals, stored with the version, and "
                "reports their coverage by horizon bucket, measured leaving one origin out.",
)
def model_evaluation(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    settings: Settings = context.resources.platform.get()
    delta, tracking = context.resources.delta, context.resources.mlflow
    uri = settings.mlflow_tracking_uri
    challenger = load_alias(uri, "challenger")
    if challenger is None:
        raise dg.Failure("No model has the alias `challenger`: materialize `demand_model` first")
    champion = load_alias(uri, "champion")
    if champion is not None and champion.version == challenger.version:
        champion = None  # re-evaluating the champion itself: nothing to compare against
    spec = backtest_spec(settings)
    training_version = delta.version(TRAINING_TABLE)
    labelled = delta.read(TRAINING_TABLE, training_version).drop("split")
    candidates = [candidate("challenger", challenger)]
    if champion is not None:
        lag = staleness_days(challenger, champion) if champion.booster is not None else 0
        candidates.append(candidate("champion", champion, lag))
    backtest, known_future = run_backtest(labelled, rows_at(settings, delta), spec, candidates)
    forecasters = ["challenger", *(["champion"] if champion else []), "seasonal_naive",
                   spec.moving_average]
    has_oracle, oracle_missing = settings.dataset.simulation is not None, ""
    if has_oracle:  # the noise floor: the world's true expected demand, on the same rows
        backtest, oracle_missing = oracle_backtest(settings, backtest)
        has_oracle = not oracle_missing
        forecasters += [ORACLE, ORIGIN_ORACLE] if has_oracle else []
    tables = report_tables(backtest, labelled, spec, forecasters)
    wapes = overall_wape(tables)
    decision = decide(wapes["challenger"], wapes["seasonal_naive"], wapes.get("champion"),
                      settings.promotion_margin)
    client = registry_client(uri)
    gated = challenger
    if (champion is None and not (decision.passed and beats_baselines(wapes, spec))
            and not np.isnan(min(wapes["seasonal_naive"], wapes[spec.moving_average]))):
        # No champion at all: the best baseline becomes one, so that forecasts are served.
        gated, decision = baseline_challenger(context, settings, challenger, wapes, spec)
    # every version this evaluation registers carries intervals from its own backtest
    # residuals: the challenger, and a baseline made champion
    intervals, coverage, measured = intervals_for(backtest, "challenger", settings, spec)
    if intervals:
        save_intervals(uri, challenger.version, challenger.run_id, intervals)
    if gated is not challenger:
        own = intervals_for(backtest, str(gated.baseline), settings, spec)[0]
        if own:
            save_intervals(uri, gated.version, gated.run_id, own)
    delta_version = delta.overwrite(EVALUATION_TABLE,
                                    stored_tables(tables, challenger.version),
                                    predicate=f"model_version = '{challenger.version}'")
    images = report_images(backtest, forecasters, challenger, spec.period_days)
    with tempfile.TemporaryDirectory() as tmp:
        for name, png in images.items():
            (Path(tmp) / f"{name}.png").write_bytes(png)
        tracking.log_artifacts(tmp, artifact_path="evaluation")
    tracking.log_metrics({f"backtest_wape_{name}": w for name, w in wapes.items()})
    ratios = oracle_ratios(tables) if has_oracle else {}
    floor = oracle_ratios(tables, oracle=ORIGIN_ORACLE) if has_oracle else {}
    # MLflow's metric names allow no "+": bucket "29+" is logged as "29plus"
    tracking.log_metrics({**{f"interval_coverage_{b.replace('+', 'plus')}": c for b, c in
                             intervals.get("coverage", {}).items()},
                          **({"wape_ratio_challenger_oracle": ratios["all"],
                              "wape_ratio_challenger_origin_oracle": floor["all"]}
                             if ratios else {})})
    gate_tags = {"backtest_wape": wapes["challenger"], "seasonal_naive_wape":
                 wapes["seasonal_naive"], "champion_wape": wapes.get("champion"),
                 "compared_with": champion.version if champion else "none",
                 "gate": "passed" if decision.passed and gated is challenger else "blocked",
                 "gate_reason": decision.reason}
    for key, value in gate_tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, challenger.version, key, str(value))
    headline = {f"wape_{k}": round(v, 4) for k, v in wapes.items()}
    return dg.MaterializeResult(
        metadata={
            "challenger_version": challenger.version,
            "champion_version": champion.version if champion else "none",
            "promoted_candidate": gated.version,
            "promoted_kind": gated.baseline or "xgboost",
            # what the scored rows' known future was at each origin: the plan as known then,
            # or the actual values where no plan delivery was known yet (historical files)
            "known_future": dg.MetadataValue.json(known_future),
            "champion_staleness_days": candidates[-1].lag_days if champion else 0,
            **headline,
            "gate": decision.reason,
            "origins": dg.MetadataValue.json(
                [str(o) for o in backtest.get_column("origin").unique().sort()]),
            "scored_rows": backtest.height,
            "training_set_delta_version": training_version,
            "evaluation_delta_version": delta_version,
            **{f"metrics_{scope}": markdown_table(rounded(tables[scope]),
                                                  tuple(tables[scope].columns))
               for scope in ("overall", "horizon_bucket", "category")},
            **interval_metadata(intervals, coverage, measured),
            **({"wape_ratio_challenger_oracle": round(ratios["all"], 4),
                "wape_ratio_challenger_oracle_by_horizon_bucket": dg.MetadataValue.json(
                    {b: round(r, 4) for b, r in ratios.items() if b != "all"}),
                "wape_ratio_challenger_origin_oracle": round(floor["all"], 4),
                "wape_ratio_challenger_origin_oracle_by_horizon_bucket": dg.MetadataValue.json(
                    {b: round(r, 4) for b, r in floor.items() if b != "all"})}
               if ratios else {}),
            **({"oracle": oracle_missing} if oracle_missing else {}),
            "plots": dg.MetadataValue.md(plots.markdown_images(images)),
        },
        check_results=[dg.AssetCheckResult(
            check_name=GATE, passed=decision.passed, description=decision.reason,
            metadata={"reason": decision.reason, **headline,
                      "margin": settings.promotion_margin})],
    )


def interval_metadata(document: dict, coverage: pl.DataFrame | None, measured: str
                      ) -> dict[str, object]:
    """The report's intervals: level, coverage by horizon bucket (how it was measured), width."""
    if coverage is None:
        return {"intervals": f"none: {measured}"}
    low, high = quantile_names(float(document["level"]))
    return {
        "interval_level": document["level"],
        "interval": f"{low} to {high}",
        "interval_coverage": dg.MetadataValue.json(document["coverage"]),
        "interval_coverage_measured": measured,
        "metrics_intervals": markdown_table(rounded(coverage), tuple(coverage.columns)),
    }
