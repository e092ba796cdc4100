"""Accuracy side by side: this platform's rolling-origin backtest against mlforecast + LightGBM,
seasonal naive and the moving average, on the same backtest windows and the same scored rows.

    python -m benchmarks.accuracy_bench                    # every dataset, full size (~8 min)
    python -m benchmarks.accuracy_bench --quick            # small sizes; results/quick/
    python -m benchmarks.accuracy_bench --datasets store_daily,dept_weekly
    python -m benchmarks.accuracy_bench --quick --datasets simulated --sim-stores 3 \
        --sim-items 4 --sim-days 180                       # the smoke test's world

Per dataset (`DATASETS`: the simulator's default world, the two example shapes with synthetic
files from `benchmarks/accuracy_data.py`, and Complete Journey, daily and weekly, when its
builder is present):

1. **The platform** (`run_platform`, given the dataset's environment: home, dataset YAML, clock)
   runs its real assets on a real (ephemeral) Dagster instance, its Delta tables and MLflow
   registry in a temporary folder: `features_job`
   (ingest + features) over every partition, then `training_set`, `demand_model` and
   `model_evaluation` with `dg.materialize`, as `tests/data/test_real_shapes.py` does. Its
   numbers are the backtest rows `model_evaluation` scored (per origin, horizon, series: the
   actual, the challenger's forecast, seasonal naive and the moving average, `forced_zero`):
   read from a Delta table under the delta root when the platform stores one (a table whose name
   holds "backtest"), else taken from the asset's own `run_backtest` call as it runs in process.
   Nothing is refitted here. The rows each origin served (`rows_at`) are kept too: they hold
   the known-in-advance values as known at that origin.
2. **mlforecast + LightGBM** (`run_mlforecast`) is fitted at each of the same origins on the
   bronze history up to the origin (the same validated rows the platform trains on; a period
   missing inside a series counts as 0 sold, as mlforecast's lags count rows), with lags and
   rolling means comparable to the platform's (daily: lags 1, 7, 14, 28 and 364; rolling means
   of 7 and 28 days, the same weekday over 4 weeks, the fortnight around last year's day;
   weekly: lags 1, 2, 4, 8, 13 and 52, rolling means of 4 and 13 weeks, the 3 weeks around
   last year's; the yearly ones where the history holds a year and two horizons), calendar
   parts, the calendar file's columns, the static store and item attributes (numbers and short
   labels), and the known-in-advance columns (price, on_promo, covariates) as future exogenous
   inputs (`X_df`) taken from the rows the platform served at that origin: the same known
   future (the plan as known then, or the actuals where none was delivered yet). Recursive
   (mlforecast's default); LightGBM with a Tweedie objective, 200 rounds at rate 0.1, no
   tuning on these windows (`MlfRecipe`). Conformal intervals (`PredictionIntervals`, 80 %,
   up to 10 calibration windows) where they are cheap: at most 500k training rows, since
   mlforecast calibrates with a second fit.
3. **Scoring** joins everyone on (series, date, origin), leaves out the rows the dataset's
   `zero_when` rule forces to 0 (as `ml_assets/evaluation/report.py` does), keeps the rows
   where every method has a forecast, and uses `metric_table` (WAPE, MASE on the seasonal
   naive scale of each series up to its origin, RMSPE on non-zero actuals) overall and by
   horizon bucket. Interval coverage is reported for any method whose rows carry P10/P90, and
   the platform's own, as `model_evaluation` measured it (its metadata). On the simulated
   world, the oracle (the world's true expected demand) is scored alongside as the floor.

Reports: `benchmarks/results/accuracy.md` and `accuracy.json` (`results/quick/` with --quick).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import math
import os
import platform as host
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from benchmarks import accuracy_data

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
EXAMPLES = ROOT / "examples" / "datasets"
SERIES = ["store_id", "item_id"]
KEYS = [*SERIES, "date", "origin"]
TARGET = "units_sold"
LEVEL = 80  # the interval the platform serves (P10-P90) and mlforecast is asked for
# Where the platform's per-row forecast may be called, most likely first
PLATFORM_COLUMNS = ("challenger", "prediction", "forecast", "units_forecast")
# Pins the simulated world: its history ends the day before (the same days as when the default
# history ended 56 days before 2026-03-01, so results stay comparable).
SIM_TODAY = dt.date(2026, 1, 4)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


# --- datasets ---------------------------------------------------------------------------------


@dataclass
class Case:
    """A dataset ready to run: the environment the platform's settings load from."""

    name: str
    title: str
    env: dict[str, str]
    notes: list[str] = field(default_factory=list)


class Skipped(Exception):
    """A dataset that cannot run here (its builder is missing): noted in the report."""


@dataclass(frozen=True)
class Sizes:
    sim_stores: int | None = None  # None: the default world (retail-ml demo's)
    sim_items: int | None = None
    sim_days: int | None = None
    store_daily: accuracy_data.StoreDailySize = accuracy_data.StoreDailySize()
    dept_weekly: accuracy_data.DeptWeeklySize = accuracy_data.DeptWeeklySize()
    cj_top: int | None = None  # Complete Journey: the N best-selling categories (None: all)


FULL = Sizes()
QUICK = Sizes(sim_stores=5, sim_items=20, sim_days=730,
              store_daily=accuracy_data.StoreDailySize(stores=20),
              dept_weekly=accuracy_data.DeptWeeklySize(stores=6, depts=10),
              cj_top=40)


def _env(home: Path, dataset: str, today: dt.date) -> dict[str, str]:
    return {"RETAIL_ML_HOME": str(home), "RETAIL_ML_DATASET": dataset,
            "RETAIL_ML_TODAY": today.isoformat()}


def simulated_case(work: Path, sizes: Sizes) -> Case:
    """The simulator's world as `retail-ml demo` builds it (its default size, the history
    landed by `land`), on a pinned clock; smaller with --sim-*."""
    from ml_assets.simulation.landing import land
    from resources.settings import load_settings

    home = work / "home"
    custom = {k: v for k, v in (("n_stores", sizes.sim_stores), ("n_items", sizes.sim_items),
                                ("history_days", sizes.sim_days)) if v is not None}
    dataset = "simulated"
    if custom:
        path = work / "simulated.yaml"
        path.write_text(yaml.safe_dump({"source": "simulated", "simulation": custom}))
        dataset = str(path)
    env = _env(home, dataset, SIM_TODAY)
    settings = load_settings(env)
    land(settings)
    sim = settings.dataset.simulation
    assert sim is not None
    return Case("simulated", "Simulated world (retail-ml demo's)", env, [
        f"{sim.n_stores} stores x {sim.n_items} items, {sim.history_days} days of history "
        f"(seed {sim.seed}), landed as `retail-ml demo` does, clock pinned at {SIM_TODAY}; "
        "weekly plan deliveries with late changes, holiday closures (`zero_when: open: 0`)"])


def _example(work: Path, yaml_name: str) -> Path:
    target = work / yaml_name
    shutil.copy(EXAMPLES / yaml_name, target)  # unchanged, next to its data folder
    return target


