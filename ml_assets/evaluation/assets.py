"""The evaluation report asset and its blocking promotion gate."""

import datetime as dt
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from ml_assets.evaluation import plots
from ml_assets.evaluation.gate import decide
from ml_assets.evaluation.report import (
    BacktestSpec,
    Candidate,
    overall_wape,
    report_tables,
    run_backtest,
)
from ml_assets.features.assets import feature_spec
from ml_assets.metadata import markdown_table
from ml_assets.training.assets import TRAINING_TABLE
from ml_assets.training.dataset import TARGET, canonical_order
from ml_assets.training.model import predict, refit
from ml_assets.training.registry import RegisteredModel, load_alias, registry_client
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
    """The model's recipe (columns, objective, rounds), refitted at each backtest origin."""
    def fit_predict(train: pl.DataFrame, rows: pl.DataFrame) -> np.ndarray:
        train = canonical_order(train, model.columns)
        booster = refit(model.matrix(train), train.get_column(TARGET).to_numpy(),
                        model.tags["objective"], int(model.tags["rounds"]))
        return predict(booster, model.matrix(rows))
    return Candidate(name, fit_predict, lag_days)


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
    deps=["demand_model"],
    required_resource_keys={"mlflow", "delta", "platform"},
    kinds={"mlflow", "polars"},
    check_specs=[dg.AssetCheckSpec(
        GATE, asset="model_evaluation", blocking=True,
        description="Passes only if the challenger beats seasonal naive and the champion's "
                    "backtest WAPE by the configured margin; when it fails, nothing downstream "
                    "(champion, Bento) runs.")],
    description="Rolling-origin backtest (>= 3 origins, each over the full horizon) of the "
                "challenger and the champion (each refitted per origin, the champion on data "
                "as stale as its own), seasonal naive and a moving average on the same rows; "
                "metrics overall and by store, category and horizon bucket; plots.",
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
        candidates.append(candidate("champion", champion, staleness_days(challenger, champion)))
    backtest = run_backtest(labelled, spec, candidates)
    forecasters = ["challenger", *(["champion"] if champion else []), "seasonal_naive",
                   spec.moving_average]
    tables = report_tables(backtest, labelled, spec, forecasters)
    wapes = overall_wape(tables)
    decision = decide(wapes["challenger"], wapes["seasonal_naive"], wapes.get("champion"),
                      settings.promotion_margin)
    delta_version = delta.overwrite(EVALUATION_TABLE,
                                    stored_tables(tables, challenger.version),
                                    predicate=f"model_version = '{challenger.version}'")
    images = report_images(backtest, forecasters, challenger, spec.period_days)
    with tempfile.TemporaryDirectory() as tmp:
        for name, png in images.items():
            (Path(tmp) / f"{name}.png").write_bytes(png)
        tracking.log_artifacts(tmp, artifact_path="evaluation")
    tracking.log_metrics({f"backtest_wape_{name}": w for name, w in wapes.items()})
    client = registry_client(uri)
    gate_tags = {"backtest_wape": wapes["challenger"], "seasonal_naive_wape":
                 wapes["seasonal_naive"], "champion_wape": wapes.get("champion"),
                 "compared_with": champion.version if champion else "none",
                 "gate": "passed" if decision.passed else "blocked",
                 "gate_reason": decision.reason}
    for key, value in gate_tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, challenger.version, key, str(value))
    headline = {f"wape_{k}": round(v, 4) for k, v in wapes.items()}
    return dg.MaterializeResult(
        metadata={
            "challenger_version": challenger.version,
            "champion_version": champion.version if champion else "none",
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
            "plots": dg.MetadataValue.md(plots.markdown_images(images)),
        },
        check_results=[dg.AssetCheckResult(
            check_name=GATE, passed=decision.passed, description=decision.reason,
            metadata={"reason": decision.reason, **headline,
                      "margin": settings.promotion_margin})],
    )
