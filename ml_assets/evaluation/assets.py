"""The evaluation report asset and its blocking promotion gate.

The full report is one HTML page per model version (`html_report`), linked from the
materialization (`report`) and logged in the challenger's MLflow run with every backtest
metric; the Dagster metadata keeps the headline numbers and the gate's sentence.
"""

import datetime as dt
import tempfile
import time
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import polars as pl
from mlflow.entities import Metric
from mlflow.utils.validation import MAX_METRICS_PER_BATCH

from ml_assets.evaluation import html_report, plots
from ml_assets.evaluation.gate import GateDecision, decide
from ml_assets.evaluation.intervals import quantile_names
from ml_assets.evaluation.metrics import mlflow_metrics, mlflow_name
from ml_assets.evaluation.oracle import ORACLE, ORIGIN_ORACLE, oracle_ratios, with_oracle
from ml_assets.evaluation.report import (
    BacktestSpec,
    Candidate,
    RowsAt,
    intervals_for,
    overall_wape,
    report_tables,
    run_backtest,
    stored_tables,
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
from resources.tracking import REGISTERED_MODEL, tag_value

EVALUATION_TABLE = "gold/model_evaluation"
GATE = "promotion_gate"
REPORT_ARTIFACT = "evaluation/report.html"


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
    tags = {"backtest_wape": tag_value(wapes[name]), "seasonal_naive_wape":
            tag_value(wapes["seasonal_naive"]), "compared_with": "none", "gate": "passed",
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


def staleness_days(challenger: RegisteredModel, champion: RegisteredModel) -> int:
    """How much older the champion's training data is than the challenger's."""
    ends = [dt.date.fromisoformat(m.tags["train_end"]) for m in (challenger, champion)]
    return max((ends[0] - ends[1]).days, 0)


def rounded(table: pl.DataFrame) -> list[tuple]:
    return [tuple(round(v, 4) if isinstance(v, float) else v for v in row)
            for row in table.iter_rows()]


def report_facts(challenger: RegisteredModel, champion: RegisteredModel | None,
                 gated: RegisteredModel, known_future: dict[str, str], backtest: pl.DataFrame,
                 settings: Settings, lag_days: int) -> dict[str, str]:
    """The report's header: what was compared, on what, and what it led to."""
    per = plots.period_unit(settings.dataset.period_days)
    return {
        "challenger": f"v{challenger.version} ({challenger.baseline or 'xgboost'}, "
                      f"trained to {challenger.tags.get('train_end', '?')})",
        "champion": (f"v{champion.version}, refitted on data {lag_days} days staler"
                     if champion else "none yet"),
        "promoted candidate": f"v{gated.version} ({gated.baseline or 'xgboost'})",
        "origins (known future)": ", ".join(f"{o} ({src})" for o, src in known_future.items()),
        "horizon": f"{settings.dataset.horizon_periods} {per}s",
        "backtest rows": f"{backtest.height:,}",
        "promotion margin": f"{settings.promotion_margin:.1%}",
    }


def log_metrics(tracking_uri: str, run_id: str, metrics: dict[str, float]) -> None:
    """`metrics` in `run_id` at one timestamp, in batches of MLflow's largest."""
    now, items = int(time.time() * 1000), list(metrics.items())
    client = registry_client(tracking_uri)
    for i in range(0, len(items), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0)
                                          for k, v in items[i:i + MAX_METRICS_PER_BATCH]])