def _today_after(yaml_path: Path, days: int = 15) -> dt.date:
    end = yaml.safe_load(yaml_path.read_text()).get("end_date")
    if end is None:
        raise ValueError(f"{yaml_path}: the benchmark needs a historical dataset (end_date)")
    return dt.date.fromisoformat(str(end)) + dt.timedelta(days=days)


def store_daily_case(work: Path, sizes: Sizes) -> Case:
    size = sizes.store_daily
    counts = accuracy_data.write_store_daily(work / "data", size)
    path = _example(work, "store_daily.yaml")
    return Case("store_daily", "Daily store level (Rossmann-shaped, store_daily.yaml)",
                _env(work / "home", str(path), _today_after(path)), [
        f"{counts['stores']} stores x {counts['days']} days ({size.start} .. {size.end}), "
        f"{counts['rows']:,} rows, {counts['closed']:,} closed days; store levels that drift, "
        "competitors opening, refurbishment gaps, Easter and Christmas; horizon 42 days; the "
        "plan (test.csv) starts after the data, so the backtest's known future is the actuals"])


def dept_weekly_case(work: Path, sizes: Sizes) -> Case:
    size = sizes.dept_weekly
    counts = accuracy_data.write_dept_weekly(work / "data", size)
    path = _example(work, "dept_weekly.yaml")
    return Case("dept_weekly", "Weekly store x department (Walmart-shaped, dept_weekly.yaml)",
                _env(work / "home", str(path), _today_after(path)), [
        f"{counts['series']} series x {counts['weeks']} weeks ({size.start} .. {size.end}), "
        f"{counts['rows']:,} rows ({counts['negative']} negative weeks clipped, "
        f"{counts['missing_weeks']} missing weeks); departments peaking at Christmas, Black "
        "Friday, back to school, summer and Easter (which moves by weeks); horizon 8 weeks"])


