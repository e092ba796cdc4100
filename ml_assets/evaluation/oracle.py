"""The simulated world's noise floor: an "oracle" forecaster that knows each row's true
expected demand (`ml_assets.simulation.World.expected`), scored on the backtest's rows like
every other forecaster.

No forecaster can know more than the expected demand, so the challenger's WAPE over the
oracle's says how much of its error a better model could still remove (1.0: none). The mean
is not quite the WAPE-optimal forecast (the median is, and the count's median sits a little
below its mean), so the floor is a near one, not a strict bound. Simulated data only: a real
dataset has no oracle.

The oracle also knows the world's future draws (an item's popularity wanders week by week), which
no forecaster can. The `origin_oracle` knows the world's rules and its draws up to each row's
origin only: the expected demand as expected at the origin. Its WAPE is the floor a forecaster
could reach; the challenger over it says how much a better model could still gain.
"""

from __future__ import annotations

import polars as pl

from ml_assets.features.transforms import SERIES

ORACLE = "oracle"
ORIGIN_ORACLE = "origin_oracle"


def with_oracle(backtest: pl.DataFrame, expected: pl.DataFrame,
                column: str = ORACLE) -> pl.DataFrame:
    """The backtest table with an oracle's column (`column`): the expected demand of each row's
    (date, store_id, item_id, and origin when `expected` has one) from `expected` (those keys
    and `expected`), null where it has none; 0 on rows forced to 0, as for every forecaster."""
    keys = ["date", *SERIES, *(["origin"] if "origin" in expected.columns else [])]
    oracle = expected.select(*keys, pl.col("expected").cast(pl.Float64).alias(column))
    joined = backtest.join(oracle, on=keys, how="left", maintain_order="left")
    return joined.with_columns(pl.when(pl.col("forced_zero").fill_null(False)).then(0.0)
                               .otherwise(pl.col(column)).alias(column))


def oracle_ratios(tables: dict[str, pl.DataFrame], forecaster: str = "challenger",
                  oracle: str = ORACLE) -> dict[str, float]:
    """`forecaster`'s WAPE over `oracle`'s, overall ("all") and per horizon bucket, from
    `report.report_tables`' tables (nan where the oracle's WAPE is 0 or undefined)."""
    overall = dict(tables["overall"].select("forecaster", "wape").iter_rows())
    out = {"all": _ratio(overall.get(forecaster), overall.get(oracle))}
    for (bucket,), group in tables["horizon_bucket"].group_by("horizon_bucket",
                                                               maintain_order=True):
        wapes = dict(group.select("forecaster", "wape").iter_rows())
        out[str(bucket)] = _ratio(wapes.get(forecaster), wapes.get(oracle))
    return out


def _ratio(num: float | None, den: float | None) -> float:
    if num is None or den is None or den != den or den == 0:
        return float("nan")
    return float(num / den)