def write_report(path: Path, page: str, tracking_uri: str, run_id: str,
                 images: dict[str, bytes]) -> None:
    """The page at its stable path, and the page and the PNGs in the challenger's MLflow run
    (the run of the version the report is about, also when this is a later Dagster run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        for name, png in images.items():
            (Path(tmp) / f"{name}.png").write_bytes(png)
        (Path(tmp) / Path(REPORT_ARTIFACT).name).write_text(page, encoding="utf-8")
        registry_client(tracking_uri).log_artifacts(run_id, tmp,
                                                    str(Path(REPORT_ARTIFACT).parent))


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
    delta = context.resources.delta
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
    names = ", ".join(c.name for c in candidates)

    def progress(i: int, n: int, origin: dt.date) -> None:
        # the demo prints "progress: " lines while this, the longest step, runs
        context.log.info(f"progress: backtest origin {i}/{n} ({origin}): refitting {names}")
    backtest, known_future = run_backtest(labelled, rows_at(settings, delta), spec, candidates,
                                          progress)
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
    level = settings.interval_level
    intervals, coverage, measured = intervals_for(backtest, "challenger", level,
                                                  spec.period_days)
    if intervals:
        save_intervals(uri, challenger.version, challenger.run_id, intervals)
    if gated is not challenger:
        own = intervals_for(backtest, str(gated.baseline), level, spec.period_days)[0]
        if own:
            save_intervals(uri, gated.version, gated.run_id, own)
    delta_version = delta.overwrite(EVALUATION_TABLE,
                                    stored_tables(tables, challenger.version),
                                    predicate=f"model_version = '{challenger.version}'")
    importance = (challenger.booster.get_score(importance_type="gain")
                  if challenger.booster is not None else {})
    images = plots.report_images(backtest, forecasters, spec.period_days, importance)
    staleness = candidates[-1].lag_days if champion else 0
    page = html_report.render(html_report.EvaluationReport(
        challenger_version=challenger.version,
        gate_passed=decision.passed, gate_reason=decision.reason, tables=tables,
        images={plots.CAPTIONS[k]: png for k, png in images.items()}, coverage=coverage,
        coverage_note=(f"{intervals['level']:.0%} intervals, measured {measured}"
                       if intervals else f"none: {measured}"),
        facts=report_facts(challenger, champion, gated, known_future, backtest, settings,
                           staleness)))
    report = html_report.report_path(settings.home, challenger.version).resolve()
    write_report(report, page, uri, challenger.run_id, images)
    ratios = oracle_ratios(tables) if has_oracle else {}
    floor = oracle_ratios(tables, oracle=ORIGIN_ORACLE) if has_oracle else {}
    # every backtest metric of every forecaster, overall and by horizon bucket, on the
    # challenger's run: MLflow's runs table then compares versions on any of them
    log_metrics(uri, challenger.run_id, {
        **mlflow_metrics(tables["overall"], tables["horizon_bucket"]),
        **{mlflow_name(f"interval_coverage_{b}"): c
           for b, c in intervals.get("coverage", {}).items()},
        **({"wape_ratio_challenger_oracle": ratios["all"],
            "wape_ratio_challenger_origin_oracle": floor["all"]} if ratios else {})})
    gate_tags = {"backtest_wape": wapes["challenger"], "seasonal_naive_wape":
                 wapes["seasonal_naive"], "champion_wape": wapes.get("champion"),
                 "compared_with": champion.version if champion else "none",
                 "gate": "passed" if decision.passed and gated is challenger else "blocked",
                 "gate_reason": decision.reason, "evaluation_report": REPORT_ARTIFACT}
    for key, value in gate_tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, challenger.version, key,
                                     tag_value(value))
    headline = {f"wape_{k}": round(v, 4) for k, v in wapes.items()}
    by_bucket = tables["horizon_bucket"].filter(pl.col("forecaster") == "challenger")
    return dg.MaterializeResult(
        metadata={
            # the gate's whole sentence as plain text: Dagster shows text in full, inline
            "gate": dg.MetadataValue.text(decision.reason),
            "report": dg.MetadataValue.path(str(report)),
            "report_url": dg.MetadataValue.url(report.as_uri()),
            "report_artifact": f"runs:/{challenger.run_id}/{REPORT_ARTIFACT}",
            "challenger_version": challenger.version,
            "champion_version": champion.version if champion else "none",
            "promoted_candidate": gated.version,
            "promoted_kind": gated.baseline or "xgboost",
            **headline,
            "wape_challenger_by_horizon_bucket": dg.MetadataValue.json(
                {str(b): round(w, 4) for b, w in by_bucket.select(
                    "horizon_bucket", "wape").iter_rows()}),
            # short enough (under Dagster's 1000 characters) to show inline
            "metrics_overall": markdown_table(rounded(tables["overall"]),
                                              tuple(tables["overall"].columns)),
            # what the scored rows' known future was at each origin: the plan as known then,
            # or the actual values where no plan delivery was known yet (historical files)
            "known_future": dg.MetadataValue.json(known_future),
            "champion_staleness_days": staleness,
            "origins": dg.MetadataValue.json(
                [str(o) for o in backtest.get_column("origin").unique().sort()]),
            "scored_rows": backtest.height,
            "training_set_delta_version": training_version,
            "evaluation_delta_version": delta_version,
            **interval_metadata(intervals, measured),
            **({"wape_ratio_challenger_oracle": round(ratios["all"], 4),
                "wape_ratio_challenger_oracle_by_horizon_bucket": dg.MetadataValue.json(
                    {b: round(r, 4) for b, r in ratios.items() if b != "all"}),
                "wape_ratio_challenger_origin_oracle": round(floor["all"], 4),
                "wape_ratio_challenger_origin_oracle_by_horizon_bucket": dg.MetadataValue.json(
                    {b: round(r, 4) for b, r in floor.items() if b != "all"})}
               if ratios else {}),
            **({"oracle": oracle_missing} if oracle_missing else {}),
        },
        check_results=[dg.AssetCheckResult(
            check_name=GATE, passed=decision.passed, description=decision.reason,
            metadata={"reason": dg.MetadataValue.text(decision.reason), **headline,
                      "margin": settings.promotion_margin,
                      "report": dg.MetadataValue.path(str(report))})],
    )


def interval_metadata(document: dict, measured: str) -> dict[str, object]:
    """The intervals' headline: level, coverage by horizon bucket and how it was measured (the
    widths are in the report)."""
    if not document:
        return {"intervals": f"none: {measured}"}
    low, high = quantile_names(float(document["level"]))
    return {
        "interval_level": document["level"],
        "interval": f"{low} to {high}",
        "interval_coverage": dg.MetadataValue.json(document["coverage"]),
        "interval_coverage_measured": measured,
    }
