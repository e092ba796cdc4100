"""The default feature set written the straightforward pandas way: the benchmark's baseline and
its parity oracle for `ml_assets.features.transforms.build_features`.

Idiomatic pandas, no tricks: sort by series and date, reindex every series onto the full period
grid (so a gap is a period, not a missing row), then `groupby(series)` shift / rolling / ffill /
transform, and merges for the static and calendar attributes. It follows the engine's contract
(module docstring of transforms.py): sales-derived values for target date t use only periods up
to t - H; price, promotion, calendar and attributes are taken at t; `promo_prev` is t - 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ml_assets.features.transforms import FeatureSpec

SERIES = ["store_id", "item_id"]
_TEXT_MEAN_LEN = 30  # the engine's rule: longer strings are free text, not categories


def _attribute_columns(dim: pd.DataFrame, key: str, prefix: str) -> pd.DataFrame:
    """Numeric, boolean and short-string attribute columns, renamed `{prefix}_{name}`."""
    keep = [key]
    for name in dim.columns:
        if name == key:
            continue
        col = dim[name]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            keep.append(name)
        elif pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col):
            text = col.dropna().astype(str)
            short = (text.str.len().mean() if len(text) else 0) <= _TEXT_MEAN_LEN
            few_words = (text.str.count(r"\S+").mean() if len(text) else 0) < 3
            dates = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce").notna().all()
            if len(text) and short and few_words and not dates:
                keep.append(name)
    return dim[keep].rename(columns={c: f"{prefix}_{c}" for c in keep if c != key})


def build_features_pandas(
    sales: pd.DataFrame,
    spec: FeatureSpec,
    stores: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    calendar: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One feature row per sales row, in the sales rows' order, same columns as the engine."""
    h, (short, mid, long_) = spec.horizon, spec.windows
    step = f"{spec.period_days}D"
    df = sales.copy()
    df["date"] = pd.to_datetime(df["date"]).astype("datetime64[ns]")
    df["row"] = np.arange(len(df))
    df["units_sold"] = df["units_sold"].astype("float64")
    df["price"] = df["price"].astype("float64")
    df["on_promo"] = df["on_promo"].fillna(0).astype("float64")
    df["first_date"] = df.groupby(SERIES)["date"].transform("min")

    # Every series on every period of the data: gaps and not-yet-launched periods are NaN rows.
    periods = pd.date_range(df["date"].min(), df["date"].max(), freq=step, name="date")
    series = df[SERIES].drop_duplicates().sort_values(SERIES)
    grid_index = pd.MultiIndex.from_frame(series.merge(periods.to_frame(index=False),
                                                       how="cross"))
    grid = df.set_index([*SERIES, "date"]).reindex(grid_index)  # sorted by series, then date
    by_series = grid.groupby(level=SERIES, sort=True)

    def rolling(values: pd.Series, w: int, min_periods: int = 1) -> Any:  # RollingGroupby
        # grid order = group order (sorted keys, then date), so the results line up positionally
        return values.groupby(level=SERIES, sort=True).rolling(w, min_periods=min_periods)

    origin_units = by_series["units_sold"].shift(h)  # the last value known at the origin t - H
    price = by_series["price"].ffill()
    origin_price = price.groupby(level=SERIES, sort=True).shift(h)
    feats = pd.DataFrame(index=grid.index)
    for k in spec.lags:
        feats[f"lag_{k}"] = by_series["units_sold"].shift(k)
    feats["seasonal_lag_mean"] = feats[[f"lag_{k}" for k in spec.lags[:4]]].mean(axis=1)
    for w in (short, mid, long_):
        feats[f"mean_{w}"] = rolling(origin_units, w).mean().to_numpy()
    feats[f"std_{mid}"] = rolling(origin_units, mid, 2).std(ddof=1).to_numpy()
    is_zero = (origin_units == 0).astype("float64").where(origin_units.notna())
    feats[f"zero_share_{mid}"] = rolling(is_zero, mid).mean().to_numpy()
    feats["price"] = price
    feats["price_rel"] = price / rolling(origin_price, mid).mean().to_numpy()
    feats["discount"] = 1.0 - price / rolling(origin_price, long_).max().to_numpy()
    feats["on_promo"] = grid["on_promo"]
    feats["promo_prev"] = by_series["on_promo"].shift(1)
    feats[f"promo_share_{mid}"] = rolling(by_series["on_promo"].shift(h), mid).mean().to_numpy()

    out = feats[grid["row"].notna().to_numpy()].reset_index()  # back to the sales rows
    out["row"] = grid.loc[grid["row"].notna(), "row"].to_numpy().astype(np.int64)
    out["periods_since_first_sale"] = (
        (out["date"] - grid.loc[grid["row"].notna(), "first_date"].to_numpy()).dt.days
        // spec.period_days).astype("int64")
    out = out.sort_values("row").reset_index(drop=True)

    base = df[["date", *SERIES, "units_sold", *spec.numeric_covariates,
               *spec.categorical_covariates]].reset_index(drop=True)
    for c in spec.numeric_covariates:
        base[c] = base[c].astype("float64")
    for c in spec.categorical_covariates:
        base[c] = base[c].astype("string").astype(object)
    date = base["date"].dt
    base["day_of_week"] = (date.dayofweek + 1).astype("int8")
    base["day_of_month"] = date.day.astype("int8")
    base["month"] = date.month.astype("int8")
    base["week_of_year"] = date.isocalendar().week.astype("int8").to_numpy()
    base["day_of_year"] = date.dayofyear.astype("int16")
    feature_cols = [*feats.columns, "periods_since_first_sale"]
    result = pd.concat([base, out[feature_cols]], axis=1)

    static: list[str] = []
    for dim, key, prefix in ((stores, "store_id", "store"), (items, "item_id", "item")):
        if dim is not None and len(dim):
            attrs = _attribute_columns(dim, key, prefix)
            result = result.merge(attrs, on=key, how="left")
            static += [c for c in attrs.columns if c != key]
    cal: list[str] = []
    if calendar is not None and len(calendar):
        cal_dim = calendar.assign(date=pd.to_datetime(calendar["date"]).astype("datetime64[ns]"))
        attrs = _attribute_columns(cal_dim, "date", "cal")
        result = result.merge(attrs, on="date", how="left")
        cal = [c for c in attrs.columns if c != "date"]

    calendar_parts = ["day_of_week", "day_of_month", "month", "week_of_year", "day_of_year"]
    order = [*calendar_parts, *feats.columns, "periods_since_first_sale",
             *spec.numeric_covariates, *spec.categorical_covariates, *static, *cal]
    return result[["date", *SERIES, "units_sold", *order]]
