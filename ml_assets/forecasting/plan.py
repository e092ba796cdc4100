"""The known future at a forecast origin: the plan as it was known then, applied to future rows.

`plan_as_known` rebuilds the plan on day d from the bronze plan table (every delivery keeps its
date); `plan_or_actuals` is what a backtest uses at a historical origin: the plan as known then,
or, where no delivery was known by then (historical files delivered at once), the actual values
of the plan columns. `apply_plan` fills future rows from those rows, series-level rows first,
then store-level rows, then date-level rows.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from ml_assets.features.transforms import SERIES

PLAN_KEYS = ["date", *SERIES]
PLANNED = ("on_promo", "price")  # besides the declared covariates


def plan_columns(covariates: tuple[str, ...]) -> list[str]:
    return [*PLANNED, *covariates]


def plan_as_known(plan: pl.DataFrame, origin: dt.date, end: dt.date | None = None
                  ) -> pl.DataFrame:
    """Per key, the latest delivered row with `delivered <= origin` for dates after the origin
    (up to `end`): the plan as it was known at the end of the origin day."""
    dates = pl.col("date") > origin
    if end is not None:
        dates = dates & (pl.col("date") <= end)
    known = plan.filter(pl.col("delivered") <= origin, dates)
    return (known.sort("delivered", "source_file", "row_number")
            .group_by(PLAN_KEYS, maintain_order=True).last()
            .drop("delivered", "source_file", "row_number"))


def plan_or_actuals(plan: pl.DataFrame | None, sales: pl.DataFrame, origin: dt.date,
                    end: dt.date, columns: list[str]) -> tuple[pl.DataFrame, str]:
    """The plan as known at `origin`, or, when no delivery was known by then, the actual values
    of the plan `columns` in (origin, end] from `sales`. Returns the rows and which it was."""
    if plan is not None and plan.filter(pl.col("delivered") <= origin).height:
        return plan_as_known(plan, origin, end), "plan"
    actual = sales.filter(pl.col("date") > origin, pl.col("date") <= end)
    return actual.select(*PLAN_KEYS, *[c for c in columns if c in actual.columns]), "actuals"


def apply_plan(keys: pl.DataFrame, plan: pl.DataFrame | None, columns: list[str]
               ) -> pl.DataFrame:
    """`keys` (date, store_id, item_id) with one column per plan column: the value of the most
    specific plan row (store and item, then store, then item, then date alone); null where none
    says."""
    if plan is None or plan.height == 0:
        return keys.with_columns(pl.lit(None).alias(c) for c in columns)
    have = [c for c in columns if c in plan.columns]
    store = pl.col("store_id").is_not_null()
    item = pl.col("item_id").is_not_null()
    levels = [(plan.filter(store & item), PLAN_KEYS),
              (plan.filter(store & ~item), ["date", "store_id"]),
              (plan.filter(~store & item), ["date", "item_id"]),
              (plan.filter(~store & ~item), ["date"])]
    out = keys
    for i, (rows, on) in enumerate(levels):
        if rows.height:
            out = out.join(rows.select(*on, *[pl.col(c).alias(f"{c}__{i}") for c in have]),
                           on=on, how="left", maintain_order="left")
    return out.with_columns(
        (pl.coalesce(*found) if (found := [f"{c}__{i}" for i in range(4) if f"{c}__{i}"
                                           in out.columns]) else pl.lit(None)).alias(c)
        for c in columns).select(*keys.columns, *columns)
