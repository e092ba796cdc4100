"""Origin-relative features: what the sales up to the forecast origin say about a row.

The feature table's lags reach back at least the horizon H from the target date, so one table
serves every horizon; a day-1 forecast built only from them ignores the last H - 1 days. These
features close that gap. They depend on the row's origin (target date - `horizon` periods):
the last value, the recent means and the most recent same weekday, all as known at the origin,
with `horizon` itself as a feature so the model learns how far each one carries.

Served and backtest rows have a real origin (`finish_rows`). A training row has none, so it is
given one: a horizon drawn from 1..H by a hash of its date and its lag-H features (never its
ids, so renaming a store or an item changes nothing), and the features as known at that origin.
One model then serves every horizon, from training rows as many as the feature table's.
The measurements behind these choices are in the README (Features, point-in-time).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from ml_assets.features.panel import build_panel, cumsum_rows
from ml_assets.features.transforms import SERIES, FeatureSpec

SAME_DAY_WEEKS = 4  # the most recent same weekdays averaged by `recent_same_day_mean`
_DRAWS = 1_000_003  # resolution of the hash-based uniform draw
POOLED = ("store_", "item_")  # features pooled over the series of a store, of an item


def recent_columns(spec: FeatureSpec) -> list[str]:
    short, mid, long_ = spec.windows
    names = ["horizon", "recent_last", f"recent_mean_{short}", f"recent_mean_{mid}"]
    names += ["recent_same_day", "recent_same_day_mean"] if spec.daily else []
    return names + [f"{key}_{kind}" for key in ("store", "item")
                    for kind in (f"trend_{short}", f"trend_{mid}", "level")]


def level_column(spec: FeatureSpec) -> str:
    """The series' recent level at the origin: the per-series scale of the model's target."""
    return f"recent_mean_{spec.windows[1]}"


def sampled_horizon(rows: pl.DataFrame, spec: FeatureSpec) -> pl.Expr:
    """A horizon in 1..H per training row, from a hash of its date and lag features (never its
    ids). Drawn as 1 + H u^2 for a uniform u: dense near the origin, where the recent features
    change meaning fastest, and thinning out to H (module doc: measured against uniform)."""
    keys = ["date", *[c for c in (f"lag_{spec.lags[0]}", f"mean_{spec.windows[1]}")
                      if c in rows.columns]]
    u = (pl.struct(keys).hash(seed=14) % _DRAWS).cast(pl.Float64) / _DRAWS
    return (1 + (spec.horizon * u * u).floor()).cast(pl.Int32).alias("horizon")


class _AtOrigin:
    """Cells and trailing means of one history (one series per `keys`), looked up per row at
    a period relative to the row's date; a series not in the history gives NaN."""

    def __init__(self, history: pl.DataFrame, rows: pl.DataFrame, keys: list[str],
                 period_days: int) -> None:
        panel = build_panel(history, keys, period_days)
        self.units = panel.matrix(history.get_column("units_sold").cast(pl.Float64).to_numpy())
        valid = ~np.isnan(self.units)
        self.total = np.zeros((self.units.shape[0] + 1, self.units.shape[1]))
        self.count = np.zeros_like(self.total)
        cumsum_rows(np.where(valid, self.units, 0.0), out=self.total[1:])
        cumsum_rows(valid.astype(np.float64), out=self.count[1:])
        sid = rows.select(keys).join(
            history.select(keys).gather(panel.representative).with_row_index("__sid"),
            on=keys, how="left", maintain_order="left").get_column("__sid")
        self.known = sid.is_not_null().to_numpy()
        self.sid = sid.fill_null(0).to_numpy().astype(np.int64)
        first = int(history.get_column("date").to_physical().min())  # type: ignore[arg-type]
        self.t = (rows.get_column("date").to_physical().to_numpy().astype(np.int64) - first
                  ) // period_days

    def cell(self, m: np.ndarray, at: np.ndarray) -> np.ndarray:
        ok = self.known & (at >= 0) & (at < m.shape[0])
        out = np.full(len(at), np.nan)
        out[ok] = m[at[ok], self.sid[ok]]
        return out

    def mean(self, end: np.ndarray, w: int) -> np.ndarray:
        """Mean of the known periods in (end - w, end]."""
        last = len(self.total) - 1
        hi, lo = np.clip(end + 1, 0, last), np.clip(end + 1 - w, 0, last)
        total = self.cell(self.total, hi) - self.cell(self.total, lo)
        n = self.cell(self.count, hi) - self.cell(self.count, lo)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / n, np.nan)


def pooled_columns(spec: FeatureSpec) -> list[str]:
    return [c for c in recent_columns(spec) if c.startswith(POOLED)]