def complete_journey_case(work: Path, sizes: Sizes, frequency: str = "daily") -> Case:
    """Complete Journey's files from the installed package, by `retail-ml complete-journey`,
    next to a copy of examples/datasets/complete_journey[_weekly].yaml."""
    name = "complete_journey" + ("_weekly" if frequency == "weekly" else "")
    yaml_path = EXAMPLES / f"{name}.yaml"
    missing = [str(p.relative_to(ROOT)) for p in (yaml_path,) if not p.exists()]
    if importlib.util.find_spec("ml_assets.datasets.complete_journey") is None:
        missing.append("ml_assets/datasets/complete_journey.py")
    if missing:
        raise Skipped(f"not built yet: {', '.join(missing)} missing")
    path = _example(work, yaml_path.name)
    sales = yaml.safe_load(path.read_text())["sales"]["path"]
    out = (work / sales).parent
    command = [sys.executable, "-m", "ml_assets.cli", "complete-journey", "--out", str(out),
               "--frequency", frequency]
    if sizes.cj_top is not None:
        command += ["--top", str(sizes.cj_top)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        if "invalid choice: 'complete-journey'" in done.stderr:
            raise Skipped("`retail-ml complete-journey` is not there yet")
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    built = " ".join(command[command.index("complete-journey"):]).replace(str(out), "DIR")
    return Case(name, f"Complete Journey, {frequency} (real grocery data, {yaml_path.name})",
                _env(work / "home", str(path), _today_after(path)),
                [line.replace(str(out) + "/", "") for line in done.stdout.strip().splitlines()]
                + [f"built by `retail-ml {built}`"])


DATASETS: dict[str, Callable[[Path, Sizes], Case]] = {
    "simulated": simulated_case,
    "store_daily": store_daily_case,
    "dept_weekly": dept_weekly_case,
    "complete_journey": complete_journey_case,
    "complete_journey_weekly": lambda work, sizes: complete_journey_case(work, sizes, "weekly"),
}


# --- the platform -----------------------------------------------------------------------------


@dataclass
class PlatformRun:
    settings: Any  # resources.settings.Settings
    backtest: pl.DataFrame  # one row per scored (series, date, origin)
    source: str  # where the rows were read from
    served: dict[dt.date, pl.DataFrame]  # the rows served at each origin (known future)
    labelled: pl.DataFrame  # the training table: MASE scales
    spec: Any  # ml_assets.evaluation.report.BacktestSpec
    forecast_column: str
    evaluation: dict[str, Any]  # model_evaluation's metadata
    model: dict[str, Any]  # demand_model's metadata: the recipe it chose, on what scores
    seconds: dict[str, float]
    sales: pl.DataFrame  # bronze, for the peers
    dims: dict[str, pl.DataFrame | None]


@contextlib.contextmanager
def _capture_backtest() -> Iterator[dict[str, Any]]:
    """While `model_evaluation` runs in this process: the table its `run_backtest` returns and
    the rows its `rows_at` serves at each origin. Both names are looked up when the asset
    runs, so wrapping them in the module changes nothing else."""
    from ml_assets.evaluation import assets as module

    seen: dict[str, Any] = {"tables": [], "served": {}}
    saved = {name: getattr(module, name) for name in ("run_backtest", "rows_at")
             if hasattr(module, name)}

    def run_backtest(*args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.process_time()
        out = saved["run_backtest"](*args, **kwargs)
        seen["seconds"] = (time.perf_counter() - started, time.process_time() - cpu)
        table = out[0] if isinstance(out, tuple) else out
        if isinstance(table, pl.DataFrame):
            seen["tables"].append(table)
        return out

    def rows_at(*args: Any, **kwargs: Any) -> Any:
        inner = saved["rows_at"](*args, **kwargs)

        def at(origin: dt.date) -> Any:
            out = inner(origin)
            rows = out[0] if isinstance(out, tuple) else out
            if isinstance(rows, pl.DataFrame):
                seen["served"][origin] = rows
            return out
        return at

    replacements = {"run_backtest": run_backtest, "rows_at": rows_at}
    for name in saved:
        setattr(module, name, replacements[name])
    try:
        yield seen
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)


def _step_seconds(instance: Any, run_id: str) -> dict[str, float]:
    """Wall time of each step of a Dagster run, from its event log's timestamps."""
    start: dict[str, float] = {}
    out: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            start[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            out[event.step_key] = entry.timestamp - start.get(event.step_key, entry.timestamp)
    return out


def _stored_backtest(delta_root: Path) -> tuple[str, pl.DataFrame] | None:
    """A per-row backtest table the platform keeps under its delta root, if it keeps one."""
    from resources.delta import DeltaStore

    store = DeltaStore(root=str(delta_root))
    for log in sorted(delta_root.glob("**/_delta_log")):
        name = str(log.parent.relative_to(delta_root))
        if "backtest" not in name:
            continue
        table = store.read(name)
        if set(KEYS) | {"horizon", TARGET} <= set(table.columns):
            return name, table
    return None


def run_platform(env: Mapping[str, str]) -> PlatformRun:
    """The platform on one dataset, as a user runs it: its real assets on a real Dagster
    instance under env's RETAIL_ML_HOME. Returns the backtest rows `model_evaluation` scored."""
    import dagster as dg
    import mlflow

    from ml_assets.definitions import build_definitions
    from ml_assets.evaluation.assets import backtest_spec, rows_at
    from ml_assets.training.assets import TRAINING_TABLE
    from resources.delta import DeltaStore
    from resources.settings import load_settings

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    settings = load_settings(env)
    home = Path(env["RETAIL_ML_HOME"])
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    defs = build_definitions(settings, env["RETAIL_ML_DATASET"])
    # In-memory run and event storage, as tests/data/test_real_shapes.py uses: a sqlite event
    # log in the temp folder made the Rossmann-shaped ingest (942 daily partitions) 14x slower
    # here (250 s against 18 s), timing the storage rather than the pipeline.
    with dg.DagsterInstance.ephemeral(tempdir=str(home / "dagster")) as instance:
        job = defs.resolve_job_def("features_job")  # the ingest group, then features
        keys = job.partitions_def.get_partition_keys()  # type: ignore[union-attr]
        started = time.perf_counter()
        features = job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET,
            tags={"dagster/asset_partition_range_start": keys[0],
                  "dagster/asset_partition_range_end": keys[-1]})
        seconds["ingest_and_features"] = time.perf_counter() - started
        if not features.success:
            raise RuntimeError(f"features_job failed: {_failures(features)}")
        with _capture_backtest() as seen:
            result = dg.materialize(
                [defs.get_assets_def(a) for a in ("training_set", "demand_model",
                                                  "model_evaluation")],
                resources=defs.resources, instance=instance, raise_on_error=False,
                run_config=QUIET)
        mlflow.end_run()
        # the promotion gate may hold the challenger back: that fails model_evaluation's step
        # after it has scored, and is no failure here
        failures = {k: v for k, v in _failures(result).items() if k != "model_evaluation"}
        if failures:
            raise RuntimeError(f"training failed: {failures}")
        steps = _step_seconds(instance, result.run_id)
        seconds["training"] = steps.get("training_set", 0.0) + steps.get("demand_model", 0.0)
        seconds["evaluation_step"] = steps.get("model_evaluation", float("nan"))
        # the backtest proper: refits at every origin, the served rows, the baselines
        seconds["backtest"], seconds["backtest_cpu"] = seen.get("seconds", (math.nan,) * 2)
        event = instance.get_latest_materialization_event(dg.AssetKey("model_evaluation"))
        trained = instance.get_latest_materialization_event(dg.AssetKey("demand_model"))
    if event is None or event.asset_materialization is None:
        raise RuntimeError(f"model_evaluation did not materialize: {_failures(result)}")
    evaluation = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    model = ({k: v.value for k, v in trained.asset_materialization.metadata.items()
              if k in ("objective", "target_scale", "valid_wape")}
             if trained is not None and trained.asset_materialization is not None else {})
    delta = DeltaStore(root=str(settings.delta_root))
    spec = backtest_spec(settings)
    stored = _stored_backtest(settings.delta_root)
    if stored is not None:
        source, backtest = f"Delta table {stored[0]}", stored[1]
        if "model_version" in backtest.columns:
            backtest = backtest.filter(pl.col("model_version").cast(pl.Utf8)
                                       == str(evaluation["challenger_version"]))
    elif seen["tables"]:
        source, backtest = "model_evaluation's run_backtest, captured in process", \
            seen["tables"][-1]
    else:
        raise RuntimeError("no per-row backtest table: neither a Delta table under "
                           f"{settings.delta_root} nor model_evaluation's run_backtest output")
    origins = backtest.get_column("origin").unique().sort().to_list()
    served = dict(seen["served"])
    missing = [o for o in origins if o not in served]
    if missing:  # the asset's rows were not seen: build them with its own function
        at = rows_at(settings, delta)
        served.update({o: at(o)[0] for o in missing})
    column = next((c for c in PLATFORM_COLUMNS if c in backtest.columns), None)
    if column is None:
        raise RuntimeError(f"no forecast column among {PLATFORM_COLUMNS} in the backtest rows "
                           f"{backtest.columns}")
    sales = delta.read("bronze/sales").drop("source_file", "row_number", strict=False)
    dims = {name: delta.read(f"bronze/{name}") if delta.exists(f"bronze/{name}") else None
            for name in ("stores", "items", "calendar")}
    return PlatformRun(settings, backtest, source, served,
                       delta.read(TRAINING_TABLE).drop("split", strict=False), spec, column,
                       evaluation, model, seconds, sales, dims)


def _failures(result: Any) -> dict[str, str]:
    out = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error, messages = event.event_specific_data.error, []
            while error is not None:  # Dagster's wrapper first, the cause last
                messages.append(error.message.strip()[:400])
                error = error.cause
            out[event.step_key] = " <- ".join(reversed(messages)) or "failed"
    return out


# --- mlforecast + LightGBM --------------------------------------------------------------------


@dataclass(frozen=True)
class MlfRecipe:
    rounds: int = 200
    learning_rate: float = 0.1
    num_leaves: int = 63
    max_bin: int = 63  # as the platform's XGBoost
    intervals: bool = True
    # conformal intervals cost a second fit per origin (mlforecast's cross-validation): done
    # where the training rows are at most this many
    intervals_max_rows: int = 500_000
    interval_windows: int = 10  # at most; fewer where the shortest series needs it
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)


def _calendar_parts(date: pl.Expr, daily: bool) -> list[pl.Expr]:
    parts = [date.dt.month().alias("cal_month"), date.dt.week().alias("cal_week_of_year"),
             date.dt.ordinal_day().alias("cal_day_of_year"), date.dt.day().alias("cal_day")]
    return [date.dt.weekday().alias("cal_day_of_week"), *parts] if daily else parts


def _is_label(text: pl.Series) -> bool:
    """Short labels, not free text, dates written as text or an empty column."""
    values = text.drop_nulls()
    if values.is_empty() or values.n_unique() > 60:
        return False
    if (values.str.count_matches(r"\S+").mean() or 0) >= 3:  # type: ignore[operator]
        return False
    return values.str.to_date(strict=False).null_count() > 0


def _static_attributes(dims: Mapping[str, pl.DataFrame | None]) -> dict[str, pl.DataFrame]:
    """Per key, the attributes a model can use: numbers and short labels (no free text, no
    dates), prefixed so that store and item columns never clash."""
    out = {}
    for name, key in (("stores", "store_id"), ("items", "item_id")):
        frame = dims.get(name)
        if frame is None:
            continue
        keep = []
        for column, dtype in frame.schema.items():
            if column == key or frame.get_column(column).null_count() == frame.height:
                continue
            if dtype.is_numeric() or dtype == pl.Boolean:
                keep.append(pl.col(column).cast(pl.Float64).alias(f"{name}_{column}"))
            elif dtype == pl.Utf8 and _is_label(frame.get_column(column)):
                keep.append(pl.col(column).alias(f"{name}_{column}"))
        out[key] = frame.select(pl.col(key).cast(pl.Utf8), *keep).unique(key)
    return out


