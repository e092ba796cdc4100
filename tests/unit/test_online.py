"""Request-time features against the offline rows: the same transforms, no skew.

A small simulated world (3 stores x 5 items, 430 days: lag_364 has values). The online state is
built from the rows `forecast_features` reads (the lookback before the origin, plus
`first_sale`), and every comparison is exact.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_assets.features.recent import recent_columns
from ml_assets.features.transforms import SERIES, FeatureSpec, build_features
from ml_assets.forecasting.horizon import active_series, future_rows, horizon_features
from ml_assets.forecasting.online import (
    OnlineState,
    OutsideHorizon,
    UnknownSeries,
    build_state,
    load_state,
    request_features,
    save_state,
    state_exists,
)
from ml_assets.forecasting.online_store import FolderStore, load_current
from ml_assets.simulation import World, WorldConfig

SPEC = FeatureSpec()
START = dt.date(2024, 1, 1)
DAYS = 430


@pytest.fixture(scope="module")
def inputs() -> dict:
    world = World(WorldConfig(seed=3, n_stores=3, n_items=5, start_date=START))
    sales = world.sales(START, START + dt.timedelta(days=DAYS))
    origin = sales.get_column("date").max()
    lookback = origin + dt.timedelta(days=1 - SPEC.lookback_periods)  # read_feature_inputs
    first_sale = sales.group_by(SERIES).agg(pl.col("date").min().alias("first_sale_date"))
    calendar = world.calendar(START, origin + dt.timedelta(days=2 * SPEC.horizon))
    return {"sales": sales.filter(pl.col("date") >= lookback), "origin": origin,
            "dims": {"stores": world.stores, "items": world.items, "calendar": calendar,
                     "first_sale": first_sale}}


@pytest.fixture(scope="module")
def offline(inputs: dict) -> pl.DataFrame:
    """What `forecast_features` writes."""
    return horizon_features(inputs["sales"], inputs["origin"], SPEC, **inputs["dims"])


@pytest.fixture(scope="module")
def state(inputs: dict) -> OnlineState:
    return build_state(inputs["sales"], inputs["origin"], SPEC, **inputs["dims"])
# finish_rows adds them
AT_ORIGIN = ("seasonal_naive", "moving_average_28", "forced_zero",
             *recent_columns(FeatureSpec())[1:])


def _what_if(inputs: dict, store: str, item: str, date: dt.date, **override: object
             ) -> pl.DataFrame:
    """tests/model/conftest.py's `what_if_rows`, for one row of the whole horizon table."""
    history = inputs["sales"].filter(pl.col("date") <= inputs["origin"])
    future = future_rows(active_series(history, inputs["origin"], SPEC), inputs["origin"],
                         SPEC, history)
    hit = (pl.col("store_id") == store) & (pl.col("item_id") == item) & (pl.col("date") == date)
    future = future.with_columns(
        pl.when(hit).then(pl.lit(value)).otherwise(pl.col(name)).cast(future.schema[name])
        .alias(name) for name, value in override.items())
    table = build_features(pl.concat([history, future]), SPEC, **inputs["dims"])
    return table.filter(hit)


def _requests(rows: pl.DataFrame, **override: object) -> pl.DataFrame:
    return rows.select(*SERIES, "date").with_columns(
        price=pl.lit(override.get("price"), pl.Float64),
        on_promo=pl.lit(override.get("on_promo"), pl.Int64))


def test_rows_without_overrides_equal_the_offline_rows(state: OnlineState,
                                                       offline: pl.DataFrame) -> None:
    rows = offline.sample(n=60, seed=4)  # several series, adjacent dates, random order
    assert_frame_equal(request_features(state, _requests(rows)), rows, check_exact=True)
    assert_frame_equal(request_features(state, rows.select(*SERIES, "date")), rows,
                       check_exact=True)  # the override columns are optional
    every = request_features(state, _requests(offline))
    assert_frame_equal(every, offline, check_exact=True)