def recent_features(history: pl.DataFrame, rows: pl.DataFrame, spec: FeatureSpec,
                    pooled: pl.DataFrame | None = None) -> pl.DataFrame:
    """`recent_columns` for `rows` (date, store_id, item_id, horizon), in their order, from
    `history` (date, store_id, item_id, units_sold; one row per series and period). Each row
    sees only the history up to its origin; a series or period not in it gives nulls.

    `store_level` (`item_level`): the mean units of one series of the store (of the item,
    across stores) over the last `long` periods at the origin; `store_trend_<w>`
    (`item_trend_<w>`): its last w periods against that. A store's traffic and an item's
    popularity move many series together, and their pooled sales are far less noisy than one
    series', so they say where the store and the item stand now. With the log-link objective,
    level = store x item is a sum of terms, which trees learn. `pooled` (`pooled_at`, when
    every row has the same origin) gives them per series instead of pooling `history`."""
    history = history.filter(pl.col("units_sold").is_not_null())
    short, mid, long_ = spec.windows
    if history.height == 0:
        return rows.select(pl.col("horizon").cast(pl.Int32), *[
            pl.lit(None, pl.Float64).alias(c) for c in recent_columns(spec)[1:]])
    h = rows.get_column("horizon").to_numpy().astype(np.int64)
    own = _AtOrigin(history, rows, SERIES, spec.period_days)
    origin = own.t - h
    out = {"horizon": pl.Series(h, dtype=pl.Int32), "recent_last": own.cell(own.units, origin),
           **{f"recent_mean_{w}": own.mean(origin, w) for w in (short, mid)}}
    if spec.daily:
        same = own.t - 7 * -(-h // 7)  # the latest same weekday at or before the origin
        lagged = np.stack([own.cell(own.units, same - 7 * j) for j in range(SAME_DAY_WEEKS)])
        counted = (~np.isnan(lagged)).sum(axis=0)
        out["recent_same_day"] = lagged[0]
        out["recent_same_day_mean"] = np.where(
            counted > 0, np.nansum(lagged, axis=0) / np.maximum(counted, 1), np.nan)
    if pooled is None:
        out.update(_pooled(history, rows, h, spec))
    else:
        out.update(rows.select(SERIES).join(pooled, on=SERIES, how="left",
                                            maintain_order="left").drop(SERIES).to_dict())
    return pl.DataFrame({k: pl.Series(k, v, nan_to_null=True) if isinstance(v, np.ndarray)
                         else v for k, v in out.items()}).select(recent_columns(spec))


def _pooled(history: pl.DataFrame, rows: pl.DataFrame, h: np.ndarray,
            spec: FeatureSpec) -> dict[str, np.ndarray]:
    short, mid, long_ = spec.windows
    out = {}
    for key in ("store_id", "item_id"):
        # one series of the store (of the item, across stores) on average: levels and trends
        # estimated from many series, far less noisy than the series' own
        pooled = _AtOrigin(history.group_by("date", key).agg(pl.col("units_sold").mean()),
                           rows, [key], spec.period_days)
        origin = pooled.t - h  # the history's first date is the series' table's: same t
        name = key.removesuffix("_id")
        level = pooled.mean(origin, long_)
        out[f"{name}_level"] = level
        with np.errstate(invalid="ignore", divide="ignore"):
            for w in (short, mid):
                out[f"{name}_trend_{w}"] = np.where(level > 0, pooled.mean(origin, w) / level,
                                                    np.nan)
    return out


def pooled_at(history: pl.DataFrame, origin: dt.date, spec: FeatureSpec) -> pl.DataFrame:
    """The pooled columns of every series in `history` as known at `origin`: what a request
    at that origin joins instead of pooling the whole history again."""
    first = origin + dt.timedelta(days=spec.period_days)
    series = history.select(SERIES).unique().with_columns(date=pl.lit(first, pl.Date))
    history = history.filter(pl.col("units_sold").is_not_null())
    if history.height == 0:
        return series.select(*SERIES, *[pl.lit(None, pl.Float64).alias(c)
                                         for c in pooled_columns(spec)])
    out = _pooled(history, series, np.ones(series.height, dtype=np.int64), spec)
    return series.select(SERIES).with_columns(
        pl.Series(k, v, nan_to_null=True) for k, v in out.items()).select(
        *SERIES, *pooled_columns(spec))


def with_recent(rows: pl.DataFrame, history: pl.DataFrame, spec: FeatureSpec,
                pooled: pl.DataFrame | None = None) -> pl.DataFrame:
    """`rows` with the origin-relative features added (its own `horizon` column kept, or drawn
    by `sampled_horizon` when it has none: training rows). `pooled`: see `recent_features`."""
    if "horizon" not in rows.columns:
        rows = rows.with_columns(sampled_horizon(rows, spec))
    keys = rows.select("date", *SERIES, "horizon")
    recent = recent_features(history.select("date", *SERIES, "units_sold"), keys, spec, pooled)
    return rows.with_columns(recent.drop("horizon"))