def _calendar_file(dims: Mapping[str, pl.DataFrame | None]) -> pl.DataFrame | None:
    frame = dims.get("calendar")
    if frame is None:
        return None
    keep = [pl.col(c).cast(pl.Float64).alias(f"calendar_{c}") if t.is_numeric()
            else pl.col(c).alias(f"calendar_{c}") for c, t in frame.schema.items()
            if c != "date" and (t.is_numeric() or (t == pl.Utf8 and _is_label(frame[c])))]
    return frame.select(pl.col("date").cast(pl.Date), *keep).unique("date")


def _known_columns(run: PlatformRun) -> list[str]:
    """The known-in-advance inputs: price, promotion and the dataset's covariates, where both
    the history and the served rows carry them."""
    ds = run.settings.dataset
    names = ["price", "on_promo", *(c.name for c in ds.covariates)]
    served = next(iter(run.served.values()))
    return [c for c in dict.fromkeys(names) if c in run.sales.columns and c in served.columns
            and run.sales.get_column(c).drop_nulls().n_unique() > 1]


def _mlf_config(daily: bool, history_periods: int, horizon: int) -> dict[str, Any]:
    from mlforecast.lag_transforms import RollingMean, SeasonalRollingMean

    year = 364 if daily else 52
    yearly = history_periods >= year + 2 * horizon  # enough rows to learn from the year lag
    if daily:
        lags = [1, 7, 14, 28, *([year] if yearly else [])]
        transforms: dict[int, list[Any]] = {
            1: [RollingMean(window_size=7), RollingMean(window_size=28)],
            7: [SeasonalRollingMean(season_length=7, window_size=4)]}
        if yearly:
            transforms[year - 7] = [RollingMean(window_size=15)]  # days 357..371 back
    else:
        lags = [1, 2, 4, 8, 13, *([year] if yearly else [])]
        transforms = {1: [RollingMean(window_size=4), RollingMean(window_size=13)]}
        if yearly:
            transforms[year - 1] = [RollingMean(window_size=3)]  # weeks 51..53 back
    return {"lags": lags, "lag_transforms": transforms}


@dataclass
class _Inputs:
    """What mlforecast sees, built once: the bronze history with the known inputs, the calendar
    and the static attributes, categoricals with fixed levels."""

    sales: pl.DataFrame
    known: list[str]
    defaults: dict[str, Any]
    statics: dict[str, pl.DataFrame]
    calendar: pl.DataFrame | None
    levels: dict[str, list[str]]
    base: dt.date
    period: int

    @classmethod
    def of(cls, run: PlatformRun) -> _Inputs:
        ds = run.settings.dataset
        known = _known_columns(run)
        statics = _static_attributes(run.dims)
        calendar = _calendar_file(run.dims)
        sales = run.sales.select("date", *SERIES, pl.col(TARGET).cast(pl.Float64), *known)
        labelled = [*statics.values(), *([calendar] if calendar is not None else [])]
        categorical = {c for f in labelled for c, t in f.schema.items()
                       if t == pl.Utf8 and c not in SERIES}
        categorical |= {c for c in known if sales.schema[c] == pl.Utf8}
        frames = [sales, *run.served.values(), *labelled]
        levels = {c: sorted({v for f in frames if c in f.columns
                             for v in f.get_column(c).drop_nulls().cast(pl.Utf8).to_list()})
                  for c in sorted(categorical)}
        base = sales.get_column("date").min()
        assert isinstance(base, dt.date)
        return cls(sales, known, {c.name: c.default for c in ds.covariates
                                  if c.default is not None},
                   statics, calendar, levels, base, ds.period_days)

    def enrich(self, frame: pl.DataFrame) -> pl.DataFrame:
        frame = frame.with_columns(
            *_calendar_parts(pl.col("date"), self.period == 1),
            t=(pl.col("date") - pl.lit(self.base)).dt.total_days() // self.period,
            unique_id=pl.concat_str(SERIES, separator="|"))
        if self.calendar is not None:
            frame = frame.join(self.calendar, on="date", how="left")
        for key, attrs in self.statics.items():
            frame = frame.join(attrs, on=key, how="left")
        return frame

    def history(self, origin: dt.date, served: set[str]) -> pl.DataFrame:
        """Every series on the period grid from its first row to its last, and to the origin
        for the series forecast there: a missing period sold nothing (mlforecast's lags count
        rows, not dates); the price carried, other known inputs defaulted."""
        hist = self.sales.filter(pl.col("date") <= origin)
        spans = hist.group_by(SERIES).agg(pl.col("date").min().alias("first"),
                                          pl.col("date").max().alias("last"))
        key = pl.concat_str(SERIES, separator="|")
        grid = spans.with_columns(date=pl.date_ranges(
            "first", pl.when(key.is_in(list(served))).then(pl.lit(origin))
            .otherwise(pl.col("last")), f"{self.period}d")).explode("date")
        hist = (grid.drop("first", "last").join(hist, on=[*SERIES, "date"], how="left")
                .sort([*SERIES, "date"]))
        fills = [pl.col(TARGET).fill_null(0.0)]
        for c in self.known:
            if c == "price":
                fills.append(pl.col(c).forward_fill().backward_fill().over(SERIES))
            elif c in self.defaults:
                fills.append(pl.col(c).fill_null(pl.lit(self.defaults[c]).cast(hist.schema[c])))
            elif hist.schema[c].is_numeric():
                fills.append(pl.col(c).fill_null(0))
        return self.enrich(hist.with_columns(fills))

    def pandas(self, frame: pl.DataFrame, columns: list[str]) -> Any:
        import pandas as pd

        out = frame.select(columns).to_pandas()
        for c, levels in self.levels.items():
            if c in out.columns:
                out[c] = pd.Categorical(out[c], categories=levels)
        return out


