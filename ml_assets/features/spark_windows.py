"""The window features of transforms.py (lags, rolling statistics, price, promotion) as Spark
window functions, value for value.

panel.py scatters rows onto a (period x series) grid where a missing period is an empty cell.
Here the rows stay long, ordered by their period index `t` within each series, and every window
is a range frame over `t`: a gap is a missing period, not a skipped row, as on the grid.

A trailing window is a difference of two running sums taken at its edges (frames from the
series' start to t - e), the same sums in the same order as panel.cumsum_rows, so integer units
give the same bits. Spark computes such frames in one pass, while a frame with two finite ends is
recomputed for every row: only the one-row lag frames and the price peak use those (the peak,
91 rows per row, is about a third of the window stage's time). Two window passes in all: the
second needs the forward-filled price and each series' first value from the first.

Price is forward-filled on the grid, so its windows count the filled gap periods too. Each row's
filled price holds from its period up to the series' next row. The sum of filled prices up to a
period P is then the sum of price x periods held over the rows up to P, less the periods after
P that the last of them holds. That needs no grid, and differs from the grid's sum only in
rounding.
"""

from __future__ import annotations

from functools import reduce
from operator import add

from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

from ml_assets.features.transforms import SERIES, FeatureSpec

FIRST = Window.unboundedPreceding


def _series() -> WindowSpec:
    return Window.partitionBy(*SERIES).orderBy("t")


def _upto(e: int) -> WindowSpec:
    """Periods up to t - e."""
    return _series().rangeBetween(FIRST, -e)


def _running(x: Column | str, e: int) -> Column:
    """The grid's cumulative sum at t - e: 0 before the series starts."""
    return F.coalesce(F.sum(x).over(_upto(e)), F.lit(0.0))


def _at(x: Column | str, k: int) -> Column:
    """The value k periods earlier; null when that period has no row (a gap)."""
    return F.max(x).over(_series().rangeBetween(-k, -k))


def _ratio(total: Column, n: Column, min_n: int = 1) -> Column:
    """Null below `min_n` values, as panel.Windows; never a division by zero (Spark's ANSI mode
    raises on it)."""
    return F.when(n >= min_n, total / n)


def _window(name: str, e: int, w: int) -> Column:
    """A trailing total over periods [t - e - w + 1, t - e] from the running columns."""
    return F.col(f"_{name}{e}") - F.col(f"_{name}{e + w}")


def window_features(rows: DataFrame, spec: FeatureSpec) -> DataFrame:
    """`rows`: one per (series, period) with `t`, and `_units`, `_price`, `_promo` (missing
    values null, never NaN). Adds the features of transforms._window_features under their
    names, and `_t0`, the series' first period."""
    short, mid, long_ = spec.windows
    h = spec.horizon
    series = _series()
    whole = series.rowsBetween(FIRST, Window.unboundedFollowing)
    units, price, promo, t = F.col("_units"), F.col("_price"), F.col("_promo"), F.col("t")
    zero = F.when(units.isNotNull(), (units == 0).cast("double"))
    unit_edges = (h, h + short, h + mid, h + long_)
    staged = rows.select(
        "*",
        F.last(price, ignorenulls=True).over(series.rowsBetween(FIRST, 0)).alias("price"),
        # the series' last row holds its price for one period here: see _filled_sum
        F.coalesce(F.lead(t).over(series), t + 1).alias("_next"),
        # Centre of the sums of squares (panel.Windows): the series' first value.
        F.coalesce(F.first(units, ignorenulls=True).over(whole), F.lit(0.0)).alias("_first"),
        F.min(F.when(price.isNotNull(), t)).over(whole).alias("_priced"),
        F.min(t).over(whole).alias("_t0"),
        *[_at(units, k).alias(f"lag_{k}") for k in spec.lags],
        _at(promo, 1).alias("promo_prev"),
        *[_running(units, e).alias(f"_s{e}") for e in unit_edges],
        *[F.count(units).over(_upto(e)).alias(f"_n{e}") for e in unit_edges],
        *[_running(zero, e).alias(f"_z{e}") for e in (h, h + mid)],
        *[_running(promo, e).alias(f"_p{e}") for e in (h, h + mid)],
        *[F.count(promo).over(_upto(e)).alias(f"_pn{e}") for e in (h, h + mid)],
    )
    centred = units - F.col("_first")
    filled = F.col("price")
    peak_from = h + long_ - 1
    staged = staged.select(
        "*",
        *[_running(F.when(units.isNotNull(), centred * centred), e).alias(f"_q{e}")
          for e in (h, h + mid)],
        *[_filled_sum(e).alias(f"_f{e}") for e in (h, h + mid)],
        # The peak over [t - h - long + 1, t - h]: the rows inside it, and the filled value at
        # its first period, held over from the last row before it.
        F.greatest(F.last(filled).over(_upto(peak_from)),
                   F.max(filled).over(series.rangeBetween(-peak_from, -h))).alias("_peak"),
    )

    n = _window("n", h, mid)
    s1 = _window("s", h, mid) - n * F.col("_first")
    var = (_window("q", h, mid) - (s1 * s1) / n) / (n - 1)
    lags = [F.col(f"lag_{k}") for k in spec.lags[:4]]
    n_lags = reduce(add, [c.isNotNull().cast("int") for c in lags])
    n_price = _priced_periods(h) - _priced_periods(h + mid)
    price_mean = _ratio(_window("f", h, mid), n_price)
    price_rel = F.when(price_mean != 0, filled / price_mean)
    discount = F.when(F.col("_peak") != 0, 1.0 - filled / F.col("_peak"))
    return staged.select(
        *rows.columns, "_t0", *[f"lag_{k}" for k in spec.lags],
        _ratio(reduce(add, [F.coalesce(c, F.lit(0.0)) for c in lags]), n_lags)
        .alias("seasonal_lag_mean"),
        *[_ratio(_window("s", h, w), _window("n", h, w)).alias(f"mean_{w}")
          for w in (short, mid, long_)],
        F.when(n >= 2, F.sqrt(F.greatest(var, F.lit(0.0)))).alias(f"std_{mid}"),
        _ratio(_window("z", h, mid), n).alias(f"zero_share_{mid}"),
        "price", price_rel.alias("price_rel"), discount.alias("discount"),
        promo.alias("on_promo"), "promo_prev",
        _ratio(_window("p", h, mid), _window("pn", h, mid)).alias(f"promo_share_{mid}"),
    )


def _filled_sum(e: int) -> Column:
    """Sum of the forward-filled price over the periods up to P = t - e: each row up to P
    times the periods it holds, less the periods after P held by the last of them."""
    frame = _upto(e)
    held = F.sum(F.col("price") * (F.col("_next") - F.col("t"))).over(frame)
    price, until = F.last("price").over(frame), F.last("_next").over(frame)
    return F.coalesce(held - price * (until - (F.col("t") - e) - 1), held, F.lit(0.0))


def _priced_periods(e: int) -> Column:
    """Grid periods up to t - e holding a filled price: every one from the first priced row."""
    upto = F.col("t") - e
    return F.when(F.col("_priced") <= upto, upto - F.col("_priced") + 1).otherwise(F.lit(0))
