"""Training rows from the feature table: the target, the model's columns, a time-based split."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl

from ml_assets.features.transforms import SERIES

KEYS = ["date", *SERIES]
TARGET = "units_sold"


@dataclass(frozen=True)
class Columns:
    numeric: list[str]
    categorical: list[str]

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def model_columns(features: pl.DataFrame | pl.LazyFrame) -> Columns:
    """Every feature column: strings are categorical, the rest numeric. Keys and target are not
    features, so renaming a store or an item cannot change a forecast."""
    schema = features.collect_schema() if isinstance(features, pl.LazyFrame) else features.schema
    cols = [c for c in schema if c not in (*KEYS, TARGET)]
    return Columns(numeric=[c for c in cols if schema[c] != pl.Utf8],
                   categorical=[c for c in cols if schema[c] == pl.Utf8])


def split_by_time(features: pl.DataFrame, valid_periods: int, period_days: int,
                  train_periods: int | None = None) -> pl.DataFrame:
    """Rows with a target, labelled by time, never shuffled: the last `valid_periods` periods
    are `valid` (early stopping), the `train_periods` before them `train` (all of them when
    None), and anything older `history` (kept for backtests, which refit at earlier origins)."""
    labelled = features.filter(pl.col(TARGET).is_not_null())
    last = labelled.get_column("date").max()
    if last is None:
        raise ValueError("the feature table has no row with a target")
    cut = last - dt.timedelta(days=valid_periods * period_days)  # type: ignore[operator]
    split = pl.when(pl.col("date") > cut).then(pl.lit("valid"))
    if train_periods is not None:
        start = cut - dt.timedelta(days=train_periods * period_days)
        split = split.when(pl.col("date") <= start).then(pl.lit("history"))
    return labelled.with_columns(split.otherwise(pl.lit("train")).alias("split"))


def category_levels(frame: pl.DataFrame,
                    columns: Columns) -> tuple[Columns, dict[str, list[str]]]:
    """The levels each categorical column had in training, saved with the model so that
    inference encodes them the same way. A column with no level at all (never filled in)
    carries nothing and is left out of the model's columns."""
    levels = {c: sorted(frame.get_column(c).drop_nulls().unique().to_list())
              for c in columns.categorical}
    levels = {c: v for c, v in levels.items() if v}
    return Columns(numeric=columns.numeric, categorical=list(levels)), levels


def canonical_order(frame: pl.DataFrame, columns: Columns) -> pl.DataFrame:
    """Training rows in an order that depends on their values only, never on ids: XGBoost's
    row subsampling and histogram bins follow row order, so renaming stores or items (which
    reorders the pipeline's rows) would otherwise change the model."""
    return frame.sort(["date", *columns.all, TARGET], nulls_last=True, maintain_order=True)


def to_matrix(frame: pl.DataFrame, columns: Columns,
              levels: dict[str, list[str]]) -> pd.DataFrame:
    """Features as pandas with fixed categories (unknown levels become missing), the form
    XGBoost's native categorical support takes."""
    out = frame.select(columns.all).to_pandas()
    for c in columns.categorical:
        out[c] = pd.Categorical(out[c], categories=levels[c])
    return out


def to_array(frame: pl.DataFrame, columns: Columns, levels: dict[str, list[str]]) -> np.ndarray:
    """`to_matrix` as one float32 array, categories as their codes (unknown levels NaN). The
    booster keeps its categorical splits, so its predictions are the same (tests/unit/
    test_dataset.py); serving selects rows of it in microseconds, where pandas takes a
    millisecond per request."""
    codes = [pl.col(c).replace_strict(levels[c], list(range(len(levels[c]))), default=None,
                                      return_dtype=pl.Float32) for c in columns.categorical]
    return frame.select(pl.col(columns.numeric).cast(pl.Float32), *codes).to_numpy()
