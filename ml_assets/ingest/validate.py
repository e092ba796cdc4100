"""Validation of raw sales rows: every row ends up in bronze or in quarantine with its reasons."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from resources.settings import DatasetConfig, FileSource

KEYS = ["date", "store_id", "item_id"]
# Not bad data: a correction or re-delivery replaced the row. Kept in quarantine, for the trail,
# but not counted against the quarantine-share check.
SUPERSEDED = "duplicate key across files (a later delivery supersedes it)"
_TRUE = ["1", "true", "t", "yes", "y"]
_FALSE = ["0", "false", "f", "no", "n"]


@dataclass(frozen=True)
class Split:
    bronze: pl.DataFrame  # with a `clipped` flag: negative units set to 0 by the `clip` policy
    quarantine: pl.DataFrame


def raw_columns(ds: DatasetConfig) -> dict[str, str]:
    """Contract name → source column for what a sales file may hold: required and optional
    contract columns, and the declared covariates."""
    contract = ["date", "store_id", "item_id", "units_sold", "price", "on_promo"]
    return {**{c: ds.sales.source_column(c) for c in contract},
            **{c.name: c.source for c in ds.covariates}}


def parse_number(col: str) -> pl.Expr:
    """Parses numbers, and booleans as 1/0, from strings; anything else becomes null."""
    s = pl.col(col).str.strip_chars().str.to_lowercase()
    number = (
        pl.when(s.is_in(_TRUE)).then(pl.lit("1"))
        .when(s.is_in(_FALSE)).then(pl.lit("0"))
        .otherwise(s)
        .cast(pl.Float64, strict=False)
    )
    return pl.when(number.is_finite()).then(number)  # "nan" and "inf" are not quantities


def parse_date(source: FileSource, column: str = "date") -> pl.Expr:
    raw = pl.col(column).str.strip_chars()
    if source.date_format:
        return raw.str.to_date(source.date_format, strict=False)
    # ISO first; a timestamp string keeps its day
    return pl.coalesce(raw.str.to_date("%Y-%m-%d", strict=False),
                       raw.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False))


def align_to_period(date: pl.Expr, ds: DatasetConfig, start: dt.date) -> pl.Expr:
    """Weekly data lands on the week's first day (the weekday of the dataset start)."""
    if ds.period_days == 1:
        return date
    offset = (date - pl.lit(start)).dt.total_days() % 7
    return date - pl.duration(days=offset)


def parse(raw: pl.DataFrame, ds: DatasetConfig, first_day: dt.date) -> pl.DataFrame:
    """Adds typed columns (`*_typed`) next to the raw strings and a `reason` per bad row."""
    typed = raw.with_columns(
        align_to_period(parse_date(ds.sales), ds, first_day).alias("date_typed"),
        pl.col("store_id").str.strip_chars().alias("store_typed"),
        pl.col("item_id").str.strip_chars().alias("item_typed"),
        parse_number("units_sold").alias("units_typed"),
        parse_number("price").alias("price_typed"),
        parse_number("on_promo").alias("promo_typed"),
        *[(parse_number(c.name) if c.type == "numeric" else pl.col(c.name).str.strip_chars())
          .alias(f"{c.name}_typed") for c in ds.covariates],
    )
    checks: list[tuple[str, pl.Expr]] = [
        ("null date", ~present("date")),
        ("unparseable date", present("date") & pl.col("date_typed").is_null()),
        ("null store_id", ~present("store_id")),
        ("null item_id", ~present("item_id")),
        ("null units_sold", ~present("units_sold")),
        ("units_sold not a number", present("units_sold") & pl.col("units_typed").is_null()),
        *known_input_checks(ds),
    ]
    if ds.negative_units == "quarantine":
        checks.append(("negative units_sold", pl.col("units_typed") < 0))
    if ds.end_date is not None:
        checks.append(("date after dataset end_date", pl.col("date_typed") > pl.lit(ds.end_date)))
    checks.append(("date before dataset start", pl.col("date_typed") < pl.lit(first_day)))
    return with_reasons(typed, checks)


def present(column: str) -> pl.Expr:
    """The raw string holds a value (not null, not blank)."""
    return pl.col(column).is_not_null() & (pl.col(column).str.strip_chars() != "")


