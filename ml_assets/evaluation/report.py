"""The evaluation report: a rolling-origin backtest of the challenger, the champion and the
baselines on the same rows, and its metric tables (overall, by store, category and horizon).

Every model is refitted at every origin (its recipe: columns, objective and number of rounds),
so every score is out of sample. The champion is refitted as it was deployed: on data that
ends as much earlier than the challenger's as its training data did (its staleness). So
retraining on unchanged data gains nothing, and the challenger wins by what newer data or a
better recipe buy. Scoring the champion's artifact itself would be in sample on the backtest
windows and block every retrain (measured: 0.30 in-sample against 0.51 out of sample on the
small test world).

What is scored is what is served: at each origin the scored rows are built by the function that
builds `forecast_features` (`rows_at_origin`): the series active then, the history up to the
origin and the plan as known then, or the actual plan values where no delivery was known yet
(historical files; the report says which). Rows the dataset's `zero_when` rule forces (closed
days) are forecast as 0 by every forecaster and left out of the metrics.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from ml_assets.evaluation.backtest import rolling_origins, train_mask
from ml_assets.evaluation.baselines import naive_scale
from ml_assets.evaluation.intervals import calibrate, coverage_by_bucket, scored_rows
from ml_assets.evaluation.metrics import horizon_bucket, metric_table
from ml_assets.features.transforms import SERIES
from ml_assets.training.dataset import TARGET

# (train rows, rows to score) -> forecasts for the rows to score
Refit = Callable[[pl.DataFrame, pl.DataFrame], np.ndarray]
# origin -> (the rows served at that origin with their actuals, the known future's source)
RowsAt = Callable[[dt.date], tuple[pl.DataFrame, str]]
# (1-based index of the origin, number of origins, the origin): called as each origin starts,
# because refitting every candidate at every origin is the pipeline's longest step
Progress = Callable[[int, int, dt.date], None]


@dataclass(frozen=True)
class Candidate:
    name: str
    refit: Refit
    lag_days: int = 0  # its training data ends this much before each origin


@dataclass(frozen=True)
class BacktestSpec:
    horizon: int  # periods
    period_days: int
    season: int  # periods: 7 daily, 52 weekly
    ma_window: int  # periods
    train_window: int  # periods of training rows before each origin, as in training
    n_origins: int = 3

    @property
    def moving_average(self) -> str:
        return f"moving_average_{self.ma_window}"


def category_column(frame: pl.DataFrame) -> str | None:
    """The attribute the report groups by as 'category': `item_category` when the data has
    it, else the first categorical item attribute, else the first categorical store one."""
    present = [c for c, t in frame.schema.items()
               if t == pl.Utf8 and frame.get_column(c).null_count() < frame.height]
    ranked = ([c for c in present if c == "item_category"]
              + [c for c in present if c.startswith("item_")]
              + [c for c in present if c.startswith("store_")])
    return ranked[0] if ranked else None


def plan_origins(dates: pl.Series, spec: BacktestSpec) -> tuple[list[dt.date], int]:
    """The backtest origins and the horizon they are scored over.

    The full plan is `n_origins` origins, each over the whole horizon, each with at least a
    horizon of history before it (lags start there). A shorter history gets as many full
    origins as fit, and below one, a single origin a horizon after the start, scored over
    what remains: a real dataset with a short history still gets a report rather than a crash.
    """
    first, last = dates.min(), dates.max()
    if first is None or last is None:
        raise ValueError("no labelled rows to backtest on")
    step = dt.timedelta(days=spec.period_days)
    earliest = first + spec.horizon * step  # type: ignore[operator]
    fit = sum(1 for k in range(1, spec.n_origins + 1)
              if last - k * spec.horizon * step >= earliest)  # type: ignore[operator]
    if fit:
        return rolling_origins(last, spec.horizon, spec.period_days, fit), spec.horizon
    remaining = (last - earliest).days // spec.period_days  # type: ignore[operator]
    if remaining < 1:
        raise ValueError(f"{(last - first).days + 1} days of history cannot be backtested "  # type: ignore[operator]
                         f"over a horizon of {spec.horizon} periods: it needs more than two "
                         "horizons of data")
    return [earliest], remaining


def run_backtest(labelled: pl.DataFrame, rows_at: RowsAt, spec: BacktestSpec,
                 candidates: list[Candidate], progress: Progress | None = None
                 ) -> tuple[pl.DataFrame, dict[str, str]]:
    """One row per scored (series, date, origin): keys, `horizon`, the actual, `category`,
    `forced_zero`, and one column per candidate and baseline.

    `labelled` is the training table (feature rows with a target) the candidates refit on;
    `rows_at(origin)` gives the rows served at that origin and where their known future came
    from (`ml_assets.forecasting.horizon.rows_at_origin`): what is scored is what would have
    been served. Rows the `zero_when` rule forces are forecast as 0 by everyone. Returns the
    table and, per origin, the source of its known future ("plan" or "actuals"). `progress`
    hears of each origin as it starts."""
    origins, horizon = plan_origins(labelled.get_column("date"), spec)
    window = dt.timedelta(days=spec.train_window * spec.period_days)
    parts, sources = [], {}
    for i, origin in enumerate(origins, start=1):
        if progress is not None:
            progress(i, len(origins), origin)
        rows, sources[str(origin)] = rows_at(origin)
        rows = rows.filter(pl.col("horizon") <= horizon)
        category = category_column(rows)
        out = rows.select(*SERIES, "date", "origin", "horizon", TARGET, "forced_zero",
                          (pl.col(category) if category else pl.lit("all")).alias("category"),
                          "seasonal_naive", spec.moving_average)
        for model in candidates:
            end = origin - dt.timedelta(days=model.lag_days)
            train = labelled.filter(train_mask(labelled, end) & (pl.col("date") > end - window))
            out = out.with_columns(pl.Series(model.name, model.refit(train, rows), pl.Float64))
        parts.append(out)
    table = pl.concat(parts)
    forecasters = [*(m.name for m in candidates), "seasonal_naive", spec.moving_average]
    zero = pl.col("forced_zero")
    return table.with_columns(pl.when(zero).then(0.0).otherwise(pl.col(c)).alias(c)
                              for c in forecasters), sources


def mase_scales(labelled: pl.DataFrame, origins: list[dt.date], spec: BacktestSpec
                ) -> pl.DataFrame:
    """Per series and origin, the seasonal naive in-sample MAE up to that origin."""
    return pl.concat([naive_scale(labelled, spec.season, spec.period_days, origin=o)
                      .with_columns(origin=pl.lit(o, pl.Date)) for o in origins])


def report_tables(backtest: pl.DataFrame, labelled: pl.DataFrame, spec: BacktestSpec,
                  forecasters: list[str]) -> dict[str, pl.DataFrame]:
    """Every metric for every forecaster, compared on the rows where all of them forecast."""
    scale = mase_scales(labelled, backtest.get_column("origin").unique().sort().to_list(), spec)
    # forced rows are 0 by rule, not forecasts: they would only flatter every forecaster
    frame = backtest.filter(~pl.col("forced_zero").fill_null(False)).with_columns(
        horizon_bucket=horizon_bucket(pl.col("horizon"), spec.period_days))
    groups = {"overall": [], "horizon_bucket": ["horizon_bucket"], "category": ["category"],
              "store": ["store_id"]}
    return {name: metric_table(frame, TARGET, forecasters, by, scale, same_rows=True)
            for name, by in groups.items()}


def overall_wape(tables: dict[str, pl.DataFrame]) -> dict[str, float]:
    return dict(tables["overall"].select("forecaster", "wape").iter_rows())


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


def intervals_for(backtest: pl.DataFrame, forecaster: str, level: float, period_days: int
                  ) -> tuple[dict, pl.DataFrame | None, str]:
    """The interval calibration of `forecaster`'s backtest forecasts (the JSON stored with its
    model version, with the coverage measured leaving one origin out), the coverage table and
    how it was measured; an empty document and the reason when no scored row has an actual."""
    if scored_rows(backtest, forecaster).height == 0:
        return {}, None, "no backtest row has an actual to calibrate intervals on"
    coverage, measured = coverage_by_bucket(backtest, forecaster, level, period_days)
    calibration = replace(calibrate(backtest, forecaster, level, period_days),
                          measured=measured, coverage={b: round(c, 4) for b, c in coverage.select(
                              "bucket", "coverage").iter_rows()})
    return calibration.to_json(), coverage, measured
