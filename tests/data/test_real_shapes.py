"""The worked dataset YAMLs in examples/datasets ingest real-shaped files without code changes.

Small synthetic files are written with the exact columns, value styles and quirks of two public
datasets a user typically brings (Rossmann: daily store sales with closed days and gaps; Walmart:
weekly store x department sales on Fridays with negative values and TRUE/FALSE flags). The
example YAML is copied next to them, unchanged, and `ingest_job` then `features_job` run on a
real Dagster instance against Delta tables in a temporary folder.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
import shutil
from pathlib import Path

import dagster as dg
import mlflow
import polars as pl
import pytest

from ml_assets.definitions import build_definitions
from resources.delta import DeltaStore
from resources.settings import load_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "datasets"


def _write_csv(path: Path, header: list[str], rows: list[list[object]],
               line_end: str = "\r\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator=line_end)
        writer.writerow(header)
        writer.writerows(rows)


def _days(start: dt.date, end: dt.date, step: int = 1) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(0, (end - start).days + 1, step)]


def _run(tmp_path: Path, yaml_name: str, job_name: str, instance: dg.DagsterInstance,
         today: str) -> tuple[dg.ExecuteInProcessResult, DeltaStore, list[str]]:
    env = {"RETAIL_ML_HOME": str(tmp_path / "home"), "RETAIL_ML_DATASET": str(tmp_path / yaml_name),
           "RETAIL_ML_TODAY": today}
    settings = load_settings(env)
    job = build_definitions(settings, env["RETAIL_ML_DATASET"]).resolve_job_def(job_name)
    keys = job.partitions_def.get_partition_keys()
    result = job.execute_in_process(
        instance=instance, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": keys[0],
              "dagster/asset_partition_range_end": keys[-1]})
    return result, DeltaStore(root=str(settings.delta_root)), keys


def _metadata(instance: dg.DagsterInstance, asset: str) -> dict[str, object]:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    assert event is not None and event.asset_materialization is not None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _train_and_evaluate(tmp_path: Path, yaml_name: str, instance: dg.DagsterInstance,
                        today: str) -> dict[str, object]:
    """The retrain path up to the report: it must run on short, gappy, zero-heavy real data."""
    env = {"RETAIL_ML_HOME": str(tmp_path / "home"), "RETAIL_ML_DATASET": str(tmp_path / yaml_name),
           "RETAIL_ML_TODAY": today}
    defs = build_definitions(load_settings(env), env["RETAIL_ML_DATASET"])
    result = dg.materialize(
        [defs.get_assets_def(a) for a in ("training_set", "demand_model", "model_evaluation")],
        resources=defs.resources, instance=instance, raise_on_error=False)
    mlflow.end_run()
    failures = [e.event_specific_data.error.message for e in result.all_events  # type: ignore[union-attr]
                if e.event_type_value == "STEP_FAILURE" and e.step_key != "model_evaluation"]
    assert not failures, failures
    (gate,) = result.get_asset_check_evaluations()
    evaluation = _metadata(instance, "model_evaluation")
    assert evaluation["wape_challenger"] == evaluation["wape_challenger"]  # not NaN
    # real data has no oracle: the noise floor is the simulated world's only
    assert not [k for k in evaluation if "oracle" in k]
    # and intervals with their coverage by horizon bucket, as for every dataset
    assert evaluation["interval_level"] == 0.8 and "all" in evaluation["interval_coverage"]
    return {"gate": gate, **evaluation}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


# --- Rossmann-style: daily, store level ---------------------------------------------------------

ROSSMANN_STORES = 3
ROSSMANN_START, ROSSMANN_END = dt.date(2015, 5, 11), dt.date(2015, 7, 31)  # the data's last day
STATE_HOLIDAYS = {dt.date(2015, 5, 14): "a", dt.date(2015, 5, 25): "a", dt.date(2015, 6, 4): "a"}
GAP = (dt.date(2015, 6, 1), dt.date(2015, 6, 20))  # store 3 reports nothing, as 180 real ones
MISSING_DAY = (2, dt.date(2015, 7, 1))  # one day missing for one store, as store 988


def _rossmann(data: Path) -> dict[str, int]:
    rng = random.Random(11)
    rows: list[list[object]] = []
    # Kaggle's train.csv runs from the newest day to the oldest, stores ascending within a day.
    for day in reversed(_days(ROSSMANN_START, ROSSMANN_END)):
        for store in range(1, ROSSMANN_STORES + 1):
            if (store == 3 and GAP[0] <= day <= GAP[1]) or (store, day) == MISSING_DAY:
                continue
            holiday = STATE_HOLIDAYS.get(day, "0")
            is_open = int(day.weekday() != 6 and holiday == "0")
            promo = int(is_open and day.weekday() < 5 and (day.isocalendar().week % 2 == 0))
            school = int(day.month in (7, 8) or holiday != "0")
            sales = rng.randint(3000, 9000) + 1500 * promo if is_open else 0
            customers = sales // 9 if is_open else 0
            rows.append([store, day.isoweekday(), day.isoformat(), sales, customers, is_open,
                         promo, holiday, school])
    _write_csv(data / "train.csv", ["Store", "DayOfWeek", "Date", "Sales", "Customers", "Open",
                                    "Promo", "StateHoliday", "SchoolHoliday"], rows)
    _write_csv(data / "store.csv",
               ["Store", "StoreType", "Assortment", "CompetitionDistance",
                "CompetitionOpenSinceMonth", "CompetitionOpenSinceYear", "Promo2",
                "Promo2SinceWeek", "Promo2SinceYear", "PromoInterval"],
               [[1, "c", "a", 1270, 9, 2008, 0, "", "", ""],
                [2, "a", "a", 570, 11, 2007, 1, 13, 2010, "Jan,Apr,Jul,Oct"],
                [3, "a", "c", "", "", "", 1, 14, 2011, "Feb,May,Aug,Nov"]])
    return {"rows": len(rows), "closed": sum(1 for r in rows if r[5] == 0),
            "holidays": sum(1 for r in rows if r[7] != "0")}


def test_store_daily_example_ingests_rossmann_shaped_files(tmp_path: Path) -> None:
    counts = _rossmann(tmp_path / "data")
    shutil.copy(EXAMPLES / "store_daily.yaml", tmp_path / "store_daily.yaml")
    instance = dg.DagsterInstance.ephemeral()

    ingest, delta, keys = _run(tmp_path, "store_daily.yaml", "ingest_job", instance,
                               "2015-08-15")
    assert ingest.success
    # partitions: from the earliest date in the file to the YAML's end_date, one per day
    assert keys == [d.isoformat() for d in _days(ROSSMANN_START, ROSSMANN_END)]
    assert _checks(ingest) == {"quarantine_share": True, "freshness": True, "landed": True}
    bronze = delta.read("bronze/sales")
    assert bronze.height == counts["rows"]
    assert delta.read("bronze/sales_quarantine").height == 0
    assert bronze.get_column("item_id").unique().to_list() == ["all"]
    assert bronze.select("date", "store_id").is_duplicated().sum() == 0
    assert (bronze.get_column("date").min(), bronze.get_column("date").max()) == (
        ROSSMANN_START, ROSSMANN_END)
    # closed days are valid rows with 0 sold, and the covariates carry the file's values
    closed = bronze.filter(pl.col("Open") == 0)
    assert closed.height == counts["closed"]
    assert closed.get_column("units_sold").max() == 0
    assert bronze.filter(pl.col("StateHoliday") != "0").height == counts["holidays"]
    assert set(bronze.get_column("StateHoliday").unique()) == {"0", "a"}
    assert bronze.select("Open", "StateHoliday", "SchoolHoliday").null_count().row(0) == (0, 0, 0)
    # store 3's missing weeks stay missing: nothing invented, nothing quarantined
    gap = bronze.filter(pl.col("store_id") == "3", pl.col("date").is_between(*GAP))
    assert gap.height == 0
    gap_days = (GAP[1] - GAP[0]).days + 1
    assert bronze.filter(pl.col("store_id") == "3").height == len(keys) - gap_days
    assert bronze.filter(pl.col("date") == MISSING_DAY[1]).height == ROSSMANN_STORES - 1
    assert delta.read("bronze/stores").height == ROSSMANN_STORES

    features, _, _ = _run(tmp_path, "store_daily.yaml", "features_job", instance, "2015-08-15")
    assert features.success
    table = delta.read("silver/features")
    assert table.height == bronze.height
    for column in ("Open", "StateHoliday", "SchoolHoliday", "on_promo", "lag_42",
                   "store_StoreType", "store_CompetitionDistance"):
        assert column in table.columns
    assert table.schema["StateHoliday"] == pl.Utf8
    assert table.get_column("Open").null_count() == 0
    assert table.filter(pl.col("Open") == 0).height == counts["closed"]
    assert table.get_column("store_StoreType").null_count() == 0
    # horizon 42: the first lag is 42 days, so the 42 first days have none
    first = table.filter(pl.col("date") < ROSSMANN_START + dt.timedelta(days=42))
    assert first.get_column("lag_42").null_count() == first.height
    # on the last day, lag_42 is the units sold 42 days before; store 3 was in its gap then
    last = dict(table.filter(pl.col("date") == ROSSMANN_END).select("store_id", "lag_42").rows())
    earlier = dict(bronze.filter(pl.col("date") == ROSSMANN_END - dt.timedelta(days=42))
                   .select("store_id", "units_sold").rows())
    assert set(earlier) == {"1", "2"}
    assert last == {**earlier, "3": None}

    # 82 days against a 42-day horizon: one shortened backtest origin, not a crash
    report = _train_and_evaluate(tmp_path, "store_daily.yaml", instance, "2015-08-15")
    assert report["origins"] == [str(ROSSMANN_START + dt.timedelta(days=42))]


# --- Walmart-style: weekly, store x department --------------------------------------------------

WALMART_END = dt.date(2012, 10, 26)  # a Friday, the data's last week
WALMART_START = WALMART_END - dt.timedelta(weeks=61)  # 62 weeks: one full year of lags and more
WALMART_HOLIDAYS = {dt.date(2011, 9, 9), dt.date(2011, 11, 25), dt.date(2011, 12, 30),
                    dt.date(2012, 2, 10), dt.date(2012, 9, 7)}
DEPTS = (1, 2, 5, 72)
MISSING_WEEKS = {dt.date(2011, 11, 4), dt.date(2011, 11, 11), dt.date(2012, 1, 6)}  # store 2 dept 5
WALMART_PLANNED_HOLIDAYS = {dt.date(2012, 11, 23)}  # Thanksgiving week, in test.csv


def _walmart(data: Path) -> dict[str, int]:
    rng = random.Random(5)
    rows: list[list[object]] = []
    weeks = _days(WALMART_START, WALMART_END, 7)
    # Kaggle's train.csv is sorted by store, then department, then date.
    for store in (1, 2, 3):
        for dept in DEPTS:
            for week in weeks:
                if (store, dept) == (2, 5) and week in MISSING_WEEKS:
                    continue
                holiday = week in WALMART_HOLIDAYS
                sales = round(rng.uniform(500, 40000) * (1.3 if holiday else 1.0), 2)
                if dept == 72 and rng.random() < 0.05:  # returns exceed sales some weeks
                    sales = -round(rng.uniform(1, 500), 2)
                rows.append([store, dept, week.isoformat(), sales,
                             "TRUE" if holiday else "FALSE"])
    _write_csv(data / "train.csv", ["Store", "Dept", "Date", "Weekly_Sales", "IsHoliday"], rows)
    # stores.csv from Kaggle's zip has old Mac line endings (CR only)
    _write_csv(data / "stores.csv", ["Store", "Type", "Size"],
               [[1, "A", 151315], [2, "A", 202307], [3, "B", 37392]], line_end="\r")
    # test.csv as Kaggle ships it: the weeks ahead with their holiday flag and no sales
    ahead = [WALMART_END + dt.timedelta(weeks=k) for k in range(1, 9)]
    _write_csv(data / "test.csv", ["Store", "Dept", "Date", "IsHoliday"],
               [[store, dept, week.isoformat(), "TRUE" if week in WALMART_PLANNED_HOLIDAYS
                 else "FALSE"] for store in (1, 2, 3) for dept in DEPTS for week in ahead])
    return {"rows": len(rows), "negative": sum(1 for r in rows if float(r[3]) < 0),
            "holiday": sum(1 for r in rows if r[4] == "TRUE"), "weeks": len(weeks)}


def test_dept_weekly_example_ingests_walmart_shaped_files(tmp_path: Path) -> None:
    counts = _walmart(tmp_path / "data")
    assert counts["negative"] > 0
    shutil.copy(EXAMPLES / "dept_weekly.yaml", tmp_path / "dept_weekly.yaml")
    instance = dg.DagsterInstance.ephemeral()

    ingest, delta, keys = _run(tmp_path, "dept_weekly.yaml", "ingest_job", instance,
                               "2012-11-10")
    assert ingest.success
    assert _checks(ingest) == {"quarantine_share": True, "freshness": True, "landed": True}
    # weekly partitions on the data's Fridays, from its first week to the YAML's end_date
    assert keys == [d.isoformat() for d in _days(WALMART_START, WALMART_END, 7)]

    bronze = delta.read("bronze/sales")
    assert bronze.height == counts["rows"]
    assert delta.read("bronze/sales_quarantine").height == 0
    assert set(bronze.get_column("date").dt.weekday().unique()) == {5}  # Fridays kept
    # negative weeks are clipped to 0, counted, and kept
    assert bronze.get_column("units_sold").min() == 0
    assert bronze.filter(pl.col("units_sold") == 0).height == counts["negative"]
    assert _metadata(instance, "sales")["negative_units_clipped"] == counts["negative"]
    # TRUE/FALSE read as 1/0
    assert bronze.get_column("IsHoliday").value_counts().sort("IsHoliday").rows() == [
        (0.0, counts["rows"] - counts["holiday"]), (1.0, counts["holiday"])]
    dept5 = bronze.filter(pl.col("store_id") == "2", pl.col("item_id") == "5")
    assert dept5.height == counts["weeks"] - len(MISSING_WEEKS)
    assert not set(dept5.get_column("date")) & MISSING_WEEKS

    features, _, _ = _run(tmp_path, "dept_weekly.yaml", "features_job", instance, "2012-11-10")
    assert features.success
    table = delta.read("silver/features")
    assert table.height == bronze.height
    for column in ("IsHoliday", "lag_8", "lag_52", "mean_13", "store_Type", "store_Size"):
        assert column in table.columns
    assert table.get_column("IsHoliday").sum() == counts["holiday"]
    assert table.get_column("store_Size").null_count() == 0  # the CR-only file, read
    assert set(table.get_column("store_Type")) == {"A", "B"}
    # a full year in, every complete series has its 52-week lag
    last = table.filter(pl.col("date") == WALMART_END)
    assert last.height == 3 * len(DEPTS)
    assert last.get_column("lag_52").null_count() == 0

    # 62 weeks: three full 8-week origins, holiday weeks and clipped returns included
    report = _train_and_evaluate(tmp_path, "dept_weekly.yaml", instance, "2012-11-10")
    assert report["origins"] == [str(WALMART_END - dt.timedelta(weeks=8 * k)) for k in (3, 2, 1)]
    # nothing was planned before the data's end: the backtest used the actual holiday flags
    assert set(report["known_future"].values()) == {"actuals"}

    # test.csv is the plan: delivered the week before its first week, and served
    plan = delta.read("bronze/plan")
    assert plan.height == 3 * len(DEPTS) * 8
    assert set(plan.get_column("delivered")) == {WALMART_END}
    env = {"RETAIL_ML_HOME": str(tmp_path / "home"),
           "RETAIL_ML_DATASET": str(tmp_path / "dept_weekly.yaml"), "RETAIL_ML_TODAY": "2012-11-10"}
    defs = build_definitions(load_settings(env), env["RETAIL_ML_DATASET"])
    assert dg.materialize([defs.get_assets_def("forecast_features")], resources=defs.resources,
                          instance=instance).success
    rows = delta.read("gold/forecast_features")
    assert rows.height == 3 * len(DEPTS) * 8
    holidays = rows.filter(pl.col("IsHoliday") == 1).get_column("date").unique().to_list()
    assert holidays == sorted(WALMART_PLANNED_HOLIDAYS)
    assert rows.get_column("IsHoliday").null_count() == 0


# --- the known future: Kaggle's test.csv as the plan, served as scored -------------------------

PLAN_DAYS = 42


def _rossmann_plan(data: Path) -> list[list[object]]:
    """test.csv as Kaggle ships it: Id first, the future days newest first, no Sales; Open
    empty on some days (as for store 622), a holiday, promotions on alternate weeks."""
    rows: list[list[object]] = []
    days = _days(ROSSMANN_END + dt.timedelta(days=1), ROSSMANN_END + dt.timedelta(days=PLAN_DAYS))
    for day in reversed(days):
        for store in range(1, ROSSMANN_STORES + 1):
            holiday = "a" if day == dt.date(2015, 8, 15) else "0"
            is_open: object = int(day.weekday() != 6 and holiday == "0")
            if store == 3 and day.weekday() == 2:
                is_open = ""  # unknown: the YAML's default (1) applies
            promo = int(day.weekday() < 5 and day.isocalendar().week % 2 == 0)
            rows.append([len(rows) + 1, store, day.isoweekday(), day.isoformat(), is_open, promo,
                         holiday, int(day.month == 8)])
    _write_csv(data / "test.csv", ["Id", "Store", "DayOfWeek", "Date", "Open", "Promo",
                                   "StateHoliday", "SchoolHoliday"], rows)
    return rows


def test_store_daily_forecasts_use_the_plan_and_equal_the_backtest_rows(tmp_path: Path) -> None:
    from ml_assets.evaluation.assets import rows_at
    from ml_assets.training.registry import load_alias

    _rossmann(tmp_path / "data")
    plan_rows = _rossmann_plan(tmp_path / "data")
    shutil.copy(EXAMPLES / "store_daily.yaml", tmp_path / "store_daily.yaml")
    instance = dg.DagsterInstance.ephemeral()
    result, delta, _ = _run(tmp_path, "store_daily.yaml", "full_pipeline", instance,
                            "2015-08-15")
    mlflow.end_run()
    assert result.success
    plan = delta.read("bronze/plan")
    assert plan.height == len(plan_rows)
    assert set(plan.get_column("delivered").unique()) == {ROSSMANN_END}
    features = delta.read("gold/forecast_features")
    # Open, the holiday flags and promotions of the plan reach the served rows; empty Open
    # values take the YAML's default
    assert features.select("Open", "StateHoliday", "SchoolHoliday", "on_promo").null_count(
        ).row(0) == (0, 0, 0, 0)
    planned = {(str(r[1]), dt.date.fromisoformat(str(r[3]))): r for r in plan_rows}
    for store, day, is_open, promo, holiday in features.select(
            "store_id", "date", "Open", "on_promo", "StateHoliday").iter_rows():
        row = planned[(store, day)]
        assert (is_open, promo, holiday) == (1.0 if row[4] == "" else float(row[4]), row[5],
                                             row[6])
    assert _metadata(instance, "forecast_features")["defaulted_Open"] == sum(
        1 for r in plan_rows if r[4] == "")

    # what is served is what the backtest scores at that origin: the same rows, the same values
    settings = load_settings({"RETAIL_ML_HOME": str(tmp_path / "home"),
                              "RETAIL_ML_DATASET": str(tmp_path / "store_daily.yaml"),
                              "RETAIL_ML_TODAY": "2015-08-15"})
    scored, source = rows_at(settings, delta)(ROSSMANN_END)
    assert source == "plan"
    assert scored.drop("units_sold").equals(features.drop("units_sold"))
    champion = load_alias(settings.mlflow_tracking_uri, "champion")
    assert champion is not None
    batch = delta.read("gold/batch_forecasts").sort("store_id", "date")
    expected = champion.predict(scored.sort("store_id", "date"))
    assert batch.get_column("units_forecast").to_list() == pytest.approx(expected.tolist())
    # closed days are exactly 0; open days are not
    closed = batch.join(features.select("store_id", "date", "Open"), on=["store_id", "date"])
    assert closed.filter(pl.col("Open") == 0).get_column("units_forecast").max() == 0.0
    assert closed.filter(pl.col("Open") == 1).get_column("units_forecast").min() > 0.0
    # every forecast has its interval, [0, 0] on closed days
    assert batch.select("lower", "upper").null_count().row(0) == (0, 0)
    assert batch.filter((pl.col("lower") > pl.col("units_forecast"))
                        | (pl.col("units_forecast") > pl.col("upper"))).height == 0
    assert closed.filter(pl.col("Open") == 0).select(pl.col("upper").max()).item() == 0.0
    assert closed.filter(pl.col("Open") == 1).select(
        (pl.col("upper") > pl.col("lower")).all()).item()
    # the service, without overrides, answers the same values for the same rows
    answers = _served(tmp_path / "home", batch.select(
        "store_id", "item_id", pl.col("date").cast(pl.Utf8)).to_dicts())
    assert [a["units"] for a in answers] == pytest.approx(expected.tolist(), abs=1e-3)
    for bound in ("lower", "upper"):
        assert [a[bound] for a in answers] == pytest.approx(batch.get_column(bound).to_list(),
                                                            abs=1e-2)


def _served(home: Path, requests: list[dict]) -> list[dict]:
    """The Bento the pipeline built, under a real `bentoml serve` on a free port, following
    the champion pointer the pipeline published: its answers to `requests` as one batch."""
    import os

    import requests as http

    from tests.e2e.bento_world import bento_server
    from tests.e2e.servers import wait_for_bento

    env = {**os.environ, "RETAIL_ML_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
           "RETAIL_ML_DATASET": str(home.parent / "store_daily.yaml"),
           "RETAIL_ML_PREDICTION_LOG": "off"}
    with bento_server("demand_forecaster:latest", env, home, home / "serve.log") as (url, proc):
        wait_for_bento(url, proc, home / "serve.log")
        answer = http.post(f"{url}/forecast_batch", json={"requests": requests}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()