def test_a_price_override_is_the_rebuilt_row(inputs: dict, state: OnlineState,
                                             offline: pl.DataFrame) -> None:
    base = offline.filter(pl.col("horizon") == 9).head(1)
    store, item, date = base.select(*SERIES, "date").row(0)
    price = base.item(0, "price") * 0.7
    got = request_features(state, _requests(base, price=price))
    expected = _what_if(inputs, store, item, date, price=price)
    assert_frame_equal(got.drop("origin", "horizon", *AT_ORIGIN), expected, check_exact=True)
    changed = {c for c in base.columns if got.item(0, c) != base.item(0, c)}
    assert changed == {"price", "price_rel", "discount"}
    assert got.item(0, "discount") > base.item(0, "discount")


def test_a_promotion_override_changes_only_the_flag(state: OnlineState,
                                                    offline: pl.DataFrame) -> None:
    base = offline.filter(pl.col("horizon") == 3).tail(1)
    got = request_features(state, _requests(base, on_promo=1))
    assert {c for c in base.columns if got.item(0, c) != base.item(0, c)} == {"on_promo"}
    assert got.item(0, "on_promo") == 1.0


def test_requests_are_independent_scenarios(state: OnlineState,
                                            offline: pl.DataFrame) -> None:
    """A promotion on day d does not leak into the request for d + 1 (promo_prev) nor into a
    second request for d itself: a batch equals its requests one by one."""
    series = offline.filter(pl.col("store_id") == offline.item(0, "store_id"),
                            pl.col("item_id") == offline.item(0, "item_id"))
    rows = series.filter(pl.col("horizon").is_in([4, 5, 4]))
    batch = pl.concat([_requests(rows.filter(pl.col("horizon") == 4), on_promo=1),
                       _requests(rows.filter(pl.col("horizon") == 5)),
                       _requests(rows.filter(pl.col("horizon") == 4), price=1.5)])
    together = request_features(state, batch)
    alone = pl.concat([request_features(state, batch.slice(i, 1)) for i in range(3)])
    assert_frame_equal(together, alone, check_exact=True)
    assert_frame_equal(together.slice(1, 1), rows.filter(pl.col("horizon") == 5),
                       check_exact=True)


def test_state_round_trips_through_a_folder(tmp_path: Path, state: OnlineState,
                                            offline: pl.DataFrame) -> None:
    assert not state_exists(tmp_path)
    with pytest.raises(FileNotFoundError, match="materialize `online_features`"):
        load_state(tmp_path)
    for _ in range(3):  # republishing keeps the last two folders and one pointer
        save_state(state, tmp_path)
    assert len(list(tmp_path.glob("state-*"))) == 2
    assert not list(tmp_path.glob(".*tmp"))
    loaded = load_state(tmp_path)
    assert (loaded.origin, loaded.spec, loaded.series_count) == (state.origin, state.spec,
                                                                 state.series_count)
    assert_frame_equal(loaded.history, state.history)
    rows = offline.sample(n=20, seed=1)
    assert_frame_equal(request_features(loaded, _requests(rows, on_promo=1)),
                       request_features(state, _requests(rows, on_promo=1)), check_exact=True)


def test_unknown_series_or_dates_are_named(state: OnlineState, offline: pl.DataFrame) -> None:
    good = _requests(offline.head(2))
    unknown = good.with_columns(pl.lit("S999").alias("store_id")).head(1)
    with pytest.raises(UnknownSeries, match="no active series store_id='S999'") as caught:
        request_features(state, pl.concat([good, unknown]))
    assert (caught.value.index, caught.value.field) == (2, "item_id")
    late = good.with_columns(pl.col("date") + pl.duration(days=SPEC.horizon)).tail(1)
    with pytest.raises(OutsideHorizon, match=r"outside the horizon .* valid dates are") as caught:
        request_features(state, pl.concat([good, late]))
    assert (caught.value.index, caught.value.field) == (2, "date")


def test_a_reader_whose_state_was_replaced_twice_gets_the_current_one(tmp_path: Path,
                                                                      state: OnlineState) -> None:
    store = FolderStore(tmp_path)
    first = store.publish(state)
    later = [store.publish(state) for _ in range(2)]  # keep=2: `first`'s folder is removed
    with pytest.raises(FileNotFoundError):
        store.load(first)
    assert store.current() == later[-1]
    assert load_current(store, first).origin == state.origin
    assert_frame_equal(load_current(store, later[0]).history, state.history)
