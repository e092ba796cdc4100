"""Feature transforms: pure polars, one row per (series, date), point-in-time correct.

Strategy: lags at least the horizon. Every value derived from sales for target date t uses
only sales up to the forecast origin t - H, where H is the maximum horizon. One table then
serves every horizon 1..H, and the same code builds training rows, batch forecasts and online
requests. Known-in-advance inputs (calendar, price, promotion, declared covariates, static
attributes) are taken at t itself. What happened between t - H and the origin of a nearer
forecast reaches the model through the origin-relative features (ml_assets/features/recent.py),
added where a row's origin is known: training rows, served rows and backtest rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from ml_assets.features.panel import (
    Panel,
    Windows,
    build_panel,
    forward_fill,
    lagged_mean,
    rolling_max,
    shift,
    small_pages,
)

SERIES = ["store_id", "item_id"]
_STATIC_EXCLUDE_AVG_LEN = 30  # longer strings are free text (descriptions), not categories


@dataclass(frozen=True)
class FeatureSpec:
    horizon: int = 28  # periods
    period_days: int = 1  # 1 = daily, 7 = weekly
    numeric_covariates: tuple[str, ...] = ()
    categorical_covariates: tuple[str, ...] = ()
    # Known-in-advance inputs of future rows: a covariate's value where the plan has none
    defaults: tuple[tuple[str, float | str], ...] = ()
    # Rows forecast as exactly 0 (and left out of training and metrics): all of these hold
    zero_when: tuple[tuple[str, float | str], ...] = ()

    @property
    def daily(self) -> bool:
        return self.period_days == 1

    @property
    def covariates(self) -> tuple[str, ...]:
        return (*self.numeric_covariates, *self.categorical_covariates)

    @property
    def season(self) -> int:
        """Periods in the seasonal naive's season: a week of days, or a year of weeks."""
        return 7 if self.daily else 52

    def forced_zero(self) -> pl.Expr:
        """True on rows the `zero_when` rule forces to 0 (False when there is no rule)."""
        conditions = [pl.col(name).cast(pl.Utf8 if isinstance(value, str) else pl.Float64,
                                     strict=False) == value for name, value in self.zero_when]
        expr = pl.all_horizontal(conditions) if conditions else pl.lit(False)
        return expr.fill_null(False).alias("forced_zero")

    @property
    def lags(self) -> list[int]:
        """Seasonal lags from the horizon on: same weekday for daily data; plus last year."""
        step = 7 if self.daily else 1
        first = -(-self.horizon // step) * step
        lags = [first + i * step for i in range(4)]
        year = 364 if self.daily else 52
        return lags + ([year] if year > lags[-1] else [])

    @property
    def windows(self) -> tuple[int, int, int]:
        return (7, 28, 91) if self.daily else (4, 13, 52)

    @property
    def lookback_periods(self) -> int:
        """History a window of features needs before its first target date."""
        return max(self.lags[-1], self.horizon + self.windows[-1]) + 1


def feature_columns(spec: FeatureSpec, static: list[str], calendar: list[str]) -> list[str]:
    short, mid, long_ = spec.windows
    cols = ["day_of_week", "day_of_month", "month", "week_of_year", "day_of_year"]
    cols += [f"lag_{k}" for k in spec.lags]
    cols += ["seasonal_lag_mean", f"mean_{short}", f"mean_{mid}", f"mean_{long_}", f"std_{mid}",
             f"zero_share_{mid}", "price", "price_rel", "discount", "on_promo", "promo_prev",
             f"promo_share_{mid}", "periods_since_first_sale"]
    covariates = [*spec.numeric_covariates, *spec.categorical_covariates]
    return cols + covariates + static + calendar


def _static_columns(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """Attribute columns usable as features: numbers and short categories, not text or dates."""
    keep = [key]
    for name, dtype in frame.schema.items():
        if name == key:
            continue
        if dtype.is_numeric() or dtype == pl.Boolean:
            keep.append(name)
        elif dtype in (pl.Utf8, pl.Categorical) or isinstance(dtype, pl.Enum):
            if _is_category(frame.get_column(name).cast(pl.Utf8)):
                keep.append(name)
    prefix = {"store_id": "store", "item_id": "item", "date": "cal"}[key]
    numeric = {c for c in keep if frame.schema[c].is_numeric() or frame.schema[c] == pl.Boolean}
    columns = [pl.col(c) if c in numeric else pl.col(c).cast(pl.Utf8) for c in keep[1:]]
    return frame.select(key, *columns).rename({c: f"{prefix}_{c}" for c in keep if c != key})


def _is_category(text: pl.Series) -> bool:
    """Short labels, not free text (long, or several words) and not dates written as text."""
    values = text.drop_nulls()
    if values.is_empty():
        return False
    if (values.str.len_chars().mean() or 0) > _STATIC_EXCLUDE_AVG_LEN:
        return False
    if (values.str.count_matches(r"\S+").mean() or 0) >= 3:
        return False
    return values.str.to_date(strict=False).null_count() > 0  # not every value is a date


def _attributes(table: pl.DataFrame, dim: pl.DataFrame | None, key: str) -> pl.DataFrame:
    """Static attribute columns aligned with `table`'s rows (one per series or per period)."""
    if dim is None or dim.height == 0:
        return pl.DataFrame()
    attrs = _static_columns(dim, key)
    return table.select(key).join(attrs, on=key, how="left", maintain_order="left").drop(key)


def _gatherer(panel: Panel, out: list[pl.Series]) -> Callable[[str, np.ndarray], None]:
    def add(name: str, matrix: np.ndarray) -> None:
        # One matrix at a time, gathered and dropped: peak memory stays a few matrices, not 20.
        out.append(pl.Series(name, panel.gather(matrix), nan_to_null=True))
    return add


def _float_matrix(sales: pl.DataFrame, panel: Panel, name: str) -> np.ndarray:
    return panel.matrix(sales.get_column(name).cast(pl.Float64).to_numpy())


def _sales_features(sales: pl.DataFrame, panel: Panel, spec: FeatureSpec) -> list[pl.Series]:
    """Lags and rolling statistics of the target, up to the origin t - H."""
    short, mid, long_ = spec.windows
    h, out = spec.horizon, []
    add = _gatherer(panel, out)
    units_m = _float_matrix(sales, panel, "units_sold")
    for k in spec.lags:
        add(f"lag_{k}", shift(units_m, k))
    add("seasonal_lag_mean", lagged_mean(units_m, spec.lags[:4]))
    units = Windows(units_m, centre_for_std=True)
    for w in (short, mid, long_):
        add(f"mean_{w}", units.mean(h, w))
    add(f"std_{mid}", units.std(h, mid))
    zeros = Windows(np.where(np.isnan(units_m), np.nan, units_m == 0), like=units)
    add(f"zero_share_{mid}", zeros.mean(h, mid))
    return out


def _price_features(sales: pl.DataFrame, panel: Panel, spec: FeatureSpec) -> list[pl.Series]:
    """Price at t (carried forward over gaps), relative to its past mean and past peak."""
    _, mid, long_ = spec.windows
    h, out = spec.horizon, []
    add = _gatherer(panel, out)
    price_m = forward_fill(_float_matrix(sales, panel, "price"))
    add("price", price_m)
    ratio = Windows(price_m).mean(h, mid)
    add("price_rel", np.divide(price_m, ratio, out=ratio))
    ratio = rolling_max(price_m, h, long_)
    np.divide(price_m, ratio, out=ratio)
    add("discount", np.subtract(1.0, ratio, out=ratio))
    return out


def _promo_features(sales: pl.DataFrame, panel: Panel, spec: FeatureSpec) -> list[pl.Series]:
    """Promotion at t and t - 1, and its share over the past window."""
    _, mid, _ = spec.windows
    h, out = spec.horizon, []
    add = _gatherer(panel, out)
    promo_m = panel.matrix(sales.get_column("on_promo").fill_null(0).cast(pl.Float64).to_numpy())
    add("on_promo", promo_m)
    add("promo_prev", shift(promo_m, 1))
    add(f"promo_share_{mid}", Windows(promo_m).mean(h, mid))
    return out


def _window_features(sales: pl.DataFrame, panel: Panel, spec: FeatureSpec) -> list[pl.Series]:
    """Lags, rolling statistics, price and promotion features, in the rows' own order. Each
    group frees its source matrix before the next one starts.

    Not threaded: glibc gives each thread its own arena, which maps every matrix afresh, and
    the page faults cost more than the second core gives back (benchmarks/README.md)."""
    groups = (_sales_features, _price_features, _promo_features)
    return [column for group in groups for column in group(sales, panel, spec)]


def build_features(
    sales: pl.DataFrame,
    spec: FeatureSpec,
    stores: pl.DataFrame | None = None,
    items: pl.DataFrame | None = None,
    calendar: pl.DataFrame | None = None,
    first_sale: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Bronze sales (plus any future rows carrying known-in-advance inputs and a null target)
    → one feature row per input row, in the input's row order.

    `first_sale` (series → `first_sale_date`) makes the series age independent of how much
    history was passed in; without it the earliest row passed in counts as the first sale.
    """
    with small_pages():
        return _build_features(sales, spec, stores, items, calendar, first_sale)


def _build_features(
    sales: pl.DataFrame,
    spec: FeatureSpec,
    stores: pl.DataFrame | None,
    items: pl.DataFrame | None,
    calendar: pl.DataFrame | None,
    first_sale: pl.DataFrame | None,
) -> pl.DataFrame:
    panel = build_panel(sales, SERIES, spec.period_days)
    columns = _window_features(sales, panel, spec)
    series = sales.select(SERIES).gather(panel.representative)
    if first_sale is None:
        first_t = np.full(panel.n_series, panel.n_periods)
        np.minimum.at(first_t, panel.sid, panel.t)
        age = pl.Series(panel.t - first_t[panel.sid])
    else:
        first = series.join(first_sale, on=SERIES, how="left", maintain_order="left")
        age = ((sales.get_column("date") - first.get_column("first_sale_date").gather(panel.sid))
               .dt.total_days() // spec.period_days)

    periods = pl.DataFrame({"date": pl.date_range(sales.get_column("date").min(),
                                                  sales.get_column("date").max(),
                                                  interval=f"{spec.period_days}d", eager=True)})
    static = pl.concat([_attributes(series, stores, "store_id"),
                        _attributes(series, items, "item_id")], how="horizontal")
    cal = _attributes(periods, calendar, "date")
    date = pl.col("date")
    # Calendar parts and calendar attributes per period, then one gather: no per-row date maths.
    by_period = periods.select(
        date.dt.weekday().alias("day_of_week"),
        date.dt.day().alias("day_of_month"),
        date.dt.month().alias("month"),
        date.dt.week().alias("week_of_year"),
        date.dt.ordinal_day().alias("day_of_year"),
    ).hstack(cal)
    out = sales.select(
        "date", *SERIES, pl.col("units_sold").cast(pl.Float64),
        *[pl.col(c).cast(pl.Float64) for c in spec.numeric_covariates],
        *[pl.col(c).cast(pl.Utf8) for c in spec.categorical_covariates],
    ).with_columns(
        *columns,
        periods_since_first_sale=age,
    ).hstack(by_period.gather(_index(panel.t)))
    if static.width:
        out = out.hstack(static.gather(_index(panel.sid)))
    order = feature_columns(spec, static.columns, cal.columns)
    # select_seq only reorders; select would also rechunk the columns passed through from
    # `sales` (one chunk per Parquet row group), copying them for nothing.
    return out.select_seq("date", *SERIES, "units_sold", *order)


def _index(rows: np.ndarray) -> pl.Series:
    return pl.Series(rows, dtype=pl.get_index_type())