def known_input_checks(ds: DatasetConfig) -> list[tuple[str, pl.Expr]]:
    """The rules for the known-in-advance columns (price, on_promo, numeric covariates), on
    their raw strings and `*_typed` parses: the same in sales and plan files."""
    return [
        ("price not a number", present("price") & pl.col("price_typed").is_null()),
        ("price <= 0", pl.col("price_typed") <= 0),
        ("on_promo not 0/1",
         present("on_promo") & ~pl.col("promo_typed").is_in([0.0, 1.0]).fill_null(False)),
        *[(f"{c.name} not a number", present(c.name) & pl.col(f"{c.name}_typed").is_null())
          for c in ds.covariates if c.type == "numeric"],
    ]


def with_reasons(typed: pl.DataFrame, checks: list[tuple[str, pl.Expr]]) -> pl.DataFrame:
    """`typed` with a `reason` column: the names of the checks a row fails, or null."""
    reasons = [pl.when(cond.fill_null(False)).then(pl.lit(name)) for name, cond in checks]
    joined = pl.concat_str(reasons, separator="; ", ignore_nulls=True)
    return typed.with_columns(pl.when(joined != "").then(joined).alias("reason"))


def flag_known(frame: pl.DataFrame, key: str, known: pl.Series | None) -> pl.DataFrame:
    if known is None or known.is_empty():
        return frame  # no attribute file: every id is known
    typed = {"store_id": "store_typed", "item_id": "item_typed"}[key]
    unknown = pl.col("reason").is_null() & ~pl.col(typed).is_in(known.cast(pl.Utf8).implode())
    return frame.with_columns(pl.when(unknown).then(pl.lit(f"unknown {key}"))
                              .otherwise(pl.col("reason")).alias("reason"))


def _flag_duplicates(frame: pl.DataFrame) -> pl.DataFrame:
    """Among valid rows, a key seen twice in one file keeps its first row; a key delivered by
    several files keeps the latest file's row (files arrive ordered oldest first)."""
    keys = ["date_typed", "store_typed", "item_typed"]
    valid = pl.col("reason").is_null()
    frame = frame.with_row_index("_order")
    ranked = frame.with_columns(
        pl.when(valid).then(pl.col("_order").rank("ordinal").over([*keys, "source_file", valid]))
        .alias("_in_file"),
        pl.when(valid).then(pl.col("_file_rank")).max().over([*keys, valid]).alias("_last_file"),
    )
    return ranked.with_columns(
        pl.when(valid & (pl.col("_file_rank") < pl.col("_last_file")))
        .then(pl.lit(SUPERSEDED))
        .when(valid & (pl.col("_in_file") > 1))
        .then(pl.lit("duplicate key within file"))
        .otherwise(pl.col("reason")).alias("reason")
    ).drop("_order", "_in_file", "_last_file")


def split_sales(
    raw: pl.DataFrame,
    ds: DatasetConfig,
    first_day: dt.date,
    known_stores: pl.Series | None = None,
    known_items: pl.Series | None = None,
) -> Split:
    """Raw rows (strings, with source_file, row_number and `_file_rank`) to bronze + quarantine."""
    checked = parse(raw, ds, first_day)
    checked = flag_known(checked, "store_id", known_stores)
    checked = flag_known(checked, "item_id", known_items)
    checked = _flag_duplicates(checked)
    good = checked.filter(pl.col("reason").is_null())
    clipped = (pl.col("units_typed") < 0) if ds.negative_units == "clip" else pl.lit(False)
    good = good.with_columns(clipped.alias("clipped"),
                             pl.when(clipped).then(0.0).otherwise("units_typed")
                             .alias("units_typed"))
    bronze = good.select(
        pl.col("date_typed").alias("date"),
        pl.col("store_typed").alias("store_id"),
        pl.col("item_typed").alias("item_id"),
        pl.col("units_typed").alias("units_sold"),
        pl.col("price_typed").alias("price"),
        pl.col("promo_typed").fill_null(0).cast(pl.Int8).alias("on_promo"),
        *[pl.col(f"{c.name}_typed").alias(c.name) for c in ds.covariates],
        "source_file",
        "row_number",
        "clipped",
    )
    raw_cols = [c for c in raw_columns(ds) if c in raw.columns]
    quarantine = checked.filter(pl.col("reason").is_not_null()).select(
        pl.col("date_typed").alias("date"),
        pl.col("store_id"),
        pl.col("item_id"),
        "reason",
        "source_file",
        "row_number",
        pl.struct(raw_cols).struct.json_encode().alias("raw"),
    )
    return Split(bronze=bronze, quarantine=quarantine)
