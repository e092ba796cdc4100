"""Plan files → (bronze plan rows, quarantined rows). No Dagster here.

A plan is the known future: rows of `on_promo`, `price` and the declared covariates for dates
after the last landed day (a promotion calendar, a price plan, opening days; Kaggle's
`test.csv`). A row is keyed by (store, item), by store alone (every item of the store), by item
alone (the item in every store, e.g. a price plan) or by date alone (neither). Every row keeps
the day it was delivered, so that "the plan as known on day d" can be rebuilt;
`ml_assets.forecasting.plan` does that.

The delivery date is, in order: the plan's `delivered` column when the YAML maps one, the
first YYYY-MM-DD in the file's name (`plan_2026-03-02.csv`), else the period before the
earliest date the file plans (a file that plans from day d on was known on day d - 1).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ml_assets.ingest.landing import check_columns, list_files, read_raw
from ml_assets.ingest.validate import (
    align_to_period,
    flag_known,
    known_input_checks,
    parse_date,
    parse_number,
    present,
    with_reasons,
)
from resources.settings import DatasetConfig, FileSource

PLAN_TABLE = "bronze/plan"
PLAN_QUARANTINE_TABLE = "bronze/plan_quarantine"
PLAN_KEYS = ["date", "store_id", "item_id"]
_FILE_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


@dataclass
class PlanResult:
    bronze: pl.DataFrame
    quarantine: pl.DataFrame
    files: list[Path]
    rows_in: int
    reasons: dict[str, int] = field(default_factory=dict)


def plan_columns(ds: DatasetConfig) -> dict[str, str]:
    """Contract name → source column of what a plan file may hold."""
    plan = ds.plan
    assert plan is not None
    return {**{c: plan.source_column(c) for c in ("date", "store_id", "item_id", "on_promo",
                                                  "price", "delivered")},
            **{c.name: plan.columns.get(c.name, c.source) for c in ds.covariates}}


def plan_schema(ds: DatasetConfig) -> dict[str, pl.DataType]:
    """The bronze plan table's columns (the empty table has them too)."""
    return {"date": pl.Date(), "store_id": pl.Utf8(), "item_id": pl.Utf8(),
            "delivered": pl.Date(), "on_promo": pl.Int8(), "price": pl.Float64(),
            **{c.name: pl.Float64() if c.type == "numeric" else pl.Utf8()
               for c in ds.covariates},
            "source_file": pl.Utf8(), "row_number": pl.Int64()}


def _file_delivery(path: Path) -> dt.date | None:
    match = _FILE_DATE.search(path.name)
    if match is None:
        return None
    try:
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        return None


def _read(path: Path, source: FileSource, wanted: dict[str, str]) -> pl.DataFrame:
    frame = read_raw(path, source, wanted)
    return frame.with_columns(pl.lit(_file_delivery(path), pl.Date).alias("_file_delivered"))


def ingest_plan(ds: DatasetConfig, first_day: dt.date,
                known_stores: pl.Series | None = None,
                known_items: pl.Series | None = None) -> PlanResult:
    """Validates every plan file; every row ends in bronze or in quarantine with its reason."""
    source = ds.plan
    schema = plan_schema(ds)
    empty = PlanResult(pl.DataFrame(schema=schema), pl.DataFrame(), [], 0)
    if source is None:
        return empty
    files = list_files(source)
    if not files:
        return empty
    check_columns(files, source, ["date"])
    wanted = plan_columns(ds)
    raw = pl.concat([_read(p, source, wanted) for p in files], how="vertical_relaxed")
    typed = _parse(raw, ds, source, first_day)
    typed = flag_known(typed, "store_id", known_stores)
    typed = flag_known(typed, "item_id", known_items)
    typed = _flag_duplicates(typed)
    bronze = typed.filter(pl.col("reason").is_null()).select(
        pl.col("date_typed").alias("date"),
        pl.col("store_typed").alias("store_id"),
        pl.col("item_typed").alias("item_id"),
        pl.col("delivered_typed").alias("delivered"),
        pl.col("promo_typed").cast(pl.Int8).alias("on_promo"),
        pl.col("price_typed").alias("price"),
        *[pl.col(f"{c.name}_typed").alias(c.name) for c in ds.covariates],
        "source_file", "row_number",
    ).cast(schema).sort("delivered", "date", "store_id", "item_id", nulls_last=False)  # type: ignore[arg-type]
    raw_cols = [c for c in wanted if c in raw.columns]
    quarantine = typed.filter(pl.col("reason").is_not_null()).select(
        pl.col("date_typed").alias("date"), "store_id", "item_id", "reason", "source_file",
        "row_number", pl.struct(raw_cols).struct.json_encode().alias("raw"))
    reasons = (quarantine.get_column("reason").str.split("; ").explode().value_counts()
               .sort("count", descending=True).rows()) if quarantine.height else []
    return PlanResult(bronze=bronze, quarantine=quarantine, files=files, rows_in=raw.height,
                      reasons=dict(reasons))


def _parse(raw: pl.DataFrame, ds: DatasetConfig, source: FileSource,
           first_day: dt.date) -> pl.DataFrame:
    key = lambda c: pl.when(present(c)).then(pl.col(c).str.strip_chars())  # noqa: E731
    date = align_to_period(parse_date(source), ds, first_day)
    typed = raw.with_columns(
        date.alias("date_typed"),
        key("store_id").alias("store_typed"),
        key("item_id").alias("item_typed"),
        parse_number("on_promo").alias("promo_typed"),
        parse_number("price").alias("price_typed"),
        align_to_period(parse_date(source, "delivered"), ds, first_day).alias("_delivered"),
        *[(parse_number(c.name) if c.type == "numeric" else key(c.name))
          .alias(f"{c.name}_typed") for c in ds.covariates],
    )
    step = dt.timedelta(days=ds.period_days)
    typed = typed.with_columns(pl.coalesce(
        "_delivered", "_file_delivered",
        (pl.col("date_typed").min().over("source_file") - step)).alias("delivered_typed"))
    checks: list[tuple[str, pl.Expr]] = [
        ("null date", ~present("date")),
        ("unparseable date", present("date") & pl.col("date_typed").is_null()),
        ("unparseable delivered date", present("delivered") & pl.col("_delivered").is_null()),
        *known_input_checks(ds),
        ("date before dataset start", pl.col("date_typed") < pl.lit(first_day)),
    ]
    return with_reasons(typed, checks)


def _flag_duplicates(frame: pl.DataFrame) -> pl.DataFrame:
    """A key planned twice in one file keeps its first row. Across files both stay: the
    delivery date tells which one was known when."""
    keys = ["date_typed", "store_typed", "item_typed", "source_file"]
    valid = pl.col("reason").is_null()
    ranked = frame.with_row_index("_order").with_columns(
        pl.when(valid).then(pl.col("_order").rank("ordinal").over([*keys, valid]))
        .alias("_in_file"))
    return ranked.with_columns(
        pl.when(valid & (pl.col("_in_file") > 1)).then(pl.lit("duplicate key within file"))
        .otherwise(pl.col("reason")).alias("reason")).drop("_order", "_in_file")