def run_mlforecast(run: PlatformRun, recipe: MlfRecipe) -> tuple[pl.DataFrame, dict[str, Any]]:
    """mlforecast + LightGBM fitted at each backtest origin on the history up to it, forecasting
    the served rows with their known future. Returns (keys + `mlforecast` [+ `mlforecast_p10`,
    `mlforecast_p90`]) and what it did."""
    import lightgbm as lgb
    from mlforecast import MLForecast
    from mlforecast.utils import PredictionIntervals

    horizon, daily = run.spec.horizon, run.spec.period_days == 1
    started, cpu = time.perf_counter(), time.process_time()
    inputs = _Inputs.of(run)
    static = [c for f in inputs.statics.values() for c in f.columns if c not in SERIES]
    parts, origins = [], []
    for origin, served in sorted(run.served.items()):
        future = inputs.enrich(served.select("date", *SERIES, *inputs.known))
        wanted = set(future.get_column("unique_id"))
        hist = inputs.history(origin, wanted)
        ids = sorted(wanted & set(hist.get_column("unique_id")))
        future = future.filter(pl.col("unique_id").is_in(ids))
        exog = [c for c in future.columns if c not in (*SERIES, "date", "t", "unique_id")]
        dynamic = [c for c in exog if c not in static]
        periods = int(hist.get_column("t").max() - hist.get_column("t").min()) + 1  # type: ignore[operator]
        model = lgb.LGBMRegressor(
            objective="tweedie", tweedie_variance_power=1.2, n_estimators=recipe.rounds,
            learning_rate=recipe.learning_rate, num_leaves=recipe.num_leaves,
            max_bin=recipe.max_bin, min_child_samples=20, subsample=0.8, subsample_freq=1,
            colsample_bytree=0.8, n_jobs=recipe.threads, random_state=7, verbose=-1)
        mlf = MLForecast(models={"mlforecast": model}, freq=1, num_threads=recipe.threads,
                         **_mlf_config(daily, periods, horizon))
        # mlforecast's conformal scores: every series needs more rows than its windows hold;
        # up to 10 windows (two at least), so that a quantile of the scores means something
        shortest = int(hist.group_by("unique_id").len().get_column("len").min())  # type: ignore[arg-type]
        windows = min(recipe.interval_windows, (shortest - 1) // horizon)
        cheap = hist.height <= recipe.intervals_max_rows
        intervals = (PredictionIntervals(n_windows=windows, h=horizon)
                     if recipe.intervals and cheap and windows >= 2 else None)
        train = inputs.pandas(hist, ["unique_id", "t", TARGET, *exog])
        fit_started = time.perf_counter()
        with warnings.catch_warnings():  # nulls in a calendar label or attribute are expected
            warnings.filterwarnings("ignore", message="Found null values")
            mlf.fit(train, id_col="unique_id", time_col="t", target_col=TARGET,
                    static_features=static, dropna=False, prediction_intervals=intervals)
            fit_s = time.perf_counter() - fit_started
            predicted = mlf.predict(h=horizon, X_df=inputs.pandas(future, ["unique_id", "t",
                                                                          *dynamic]),
                                    ids=ids, level=[LEVEL] if intervals else None)
        lo, hi = f"mlforecast-lo-{LEVEL}", f"mlforecast-hi-{LEVEL}"
        bounds = ([pl.col(lo).clip(lower_bound=0.0).alias("mlforecast_p10"),
                   pl.col(hi).clip(lower_bound=0.0).alias("mlforecast_p90")]
                  if intervals else [])
        series = future.select("unique_id", *SERIES).unique()
        parts.append(pl.from_pandas(predicted).join(series, on="unique_id").select(
            *SERIES,
            (pl.lit(inputs.base) + pl.duration(days=inputs.period) * pl.col("t")).alias("date"),
            pl.lit(origin).alias("origin"),
            pl.col("mlforecast").clip(lower_bound=0.0), *bounds))
        origins.append({"origin": str(origin), "train_rows": len(train), "series": len(ids),
                        "fit_s": round(fit_s, 1), "lags": mlf.ts.lags,
                        "interval_windows": intervals.n_windows if intervals else 0,
                        "intervals_skipped": None if intervals else (
                            "off" if not recipe.intervals else
                            f"over {recipe.intervals_max_rows:,} training rows: the "
                            "calibration fit would double the cost" if not cheap
                            else "a series shorter than two horizons")})
    info = {"seconds": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
            "origins": origins, "intervals": all(o["interval_windows"] for o in origins),
            "known_future": inputs.known, "features": {"static": static, "dynamic": dynamic}}
    return pl.concat(parts, how="diagonal"), info


# --- baselines' cost --------------------------------------------------------------------------


def baseline_seconds(run: PlatformRun) -> float:
    """What the two baselines cost to compute for every scored row, by the platform's own
    functions (the backtest rows already carry their values)."""
    from ml_assets.evaluation.baselines import moving_average, seasonal_naive

    targets = run.backtest.select(*SERIES, "date", "origin")
    started = time.perf_counter()
    seasonal_naive(run.sales, targets, run.spec.season, run.spec.period_days)
    moving_average(run.sales, targets, run.spec.ma_window, run.spec.period_days)
    return time.perf_counter() - started


# --- scoring ----------------------------------------------------------------------------------


def bucket_expr(horizon: int, period_days: int) -> pl.Expr:
    """The report's horizon buckets: daily 1-7, 8-14, 15-28, 29-H; weekly 1-2, 3-4, 5-H."""
    bounds = [7, 14, 28] if period_days == 1 else [2, 4]
    edges = [b for b in bounds if b < horizon] + [horizon]
    labels, low = [], 1
    for high in edges:
        labels.append(f"{low}-{high}")
        low = high + 1
    h = pl.col("horizon")
    expr = pl.when(h <= edges[0]).then(pl.lit(labels[0]))
    for high, label in zip(edges[1:], labels[1:], strict=True):
        expr = expr.when(h <= high).then(pl.lit(label))
    return expr.otherwise(None).cast(pl.Enum(labels)).alias("horizon_bucket")


def _interval_columns(frame: pl.DataFrame, method: str, column: str) -> tuple[str, str] | None:
    """(P10, P90) columns of a method, under the names a backtest table may give them."""
    candidates = [(f"{column}_p10", f"{column}_p90"), (f"{column}_lower", f"{column}_upper"),
                  (f"{column}_lo_{LEVEL}", f"{column}_hi_{LEVEL}")]
    if method == "platform":
        candidates += [("p10", "p90"), ("lower", "upper"), ("forecast_p10", "forecast_p90"),
                       ("units_p10", "units_p90")]
    return next(((lo, hi) for lo, hi in candidates
                 if lo in frame.columns and hi in frame.columns), None)


def oracles(run: PlatformRun) -> dict[str, pl.DataFrame | None]:
    """The simulated world's true expected demand on the scored rows (`oracle`: a reference, no
    forecaster can know more), and that mean as expected at each row's origin
    (`origin_oracle`: the world's rules known, its later draws not, so the floor a forecaster
    could reach); None for real data."""
    if run.settings.dataset.simulation is None:
        return {}
    from ml_assets.simulation.landing import world_for

    world = world_for(run.settings)
    keys = run.backtest.select(KEYS).unique()

    def mean(name: str, rows: pl.DataFrame, known_at: dt.date | None) -> pl.DataFrame:
        dates = rows.get_column("date")
        expected = world.expected(dates.min(), dates.max() + dt.timedelta(days=1), known_at)
        return rows.join(expected.select("date", *SERIES, pl.col("expected").cast(pl.Float64)
                                         .alias(name)), on=["date", *SERIES], how="left")
    return {"oracle": mean("oracle", keys, None),
            "origin_oracle": pl.concat([mean("origin_oracle", rows, origin)
                                        for (origin,), rows in keys.group_by("origin")])}


def score(run: PlatformRun, peers: Mapping[str, pl.DataFrame | None]) -> dict[str, Any]:
    """Every method on the same rows: the platform's scored rows minus forced zeros, where every
    method has a forecast. `peers`: method name -> keys + a column of that name (and its
    `_p10`/`_p90` if it has intervals)."""
    from ml_assets.evaluation.metrics import metric_table
    from ml_assets.evaluation.report import mase_scales

    spec = run.spec
    methods = {"platform": run.forecast_column}
    table = run.backtest
    for name, frame in peers.items():
        if frame is not None:
            table = table.join(frame, on=KEYS, how="left")
            methods[name] = name
    methods.update({"seasonal_naive": "seasonal_naive", "moving_average": spec.moving_average})
    for name in REFERENCES & set(methods):  # references, listed last
        methods[name] = methods.pop(name)
    # forced rows are 0 for everyone, as the platform's backtest sets them
    table = table.with_columns(pl.when(pl.col("forced_zero").fill_null(False)).then(0.0)
                               .otherwise(pl.col(c)).alias(c)
                               for c in methods.values() if c != run.forecast_column)
    rows = table.filter(~pl.col("forced_zero").fill_null(False)).with_columns(
        bucket_expr(int(table.get_column("horizon").max()), spec.period_days))  # type: ignore[arg-type]
    present = [pl.col(c).is_not_null() & pl.col(c).cast(pl.Float64).is_not_nan()
               for c in [TARGET, *methods.values()]]
    no_actual = rows.filter(~present[0]).height
    rows = rows.filter(pl.all_horizontal(present))
    scale = mase_scales(run.labelled, rows.get_column("origin").unique().sort().to_list(), spec)
    overall = metric_table(rows, TARGET, list(methods.values()), [], scale, same_rows=True)
    buckets = metric_table(rows, TARGET, list(methods.values()), ["horizon_bucket"], scale,
                           same_rows=True)
    out: dict[str, Any] = {"rows": rows.height, "forced_zero_left_out": int(
        table.get_column("forced_zero").fill_null(False).sum()),
        "rows_without_actual": no_actual,
        "rows_without_every_forecast": table.height - rows.height - no_actual - int(
            table.get_column("forced_zero").fill_null(False).sum()),
        "origins": [str(o) for o in rows.get_column("origin").unique().sort()],
        "buckets": [str(b) for b in rows.get_column("horizon_bucket").dtype.categories],  # type: ignore[attr-defined]
        "methods": {}}
    for name, column in methods.items():
        mine = overall.filter(pl.col("forecaster") == column).row(0, named=True)
        by = {str(r["horizon_bucket"]): {m: r[m] for m in ("wape", "mase", "rmspe", "n")}
              for r in buckets.filter(pl.col("forecaster") == column).iter_rows(named=True)}
        entry: dict[str, Any] = {"column": column,
                                 **{m: mine[m] for m in ("wape", "mase", "rmspe", "bias", "n")},
                                 "by_bucket": by, "coverage": None}
        pair = _interval_columns(rows, name, column)
        if pair is not None:
            inside = ((pl.col(TARGET) >= pl.col(pair[0])) & (pl.col(TARGET) <= pl.col(pair[1]))
                      ).cast(pl.Float64)
            entry["coverage"] = {
                "columns": list(pair), "nominal": LEVEL / 100,
                "overall": rows.select(inside.mean()).item(),
                "by_bucket": dict(rows.group_by("horizon_bucket").agg(inside.mean().alias("c"))
                                  .sort("horizon_bucket").select(
                                      pl.col("horizon_bucket").cast(pl.Utf8), "c").rows())}
        out["methods"][name] = entry
    return out


# --- one dataset end to end -------------------------------------------------------------------


def run_case(name: str, work: Path, sizes: Sizes, recipe: MlfRecipe) -> dict[str, Any]:
    started = time.perf_counter()
    case = DATASETS[name](work, sizes)
    prepared = time.perf_counter() - started
    print(f"   {name}: files ready ({prepared:.0f} s); the platform...", flush=True)
    platform_started = time.perf_counter()
    run = run_platform(case.env)
    run.seconds["total"] = time.perf_counter() - platform_started
    print(f"   {name}: platform done ({run.seconds['total']:.0f} s); mlforecast...", flush=True)
    peer, peer_info = run_mlforecast(run, recipe)
    baselines_s = baseline_seconds(run)
    scores = score(run, {"mlforecast": peer, **oracles(run)})
    reported = run.evaluation.get("wape_challenger")
    ds = run.settings.dataset
    return {
        "name": name, "title": case.title, "notes": case.notes,
        "frequency": ds.frequency, "horizon": run.spec.horizon,
        "series": run.backtest.select(SERIES).n_unique(),
        "backtest_rows_source": run.source,
        "platform_reported_wape": reported,
        # the platform's own interval coverage, as its model_evaluation measured it
        "platform_interval_coverage": run.evaluation.get("interval_coverage"),
        "platform_interval_coverage_measured": run.evaluation.get("interval_coverage_measured"),
        "platform_interval_level": run.evaluation.get("interval_level"),
        "known_future": run.evaluation.get("known_future"),
        "platform_recipe": run.model,
        "seconds": {"prepare": prepared, "platform": run.seconds,
                    "mlforecast": peer_info["seconds"], "baselines": baselines_s,
                    "total": time.perf_counter() - started},
        "mlforecast": {k: v for k, v in peer_info.items() if k != "seconds"},
        **scores,
    }


# --- the report -------------------------------------------------------------------------------


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _wall(result: dict[str, Any], method: str) -> str:
    s = result["seconds"]
    if method == "platform":
        p = s["platform"]
        backtest = p["backtest"] if not math.isnan(p["backtest"]) else p["evaluation_step"]
        return (f"{backtest:.1f} (pipeline {p['total']:.0f}: ingest + features "
                f"{p['ingest_and_features']:.0f}, training {p['training']:.0f}, evaluation "
                f"step {p['evaluation_step']:.0f})")
    if method == "mlforecast":
        return f"{s['mlforecast']:.1f}"
    return f"{s['baselines']:.2f} (both)"


def _intervals_note(info: dict[str, Any]) -> str:
    done = [o["interval_windows"] for o in info["origins"] if o["interval_windows"]]
    skipped = sorted({o["intervals_skipped"] for o in info["origins"]
                      if o["intervals_skipped"]})
    text = f"{min(done)}-{max(done)} calibration windows" if done else "none"
    return text + (f" (skipped: {'; '.join(skipped)})" if skipped else "")


METHOD_TITLES = {"platform": "platform (XGBoost challenger)",
                 "mlforecast": "mlforecast + LightGBM", "seasonal_naive": "seasonal naive",
                 "moving_average": "moving average",
                 "origin_oracle": "oracle as of the origin (the world's rules, not its later "
                                  "draws; reference)",
                 "oracle": "oracle (true expected demand; reference)"}
REFERENCES = {"origin_oracle", "oracle"}  # scored alongside, never a winner


def _same_bucket(label: str, buckets: list[str]) -> str | None:
    """The report's bucket for one of the platform's labels ("29+" is "29-42" here)."""
    first = label.split("-")[0].rstrip("+")
    return next((b for b in buckets if b.split("-")[0] == first), None)


TIE = 0.01  # WAPEs within 1 % of each other are a tie: less than origins and seeds move them
SHORT = {"platform": "the platform", "mlforecast": "mlforecast",
         "seasonal_naive": "seasonal naive", "moving_average": "the moving average"}


def _leaders(scores: dict[str, float]) -> list[str]:
    """The lowest score's method, and any within `TIE` of it, best first."""
    scores = {m: v for m, v in scores.items() if v is not None and not math.isnan(v)}
    if not scores:
        return []
    best = min(scores.values())
    return sorted((m for m, v in scores.items() if v <= best * (1 + TIE)), key=scores.get)


def _names(methods: list[str]) -> str:
    names = [SHORT[m] for m in methods]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def verdict(result: dict[str, Any]) -> str:
    """One sentence per dataset: who wins by WAPE overall and by horizon bucket (ties within
    1 %), where MASE or RMSPE disagree, the best baseline, intervals, the oracle's floor."""
    methods = {m: v for m, v in result["methods"].items() if m not in REFERENCES}
    wape = {m: v["wape"] for m, v in methods.items()}
    leaders = _leaders(wape)
    ranked = sorted(wape, key=wape.get)  # type: ignore[arg-type]
    if len(leaders) > 1:
        head = (f"{_names(leaders)} tie on WAPE ("
                + ", ".join(f"{_f(wape[m])}" for m in leaders) + ")")
    else:
        runner = ranked[1]
        head = (f"{_names(leaders)} wins on WAPE ({_f(wape[leaders[0]])}, "
                f"{1 - wape[leaders[0]] / wape[runner]:.0%} below {SHORT[runner]}'s "
                f"{_f(wape[runner])})")
    baselines = [m for m in ranked if m in ("seasonal_naive", "moving_average")]
    models = [m for m in ranked if m not in baselines]
    if baselines and models and wape[baselines[0]] > max(wape[m] for m in models):
        head += f", both models ahead of the best baseline ({SHORT[baselines[0]]}, " \
                f"{_f(wape[baselines[0]])})"
    by_bucket: dict[str, list[str]] = {}
    for bucket in result["buckets"]:
        lead = _leaders({m: v["by_bucket"].get(bucket, {}).get("wape", math.nan)
                         for m, v in methods.items()})
        if lead:
            by_bucket.setdefault(" and ".join(SHORT[m] for m in lead), []).append(bucket)
    parts = [head]
    if len(by_bucket) == 1:
        who = next(iter(by_bucket))
        parts.append(f"{who} {'lead' if ' and ' in who else 'leads'} in every horizon bucket")
    elif by_bucket:
        parts.append("by horizon bucket " + "; ".join(
            f"{who} {'lead' if ' and ' in who else 'leads'} {', '.join(b)}"
            for who, b in by_bucket.items()))
    others: dict[tuple[str, ...], list[str]] = {}  # MASE and RMSPE, where they disagree
    for metric in ("mase", "rmspe"):
        lead = _leaders({m: v[metric] for m, v in methods.items()})
        if lead and set(lead) != set(leaders):
            others.setdefault(tuple(lead), []).append(metric.upper())
    for lead, metrics in others.items():
        parts.append(f"on {' and '.join(metrics)} {_names(list(lead))} "
                     f"{'lead' if len(lead) > 1 else 'leads'}")
    covered = {m: v["coverage"]["overall"] for m, v in methods.items() if v["coverage"]}
    if covered:
        parts.append("80 % intervals cover " + ", ".join(
            f"{c:.0%} ({SHORT[m]})" for m, c in covered.items()))
    if result.get("platform_interval_coverage"):
        own = result["platform_interval_coverage"]
        value = own.get("all", own.get("overall"))
        if value is not None:
            parts.append(f"the platform's own intervals cover {value:.0%} (its measure)")
    if "oracle" in result["methods"] and result["methods"]["oracle"]["wape"]:
        floor = result["methods"]["oracle"]["wape"]
        parts.append(f"the oracle's WAPE is {_f(floor)} (platform / oracle "
                     f"{wape['platform'] / floor:.2f})")
    if result["methods"].get("origin_oracle", {}).get("wape"):
        floor = result["methods"]["origin_oracle"]["wape"]
        parts.append(f"knowing only what an origin can, the oracle scores {_f(floor)} "
                     f"(platform / that {wape['platform'] / floor:.2f}, mlforecast / that "
                     f"{wape.get('mlforecast', math.nan) / floor:.2f})")
    return f"**{result['name']}**: " + "; ".join(parts) + "."


def _recipe(model: dict[str, Any]) -> str:
    if not model:
        return "n/a"
    scale = model.get("target_scale")
    scores = ", ".join(f"{k} {_f(v, 4)}" for k, v in (model.get("valid_wape") or {}).items())
    target = ("the raw target" if scale in (None, "none")
              else f"the target per series' level ({scale})")
    return f"{model.get('objective')} on {target}; validation WAPE of every candidate: {scores}"


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Accuracy: the platform vs mlforecast + LightGBM and the baselines", "",
             f"{report['when']}, {report['machine']}, {'quick' if report['quick'] else 'full'} "
             f"run, {report['seconds']:.0f} s in all (load average at the end "
             f"{report['load']}; OpenMP wait policy {report['omp_wait_policy']}). "
             "`python -m benchmarks.accuracy_bench"
             f"{' --quick' if report['quick'] else ''}`; how it works: the module's docstring.",
             "",
             "Same backtest windows for every method: the origins and horizon of the platform's "
             "own rolling-origin backtest (`model_evaluation`); scored on the same rows (forced "
             "zeros left out, as the platform does); metrics by `ml_assets/evaluation/"
             "metrics.py` (WAPE; MASE against each series' in-sample seasonal naive error up to "
             "the origin; RMSPE over non-zero actuals). Wall time: the platform's backtest is "
             "the `run_backtest` call inside `model_evaluation` (a refit per origin, the served "
             "rows, the baselines), its pipeline's steps in parentheses; mlforecast's is its "
             "fits and forecasts at every origin, data preparation included; the baselines' is "
             "both computed for every scored row by the platform's functions. The machine is "
             "shared: wall times move with the load.", ""]
    done = [r for r in report["datasets"] if "methods" in r]
    if done:
        lines += ["## Overall", "",
                  "| dataset | method | WAPE | MASE | RMSPE | 80 % coverage | wall s |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for r in done:
            for m, v in r["methods"].items():
                cover = _f(v["coverage"]["overall"], 3) if v["coverage"] else "-"
                lines.append(f"| {r['name']} | {METHOD_TITLES[m]} | {_f(v['wape'])} | "
                             f"{_f(v['mase'])} | {_f(v['rmspe'])} | {cover} | "
                             f"{_wall(r, m)} |")
        lines.append("")
    for r in report["datasets"]:
        lines += [f"## {r['name']}: {r.get('title', '')}", ""]
        if "skipped" in r:
            lines += [f"Skipped: {r['skipped']}.", ""]
            continue
        if "error" in r:
            lines += ["FAILED:", "", "```", r["error"].strip()[-3000:], "```", ""]
            continue
        lines += [f"- {note}" for note in r["notes"]]
        known = r["known_future"]
        lines += [
            f"- {r['series']:,} series, {r['frequency']}, horizon {r['horizon']}; origins "
            f"{', '.join(r['origins'])}; {r['rows']:,} rows scored by every method "
            f"(left out: {r['forced_zero_left_out']:,} forced zeros, "
            f"{r['rows_without_actual']:,} without an actual, "
            f"{r['rows_without_every_forecast']:,} without every method's forecast)",
            f"- platform rows from {r['backtest_rows_source']}; its reported WAPE "
            f"{_f(r['platform_reported_wape'], 4)} (over its own rows); known future per "
            f"origin: {', '.join(sorted(set(known.values()))) if known else 'n/a'}",
            f"- platform recipe: {_recipe(r.get('platform_recipe') or {})}",
            f"- mlforecast: lags {r['mlforecast']['origins'][-1]['lags']}, known-in-advance "
            f"inputs {r['mlforecast']['known_future'] or 'none'}, "
            f"{len(r['mlforecast']['features']['static'])} static attributes, conformal "
            f"intervals: {_intervals_note(r['mlforecast'])}",
            ""]
        if all(math.isnan(v["mase"]) if v["mase"] is not None else True
               for v in r["methods"].values()):
            lines += [f"MASE is n/a here: its scale, the seasonal naive's in-sample error "
                      f"({'7 days' if r['frequency'] == 'daily' else '52 weeks'} back), needs "
                      "pairs a season apart in the history before each origin.", ""]
        buckets = r["buckets"]
        lines += ["| method | " + " | ".join(f"WAPE {b}" for b in buckets) + " | "
                  + " | ".join(f"MASE {b}" for b in buckets) + " | "
                  + " | ".join(f"RMSPE {b}" for b in buckets) + " |",
                  "|---|" + "---:|" * (3 * len(buckets))]
        for m, v in r["methods"].items():
            cells = [_f(v["by_bucket"].get(b, {}).get(k)) for k in ("wape", "mase", "rmspe")
                     for b in buckets]
            lines.append(f"| {METHOD_TITLES[m]} | " + " | ".join(cells) + " |")
        covered = {m: v["coverage"] for m, v in r["methods"].items() if v["coverage"]}
        own = r.get("platform_interval_coverage")
        if covered or own:
            lines += ["", "| 80 % interval coverage | " + " | ".join(buckets) + " | all |",
                      "|---|" + "---:|" * (len(buckets) + 1)]
            for m, c in covered.items():
                lines.append(f"| {METHOD_TITLES[m]} ({', '.join(c['columns'])}, these rows) | "
                             + " | ".join(_f(c["by_bucket"].get(b)) for b in buckets)
                             + f" | {_f(c['overall'])} |")
            if own:
                mine = {_same_bucket(k, buckets): v for k, v in own.items()}
                lines.append(
                    f"| platform, as its model_evaluation measured it ("
                    f"{r.get('platform_interval_coverage_measured') or 'see its metadata'}; "
                    f"level {r.get('platform_interval_level')}) | "
                    + " | ".join(_f(mine.get(b)) for b in buckets)
                    + f" | {_f(own.get('all', own.get('overall')))} |")
        else:
            lines += ["", "No method here has intervals (P10/P90) on these rows."]
        lines.append("")
    if done:
        lines += ["## Where each approach wins", ""] + [verdict(r) for r in done] + [""]
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, dt.date):
        return str(value)
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, results/quick/")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help=f"comma-separated, among {', '.join(DATASETS)}")
    parser.add_argument("--out", type=Path, help="report folder (default results/[quick/])")
    parser.add_argument("--work", type=Path, help="keep the homes here (default: a temp dir)")
    parser.add_argument("--sim-stores", type=int)
    parser.add_argument("--sim-items", type=int)
    parser.add_argument("--sim-days", type=int)
    parser.add_argument("--rounds", type=int, help="LightGBM rounds (default 200, quick 100)")
    parser.add_argument("--no-intervals", action="store_true",
                        help="skip mlforecast's conformal intervals")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown datasets {unknown}; choose among {list(DATASETS)}")
    sizes = QUICK if args.quick else FULL
    overrides = {k: getattr(args, k) for k in ("sim_stores", "sim_items", "sim_days")
                 if getattr(args, k) is not None}
    if overrides:
        sizes = Sizes(**{**sizes.__dict__, **overrides})
    recipe = MlfRecipe(rounds=args.rounds or (100 if args.quick else MlfRecipe.rounds),
                       intervals=not args.no_intervals)
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    # OpenMP threads that spin while they wait (libgomp's default) turn a shared 2-core
    # machine's load into 3-10x slower and erratic XGBoost and LightGBM fits (measured: the same
    # 30-round LightGBM fit took 3 to 40 s); waiting passively changes no result. It only acts
    # if set before the OpenMP runtime loads in this process.
    wait_policy = os.environ.get("OMP_WAIT_POLICY")
    openmp_loaded = any("libgomp" in line for line in Path("/proc/self/maps").read_text(
        ).splitlines()) if Path("/proc/self/maps").exists() else False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    started = time.perf_counter()
    results = []
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="accuracy_bench_")))
        for name in names:
            print(f"== accuracy: {name}", flush=True)
            folder = work / name
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            try:
                results.append(run_case(name, folder, sizes, recipe))
            except Skipped as skip:
                print(f"   {name}: skipped: {skip}", flush=True)
                results.append({"name": name, "skipped": str(skip)})
            except Exception:  # reported as a failure in the .md and the headline, never a 0
                print(traceback.format_exc(), file=sys.stderr, flush=True)
                results.append({"name": name, "error": traceback.format_exc()})
    if wait_policy is None:
        os.environ.pop("OMP_WAIT_POLICY")  # not for the processes of later benchmarks
    report = {"when": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
              "omp_wait_policy": (wait_policy or "PASSIVE") if not openmp_loaded
              else "as the process had it (OpenMP was loaded before this benchmark)",
              "machine": f"{os.cpu_count()} cores, {host.machine()}, Python "
                         f"{host.python_version()}",
              "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
              "quick": args.quick, "seconds": time.perf_counter() - started,
              "mlforecast_recipe": recipe.__dict__, "datasets": results}
    (out / "accuracy.json").write_text(json.dumps(_clean(report), indent=2) + "\n")
    (out / "accuracy.md").write_text(markdown(report))
    errors = [r["name"] for r in results if "error" in r]
    scored = [r for r in results if "methods" in r]
    headline = "; ".join(
        f"{r['name']} WAPE platform {_f(r['methods']['platform']['wape'])} vs mlforecast "
        f"{_f(r['methods']['mlforecast']['wape'])}" for r in scored)
    if errors:
        headline += f"; FAILED: {', '.join(errors)}"
    print(f"accuracy: {headline}\n  {out / 'accuracy.md'}", flush=True)
    return {**report, "headline": headline, "errors": errors,
            "reports": [str(out / "accuracy.md"), str(out / "accuracy.json")]}


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
