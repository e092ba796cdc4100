"""Deterministic synthetic retail world (store x item x day): the platform's default data source.

Reproducibility: static attributes come from ``default_rng([seed, stream])``; time-varying draws
from ``default_rng([seed, ordinal, stream, ...])`` where ordinal is the first day of the Monday-week
(demand, stock-outs, promos) or 4-week block (prices) that owns them. A day's rows thus never depend
on the range requested: a one-day call computes its whole week and keeps that day. Whatever looks
backwards (post-promo dip, stock-out runs) is re-derived from the earlier days' own draws.
Transcendental maths (exp, cos, **) runs only on static tables or fixed-shape per-week/per-block
rows; chunk-sized arrays see only + * / and comparisons, exact per element, so no value can
depend on where it sits inside a chunk.

Closed days: a drawn subset of stores (mostly rural ones) closes on the public holidays (the
events with is_holiday = 1). Their rows on those days exist with units_sold 0 and open 0; every
other row has open 1. Units are drawn as if open and zeroed afterwards, so closing changes no
other row.

The plan (the known future), delivered every Monday d as ``plan(d)``, about days d+1 .. d+42:
one row per (store, item, day) of a planned promotion (on_promo 1, the promotion price), a row
with on_promo 0 where an earlier delivery planned a promotion this one no longer does, and a
store-level row (no item_id) with open 0 per closed day. Per (item, Monday-week) a draw of its
own stream decides the late changes: some promotions enter the plan only in the last one or two
deliveries before they start; some that never run (``u`` just above the promotion threshold) are
planned in early deliveries and cancelled one to three weeks before they would start. So the
last delivery before a day agrees with that day's on_promo and open, except under plan_miss.
A delivery knows only the scenarios started by its day (the world never lands the future, and
one landed earlier was written without them): ``plan(d)`` is that of ``_known_at(d)``, and a
delivery written before a scenario was added equals what the world with the scenario gives.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

_STORES, _ITEMS, _DEMAND, _STOCKOUT, _PRICE, _PROMO = 1, 2, 10, 11, 12, 13  # rng stream ids
_PLAN, _CLOSING, _LEVEL = 14, 15, 16
_EPOCH = date(1970, 1, 1).toordinal()
_CHUNK_CELLS = 2_000_000  # days x series per chunk: vectorised, yet ~16 MB per temporary array
_LOOKBACK = 3  # post-promo dip and stock-out runs both reach back at most 3 days
SALES_SCHEMA = {"date": pl.Date, "store_id": pl.Utf8, "item_id": pl.Utf8,
                "units_sold": pl.Int64, "price": pl.Float64, "on_promo": pl.Int8,
                "open": pl.Int8}
# A plan delivery; a null means "the plan says nothing about this" (an empty CSV field).
PLAN_SCHEMA = {"date": pl.Date, "store_id": pl.Utf8, "item_id": pl.Utf8,
               "on_promo": pl.Int8, "price": pl.Float64, "open": pl.Int8}
PLAN_WEEKS = 6  # a Monday delivery plans the next six weeks: a 28-day horizon plus slack
_LATE_SHARE = 0.06  # of promotions, planned only in the last one or two deliveries before them
_CANCEL_SHARE = 0.05  # planned, then cancelled, as a share of the promotions that run
_CLOSING_SHARE = {"rural": 0.6, "suburban": 0.2, "urban": 0.2}  # stores closed on holidays
# An item's popularity wanders (a trend, a recipe gone viral, a rival's product out of stock):
# per item a weekly log-level (sd `WorldConfig.popularity_wander`), the weighted sum of its last
# _LEVEL_WEEKS weekly shocks (an AR(1) with weekly correlation _LEVEL_RHO, truncated). It moves
# the item in every store together, so the item's recent sales across stores tell a forecaster
# where it stands now, as in real sales. (A wander per store would also move each store's
# price-shock weeks, hiding the elasticity a model learns from them; tests/model/
# test_behaviour.py measures that.)
_LEVEL_RHO, _LEVEL_WEEKS = 0.8, 12
SCENARIO_KINDS = ("level_shift", "price_shock", "promo_regime", "new_store", "plan_miss")

# store type: weekly profile Mon..Sun (weekend peak shape differs by type), size range in sqm
_STORE_TYPES = {
    "urban": ((0.97, 0.96, 0.98, 1.02, 1.12, 1.08, 0.87), (800, 2500)),
    "suburban": ((0.85, 0.84, 0.88, 0.93, 1.10, 1.32, 1.08), (1500, 5000)),
    "rural": ((0.92, 0.90, 0.92, 0.96, 1.12, 1.38, 0.80), (400, 1500)),
}
_REGIONS = ("north", "south", "east", "west", "central")
# department: adjectives and pack sizes for the free-text item descriptions
_DEPARTMENTS = {
    "FOODS": (("Crunchy", "Honey", "Organic", "Classic", "Light"), ("250 g", "500 g", "1 kg")),
    "DRINKS": (("Sparkling", "Chilled", "Premium", "Zero-sugar"), ("330 ml can", "1.5 l bottle")),
    "HOUSEHOLD": (("Eco", "Ultra", "Lemon-scented", "Value"), ("500 ml", "1 l", "refill pack")),
    "GIFTS": (("Deluxe", "Festive", "Mini", "Handmade"), ("small", "large", "gift box")),
}
# category: department, base price range, yearly season (peak/trough - 1, peak day-of-year,
# sharpness), popularity multiplier, product nouns
_CATEGORIES = {
    "cereal": ("FOODS", (2.5, 6), (0.1, 20, 1), 1.0, ("oat cereal", "corn flakes", "granola")),
    "snacks": ("FOODS", (1, 4), (0.25, 300, 2), 1.3, ("potato crisps", "pretzels", "popcorn")),
    "dairy": ("FOODS", (0.8, 4), (0.1, 100, 1), 1.5, ("yogurt", "cheddar", "butter")),
    "frozen": ("FOODS", (2, 8), (0.6, 200, 2), 0.9, ("ice cream", "pizza", "fish fingers")),
    "beverages": ("DRINKS", (0.7, 3), (0.8, 196, 1.5), 1.3, ("cola", "lemonade", "iced tea")),
    "beer_wine": ("DRINKS", (4, 15), (0.6, 355, 6), 0.8, ("lager", "red wine", "cider")),
    "cleaning": ("HOUSEHOLD", (2, 9), (0.25, 90, 2), 0.7, ("dish soap", "surface spray")),
    "paper": ("HOUSEHOLD", (3, 12), (0.0, 1, 1), 0.8, ("kitchen towel", "toilet tissue")),
    "toys": ("GIFTS", (8, 40), (2.0, 350, 8), 0.4, ("building set", "plush bear", "puzzle")),
    "gifts": ("GIFTS", (5, 30), (4.0, 352, 15), 0.35, ("candle set", "chocolate box", "mug")),
}


def _easter(year: int) -> date:  # anonymous Gregorian algorithm
    a, b, c = year % 19, year // 100, year % 100
    h = (19 * a + b - b // 4 - (8 * b + 13) // 25 + 15) % 30
    wd = (32 + 2 * (b % 4) + 2 * (c // 4) - h - c % 4) % 7
    m = (a + 11 * h + 22 * wd) // 451
    return date(year, (h + wd - 7 * m + 114) // 31, (h + wd - 7 * m + 114) % 31 + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta((weekday - first.weekday()) % 7 + 7 * (n - 1))


# name, is_holiday, date(year), pre-event days, default (pre-peak, on-day) multipliers, per category
_EVENTS = (
    ("New Year's Day", 1, lambda y: date(y, 1, 1), 0, (1.0, 0.6), {}),
    ("Easter Sunday", 1, _easter, 3, (1.15, 0.5), {"dairy": (1.3, 0.5), "gifts": (1.6, 0.5)}),
    ("Summer Festival", 0, lambda y: _nth_weekday(y, 7, 5, 2), 2, (1.05, 1.2),
     {"beverages": (1.2, 1.7), "beer_wine": (1.3, 1.8)}),
    ("Halloween", 0, lambda y: date(y, 10, 31), 5, (1.05, 1.1), {"snacks": (1.5, 1.8)}),
    ("Black Friday", 0, lambda y: _nth_weekday(y, 11, 3, 4) + timedelta(1), 0, (1.0, 1.4),
     {"toys": (1.0, 2.5), "gifts": (1.0, 2.2), "cleaning": (1.0, 1.6)}),
    ("Christmas Eve", 0, lambda y: date(y, 12, 24), 10, (1.3, 1.2),
     {"toys": (2.5, 1.5), "gifts": (2.8, 1.6), "beer_wine": (1.6, 1.8)}),
    ("Christmas Day", 1, lambda y: date(y, 12, 25), 0, (1.0, 0.15), {}),
    ("New Year's Eve", 0, lambda y: date(y, 12, 31), 1, (1.1, 1.25),
     {"beer_wine": (1.5, 2.2), "snacks": (1.3, 1.5)}),
)


@dataclass(frozen=True)
class Scenario:
    kind: Literal["level_shift", "price_shock", "promo_regime", "new_store", "plan_miss"]
    start: date
    # demand / price / promo-probability multiplier; new_store ignores it; for plan_miss the
    # share (0..1) of the promotions starting from `start` that no delivery from then on plans
    magnitude: float = 1.3
    stores: tuple[str, ...] = ()  # empty = all stores; for new_store: the new store id(s)


def check_scenario(sc: Scenario) -> None:
    if sc.kind not in SCENARIO_KINDS:
        raise ValueError(f"unknown scenario kind {sc.kind!r}")
    if sc.kind == "plan_miss" and not 0 <= sc.magnitude <= 1:
        raise ValueError(f"plan_miss takes a share in [0, 1] (e.g. plan_miss:0.5), "
                         f"got {sc.magnitude}")


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 7
    n_stores: int = 20
    n_items: int = 100
    start_date: date = date(2024, 1, 1)
    scenarios: tuple[Scenario, ...] = ()
    popularity_wander: float = 0.2  # sd of each item's weekly log-level (0: none)


def _age_ramp(days: np.ndarray) -> np.ndarray:
    # New stores/items start at half their level and converge (rational, not exp: see module doc).
    return 1.0 - 15.0 / (np.maximum(days, 0) + 30.0)


def _atomic_write(df: pl.DataFrame, path: Path, fmt: str) -> None:
    # Hidden temp name in the same folder: os.replace is then atomic and globs never match it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if fmt == "parquet":
        df.write_parquet(tmp)
    else:
        df.write_csv(tmp)
    os.replace(tmp, path)


class World:
    """Static attributes (``stores``, ``items``) are built eagerly; daily sales lazily per call."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        for sc in config.scenarios:
            check_scenario(sc)
        self._known: dict[tuple[Scenario, ...], World] = {}
        self._listings: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # delivery -> listed
        self._o_start, self._cats = config.start_date.toordinal(), list(_CATEGORIES)
        self._build_items()
        self._build_stores()
        weekly = np.array([p for p, _ in _STORE_TYPES.values()])
        self._weekly = weekly / weekly.mean(axis=1, keepdims=True)
        theta = 2 * np.pi * (np.arange(366)[:, None] - np.array(
            [_CATEGORIES[c][2][1] for c in self._cats])) / 365.25
        amp, sharp = (np.array([_CATEGORIES[c][2][i] for c in self._cats]) for i in (0, 2))
        season = 1 + amp * np.exp(sharp * (np.cos(theta) - 1))
        self._season = season / season[:365].mean(axis=0)
        self._event_mult = [  # per event: (pre-peak, on-day) multiplier per category
            np.array([ev[5].get(c, ev[4]) for c in self._cats]).T for ev in _EVENTS]
        self._shock_el = {  # price_shock reaches demand through each item's elasticity
            i: sc.magnitude ** self._elast for i, sc in enumerate(config.scenarios)
            if sc.kind == "price_shock"}

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, *key])

    def _build_items(self) -> None:
        n, o0, rng = self.config.n_items, self._o_start, self._rng(_ITEMS)
        spec = [_CATEGORIES[c] for c in self._cats]
        cat = rng.integers(0, len(spec), n)
        lo, hi = np.array([s[1] for s in spec], dtype=float).T
        price = np.maximum(0.49, np.round(rng.uniform(lo[cat], hi[cat]), 1) - 0.01)
        slow = np.zeros(n, bool)
        slow[rng.permutation(n)[: round(0.2 * n)]] = True  # intermittent slow movers
        pop_mult = np.array([s[3] for s in spec])[cat]
        self._pop = np.where(slow, rng.uniform(0.05, 0.6, n),
                             rng.lognormal(np.log(9.0), 0.9, n) * pop_mult)
        launch = o0 - rng.integers(30, 3000, n)
        late = rng.permutation(n)[: round(0.12 * n)]
        launch[late] = o0 + rng.integers(14, 540, len(late))
        retire = np.full(n, 10**7)
        ret = rng.permutation(n)[: round(0.08 * n)]
        retire[ret] = np.maximum(o0 + rng.integers(150, 700, len(ret)), launch[ret] + 90)
        self._elast = rng.uniform(-2.5, -0.5, n)
        self._promo_p = np.where(rng.random(n) < 0.25, 0.0, rng.uniform(0.05, 0.3, n))
        self._disc = rng.uniform(0.1, 0.35, n)
        self._promo_mult = (1 - self._disc) ** self._elast * rng.uniform(1.1, 1.5, n)
        self._dip = rng.uniform(0.7, 0.9, n)  # pantry loading: demand dips after a promo
        self._disp = np.where(slow, rng.uniform(0.5, 1.5, n), rng.uniform(2, 12, n))
        desc = []
        for k, (a, b, c) in zip(cat, rng.integers(0, 1000, (n, 3)), strict=True):
            (adjs, packs), nouns = _DEPARTMENTS[spec[k][0]], spec[k][4]
            desc.append(f"{adjs[a % len(adjs)]} {nouns[b % len(nouns)]}, {packs[c % len(packs)]}")
        self._cat, self._launch, self._retire, self._price = cat, launch, retire, price
        w = max(4, len(str(n)))
        self.items = pl.DataFrame({
            "item_id": [f"I{i:0{w}d}" for i in range(1, n + 1)],
            "category": [self._cats[k] for k in cat],
            "department": [spec[k][0] for k in cat],
            "base_price": price, "description": desc,
            "launch_date": pl.Series(launch - _EPOCH, dtype=pl.Int32).cast(pl.Date),
            "retire_date": pl.Series([int(r) - _EPOCH if r < 10**7 else None for r in retire],
                                     dtype=pl.Int32).cast(pl.Date),
        })

    def _draw_stores(self, rng: np.random.Generator, n: int) -> list[np.ndarray]:
        kind = rng.integers(0, len(_STORE_TYPES), n)
        lo, hi = np.array([r for _, r in _STORE_TYPES.values()]).T
        return [kind, rng.integers(0, len(_REGIONS), n), rng.integers(lo[kind], hi[kind] + 1),
                self._o_start - rng.integers(365, 15 * 365, n), rng.normal(0.03, 0.06, n),
                rng.random((n, self.config.n_items)) < 0.25]

    def _build_stores(self) -> None:
        n = self.config.n_stores
        w = max(3, len(str(n)))
        ids = [f"S{i:0{w}d}" for i in range(1, n + 1)]
        cols = self._draw_stores(self._rng(_STORES), n)
        for sc in (s for s in self.config.scenarios if s.kind == "new_store"):
            for sid in sc.stores or (f"S{len(ids) + 1:0{w}d}",):
                if sid in ids:
                    raise ValueError(f"new_store id {sid!r} already exists")
                key = zlib.crc32(sid.encode())
                new = self._draw_stores(self._rng(_STORES, key), 1)
                new[3] = np.array([sc.start.toordinal()])
                cols = [np.concatenate([a, b]) for a, b in zip(cols, new, strict=True)]
                ids.append(sid)
        self._type, region, size, self._open, self._slope, fragile = cols
        self._base = ((size / 2000.0) ** 0.5)[:, None] * self._pop[None, :]
        self._so_p = np.where(fragile, 0.008, 0.0005)  # stock-out run start probability
        self._store_ids, self._keys = ids, [zlib.crc32(i.encode()) for i in ids]
        # closes on holidays: a draw per store id, so an appended (new) store changes no other
        share = [_CLOSING_SHARE[t] for t in _STORE_TYPES]
        self._closes = np.array([self._rng(_CLOSING, key).random() < share[t]
                                 for key, t in zip(self._keys, self._type, strict=True)], bool)
        self._order = np.argsort(np.array(ids), kind="stable")  # internal -> sorted store axis
        self._sorted_ids = pl.Series([ids[i] for i in self._order])
        unknown = {i for sc in self.config.scenarios for i in sc.stores} - set(ids)
        if unknown:  # a typo would otherwise silently leave the scenario without effect
            raise ValueError(f"scenario stores not in the world: {sorted(unknown)}")
        self.stores = pl.DataFrame({
            "store_id": ids, "store_type": [list(_STORE_TYPES)[k] for k in self._type],
            "region": [_REGIONS[k] for k in region], "size_sqm": size.astype(np.int64),
            "open_date": pl.Series(self._open - _EPOCH, dtype=pl.Int32).cast(pl.Date),
        }).sort("store_id")

    def _store_mask(self, sc: Scenario) -> np.ndarray:
        return np.isin(self._store_ids, sc.stores or self._store_ids)

    def _scenario_factor(self, kind: str, ords: np.ndarray) -> np.ndarray:
        f = np.ones((len(ords), len(self._store_ids)))
        for sc in (s for s in self.config.scenarios if s.kind == kind):
            on = (ords[:, None] >= sc.start.toordinal()) & self._store_mask(sc)[None, :]
            f = f * np.where(on, sc.magnitude, 1.0)
        return f

    def _events(self, o0: int, o1: int) -> list[tuple[int, int]]:
        """(ordinal, event index) for every event whose year can touch [o0, o1)."""
        years = range(date.fromordinal(o0).year - 1, date.fromordinal(max(o0, o1 - 1)).year + 2)
        return [(ev[2](y).toordinal(), k) for y in years for k, ev in enumerate(_EVENTS)]

    def calendar(self, start: date, end: date) -> pl.DataFrame:
        o0, o1 = start.toordinal(), max(start.toordinal(), end.toordinal())
        on_day = dict(self._events(o0, o1))
        ev = [_EVENTS[on_day[o]][:2] if o in on_day else (None, 0) for o in range(o0, o1)]
        return pl.DataFrame(
            {"date": np.arange(o0, o1) - _EPOCH, "event_name": [e[0] for e in ev],
             "is_holiday": [e[1] for e in ev]},
            schema={"date": pl.Int32, "event_name": pl.Utf8, "is_holiday": pl.Int8},
        ).with_columns(pl.col("date").cast(pl.Date))

    def _event_effect(self, o0: int, o1: int) -> np.ndarray:
        eff = np.ones((o1 - o0, len(self._cats)))
        for o, k in self._events(o0, o1):
            pre_days, (pre, on_day) = _EVENTS[k][3], self._event_mult[k]
            for lag in range(pre_days + 1):  # uplift ramps towards the event, then the day itself
                if o0 <= o - lag < o1:
                    ramp = (pre_days - lag + 1) / pre_days if lag else 0.0
                    eff[o - lag - o0] *= on_day if lag == 0 else 1 + (pre - 1) * ramp
        return eff

    def _promo_draws(self, w0: int, w1: int) -> tuple[np.ndarray, ...]:
        """Per Monday-week w0..w1 (week = (ordinal - 1) // 7) and item: the uniform that decides
        whether a 7-day promo starts that week, its start offset and start ordinal (weeks,
        items), and the threshold the uniform must stay below (weeks, stores or 1, items)."""
        n = self.config.n_items
        u, off = np.empty((w1 - w0 + 1, n)), np.empty((w1 - w0 + 1, n), np.int64)
        for j in range(len(u)):
            rng = self._rng(int(w0 + j) * 7 + 1, _PROMO)
            u[j], off[j] = rng.random(n), rng.integers(0, 7, n)
        thresh = np.broadcast_to(self._promo_p, (len(u), 1, n))
        starts = (np.arange(w0, w1 + 1) * 7 + 1)[:, None] + off
        for sc in (s for s in self.config.scenarios if s.kind == "promo_regime"):
            on = (starts >= sc.start.toordinal())[:, None, :] & self._store_mask(sc)[None, :, None]
            thresh = thresh * np.where(on, sc.magnitude, 1.0)
        return u, off, starts, thresh

    @staticmethod
    def _by_day(events: np.ndarray, off: np.ndarray, ords: np.ndarray, w0: int) -> np.ndarray:
        """Day flags (days, stores or 1, items) from per-week flags (weeks from w0, stores or 1,
        items) of 7-day promos: one starting on offset `off` of its week runs from there to the
        day before that offset in the next week."""
        wi, dow = (ords - 1) // 7 - w0, ((ords - 1) % 7)[:, None]
        return (events[wi] & (off[wi] <= dow)[:, None, :]) | (
            events[wi - 1] & (off[wi - 1] > dow)[:, None, :])

    def _promo(self, o0: int, o1: int) -> tuple[np.ndarray, np.ndarray]:
        """Promo and post-promo-dip flags, shape (days, stores or 1, items)."""
        # Each (item, Monday-week) draws whether a 7-day promo starts that week and on which day,
        # so a day's flag needs only its own and the previous week's draws.
        ords = np.arange(o0 - _LOOKBACK, o1)
        w0 = (ords[0] - 1) // 7 - 1
        u, off, _, thresh = self._promo_draws(w0, (ords[-1] - 1) // 7)
        flag = self._by_day(u[:, None, :] < thresh, off, ords, w0)
        promo = flag[_LOOKBACK:]
        recent = flag[_LOOKBACK - 1:-1] | flag[_LOOKBACK - 2:-2] | flag[:-_LOOKBACK]
        return promo, ~promo & recent

    def _drift(self, ords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Price drift and its demand effect per (day, item); prices are re-set every 4 weeks."""
        blocks, inv = np.unique((ords - 1) // 28, return_inverse=True)
        rows = [np.exp(self._rng(int(b) * 28 + 1, _PRICE).normal(0, 0.03, self.config.n_items))
                for b in blocks]
        return np.stack(rows)[inv], np.stack([r**self._elast for r in rows])[inv]

    def _expected(self, o0: int, o1: int, known_week: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean demand, shelf price and promo flag per (day, store, item) for days [o0, o1);
        given `known_week`, the popularity as expected from the shocks up to that week."""
        ords = np.arange(o0, o1)
        t_years = (ords - self._o_start) / 365.25
        ds = self._weekly[self._type][:, (ords - 1) % 7].T  # (days, stores)
        ds = ds * np.maximum(0.3, 1 + self._slope[None, :] * t_years[:, None])
        ds = ds * _age_ramp(ords[:, None] - self._open[None, :])
        ds = ds * self._scenario_factor("level_shift", ords)
        day64 = (ords - _EPOCH).astype("datetime64[D]")
        doy = (day64 - day64.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64)
        di = self._season[doy][:, self._cat] * self._event_effect(o0, o1)[:, self._cat]
        di = di * _age_ramp(ords[:, None] - self._launch[None, :])  # (days, items)
        promo, dip = self._promo(o0, o1)
        drift, drift_el = self._drift(ords)
        lam = (ds[:, :, None] * di[:, None, :]) * self._base[None]
        lam = lam * np.where(promo, self._promo_mult, np.where(dip, self._dip, 1.0))
        lam = lam * drift_el[:, None, :] * self._local_level(ords, known_week)
        for i, row in self._shock_el.items():
            sc = self.config.scenarios[i]
            on = (ords[:, None] >= sc.start.toordinal()) & self._store_mask(sc)[None, :]
            lam = lam * np.where(on[:, :, None], row, 1.0)
        price = self._shelf_price(ords, promo, drift)
        return lam, price, np.broadcast_to(promo, lam.shape)

    def _local_level(self, ords: np.ndarray, known_week: int | None = None) -> np.ndarray:
        """(days, 1, items): each item's popularity (mean 1), constant within a Monday-week.
        Given `known_week`, its expectation from the shocks up to that week: later shocks are
        unknown, so they add their variance (a log-normal's mean) instead of their draw."""
        weeks, inv = np.unique((ords - 1) // 7, return_inverse=True)
        if not len(weeks):
            return np.ones((0, 1, self.config.n_items))
        first = int(weeks[0]) - _LEVEL_WEEKS + 1
        shocks = np.stack([self._rng(w * 7 + 1, _LEVEL).standard_normal(self.config.n_items)
                           for w in range(first, int(weeks[-1]) + 1)])
        sd = self.config.popularity_wander
        weights = sd * np.sqrt(1 - _LEVEL_RHO**2) * _LEVEL_RHO ** np.arange(_LEVEL_WEEKS)
        if known_week is not None:
            shocks[first + np.arange(len(shocks)) > known_week] = 0.0
        lags = np.arange(_LEVEL_WEEKS)
        logs = np.stack([weights @ shocks[w - first - lags] for w in weeks.astype(int)])
        unknown = np.array([0.0 if known_week is None else
                            float(weights[w - lags > known_week] @ weights[w - lags > known_week])
                            for w in weeks.astype(int)])
        return np.exp(logs + (unknown[:, None] - sd**2) / 2)[inv][:, None, :]

    def _shelf_price(self, ords: np.ndarray, promo: np.ndarray | bool,
                     drift: np.ndarray) -> np.ndarray:
        """Price per (day, store, item): base price, promo discount, 4-week drift, shocks."""
        price = self._price * np.where(promo, 1 - self._disc, 1.0) * drift[:, None, :]
        price = price * self._scenario_factor("price_shock", ords)[:, :, None]
        return np.maximum(np.round(price, 2), 0.01)

    def _active(self, ords: np.ndarray) -> np.ndarray:
        """Series that exist per day (days, stores, items): item launched, not retired, store
        open."""
        active = ((ords[:, None] >= self._launch) & (ords[:, None] <= self._retire))[:, None, :]
        return active & (ords[:, None] >= self._open)[:, :, None]

    def _closed(self, ords: np.ndarray) -> np.ndarray:
        """(days, stores): the store is closed that day (a public holiday, a closing store)."""
        holiday = np.zeros(len(ords), bool)
        if len(ords):
            for o, k in self._events(int(ords[0]), int(ords[-1]) + 1):
                if _EVENTS[k][1] and ords[0] <= o <= ords[-1]:
                    holiday[o - ords[0]] = True
        return holiday[:, None] & self._closes[None, :]

    def _cells(self, ords: np.ndarray, mask: np.ndarray, **values: np.ndarray) -> pl.DataFrame:
        """One row per true cell of `mask` (days, stores, items), sorted by date, store_id,
        item_id, with the same cells of `values` (each broadcast to the mask's shape)."""
        n_stores, n_items = mask.shape[1:]
        full = {k: np.broadcast_to(v, mask.shape) for k, v in values.items()}
        if not np.array_equal(self._order, np.arange(n_stores)):  # rows sort by store_id
            mask = mask[:, self._order]
            full = {k: v[:, self._order] for k, v in full.items()}
        idx = np.flatnonzero(mask)
        day, series = np.divmod(idx, n_stores * n_items)
        store, item = np.divmod(series, n_items)
        return pl.DataFrame({
            "date": pl.Series(ords[day] - _EPOCH, dtype=pl.Int32).cast(pl.Date),
            "store_id": self._sorted_ids.gather(store),
            "item_id": self.items["item_id"].gather(item),
            **{k: v.reshape(-1)[idx] for k, v in full.items()},
        })

    def _draw_units(self, o0: int, lam: np.ndarray) -> np.ndarray:
        """Negative-binomial units with stock-outs; o0 is a Monday, lam spans whole weeks."""
        # Seeds are per Monday-week, plus store for demand: Poisson consumes a lam-dependent
        # number of variates, so a stream shared across stores would let a scenario in one store
        # reshuffle all the others. Store-major stock-out uniforms keep a stable prefix when a
        # new store is appended; the extra leading week feeds runs that cross a Monday.
        n_days, n_stores, n_items = lam.shape
        units, unif = np.empty(lam.shape, np.int64), np.empty((n_days + 7, n_stores, n_items))
        for w in range(o0 - 7, o0 + n_days, 7):
            r = w - o0 + 7
            week = self._rng(w, _STOCKOUT).random((n_stores, 7, n_items))
            unif[r:r + 7] = week.transpose(1, 0, 2)
            for s, key in enumerate(self._keys if w >= o0 else ()):
                rng = self._rng(w, _DEMAND, key)
                noise = rng.standard_gamma(self._disp, (7, n_items)) / self._disp
                units[r - 7:r, s] = rng.poisson(lam[r - 7:r, s] * noise)  # gamma-Poisson = NB
        for lag in range(_LOOKBACK + 1):  # a run started `lag` days ago lasts 1..4 days
            u = unif[7 - lag: 7 - lag + n_days]
            units[(u < self._so_p) & (u * (_LOOKBACK + 1) >= lag * self._so_p)] = 0
        return units

    def _chunk(self, o0: int, o1: int, keep: tuple[int, int]) -> pl.DataFrame:
        """Rows for the days in [keep) out of the whole Monday-weeks [o0, o1)."""
        lam, price, promo = self._expected(o0, o1)
        units = self._draw_units(o0, lam)
        ords = np.arange(o0, o1)
        closed = self._closed(ords)[:, :, None]
        units = np.where(closed, 0, units)  # drawn as if open: closing changes no other row
        active = self._active(ords) & ((ords >= keep[0]) & (ords < keep[1]))[:, None, None]
        return self._cells(ords, active, units_sold=units, price=price,
                           on_promo=promo.astype(np.int8), open=(~closed).astype(np.int8),
                           ).cast(SALES_SCHEMA)  # type: ignore[arg-type]

    def _step(self) -> int:
        """Days per chunk: whole weeks, about _CHUNK_CELLS cells (days x series)."""
        return 7 * max(1, _CHUNK_CELLS // (7 * len(self._store_ids) * self.config.n_items))

    def sales(self, start: date, end: date) -> pl.DataFrame:
        frames = self._by_chunk(start, end, self._chunk)
        return pl.concat(frames) if frames else pl.DataFrame(schema=SALES_SCHEMA)

    def expected(self, start: date, end: date, known_at: date | None = None) -> pl.DataFrame:
        """The mean of every sales row's units (date, store_id, item_id, expected): the demand
        rate with the chance of a stock-out taken off, 0 on a closed day. What an oracle
        forecaster knows, so an evaluation can say how far a model is from the noise floor.

        `known_at`: the mean as expected on that day (a forecast origin), the popularity's
        later weekly shocks unknown: the floor for a forecaster that knows the world's rules
        but not its future draws."""
        week = None if known_at is None else (known_at.toordinal() - 1) // 7
        frames = self._by_chunk(start, end, partial(self._expected_chunk, known_week=week))
        return pl.concat(frames) if frames else pl.DataFrame(
            schema={**{k: SALES_SCHEMA[k] for k in ("date", "store_id", "item_id")},
                    "expected": pl.Float64})

    def _by_chunk(self, start: date, end: date,
                  chunk: Callable[[int, int, tuple[int, int]], pl.DataFrame]
                  ) -> list[pl.DataFrame]:
        o0, o1 = start.toordinal(), end.toordinal()
        first, step = o0 - (o0 - 1) % 7, self._step()  # Monday on or before start
        return [chunk(a, a + min(step, -(-(o1 - a) // 7) * 7), (o0, o1))
                for a in range(first, o1, step)]

    def _expected_chunk(self, o0: int, o1: int, keep: tuple[int, int],
                        known_week: int | None = None) -> pl.DataFrame:
        lam = self._expected(o0, o1, known_week)[0]
        ords = np.arange(o0, o1)
        # a day is out of stock if a run started on it or on one of the _LOOKBACK days before
        in_stock = np.prod([1 - self._so_p * (1 - lag / (_LOOKBACK + 1))
                            for lag in range(_LOOKBACK + 1)], axis=0)
        mean = np.where(self._closed(ords)[:, :, None], 0.0, lam * in_stock)
        active = self._active(ords) & ((ords >= keep[0]) & (ords < keep[1]))[:, None, None]
        return self._cells(ords, active, expected=mean)

    # --- the plan ------------------------------------------------------------------------------

    def _known_at(self, o: int) -> World:
        """This world as known at the end of day `o`: only the scenarios started by then."""
        known = tuple(sc for sc in self.config.scenarios if sc.start.toordinal() <= o)
        if known == self.config.scenarios:
            return self
        if known not in self._known:
            self._known[known] = World(replace(self.config, scenarios=known))
        return self._known[known]

    def _listed(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """The promotion days delivery `d` plans, as this world knows them (call it on
        ``_known_at(d)``): a flag and the promotion price per (day d+1.., store, item)."""
        if d in self._listings:
            return self._listings[d]
        ords = np.arange(d + 1, d + 1 + 7 * PLAN_WEEKS)
        w0, w1 = (ords[0] - 1) // 7 - 1, (ords[-1] - 1) // 7
        u, off, starts, thresh = self._promo_draws(w0, w1)
        r = np.stack([self._rng(w * 7 + 1, _PLAN).random((3, self.config.n_items))
                      for w in range(int(w0), int(w1) + 1)])  # (weeks, 3, items)
        # promotions that run; a late one is planned only from 1 or 2 weeks before its start
        lead = np.where(r[:, 0] < _LATE_SHARE, np.where(r[:, 1] < 0.5, 7, 14), 10**6)
        planned = (u[:, None, :] < thresh) & (d >= starts - lead)[:, None, :]
        for sc in (s for s in self.config.scenarios if s.kind == "plan_miss"):
            missed = (starts >= sc.start.toordinal()) & (r[:, 2] < sc.magnitude)
            planned = planned & ~(missed[:, None, :] & self._store_mask(sc)[None, :, None])
        # promotions that do not run (just above the threshold): planned until cancelled 1 to 3
        # weeks before their start
        phantom = (u[:, None, :] >= thresh) & (u[:, None, :] < thresh * (1 + _CANCEL_SHARE))
        cancel = 7 * (1 + np.minimum((r[:, 1] * 3).astype(np.int64), 2))
        phantom = phantom & (d < starts - cancel)[:, None, :]
        listed = self._by_day(planned | phantom, off, ords, w0) & self._active(ords)
        price = self._shelf_price(ords, True, self._drift(ords)[0])
        if len(self._listings) >= 2 * PLAN_WEEKS:  # deliveries come in order: keep the last few
            del self._listings[next(iter(self._listings))]
        self._listings[d] = listed, price
        return listed, price

    def plan(self, delivered: date) -> pl.DataFrame:
        """The plan delivered at the end of `delivered` (a Monday) about the next six weeks
        (PLAN_SCHEMA; nulls say nothing): promotion days with on_promo 1 and their price, on_promo
        0 where an earlier delivery planned a promotion this one does not, and store-level rows
        (item_id null) with open 0 on closed days."""
        d = delivered.toordinal()
        if (d - 1) % 7:
            raise ValueError(f"plan deliveries are on Mondays; {delivered} is a "
                             f"{delivered.strftime('%A')}")
        known = self._known_at(d)
        listed, price = known._listed(d)
        n_days, pos = 7 * PLAN_WEEKS, {s: i for i, s in enumerate(known._store_ids)}
        earlier = np.zeros_like(listed)  # planned by a delivery of the last weeks
        for p in range(d - n_days + 7, d, 7):  # those that reach past d
            before = self._known_at(p)
            flags, _ = before._listed(p)
            stores = [pos[s] for s in before._store_ids]  # scenarios only add stores
            earlier[: p + n_days - d, stores] |= flags[d - p:]
        dropped = earlier & ~listed
        # promotion cells (day, store, item), then store-level closures; sorted as one
        day, store, item = np.nonzero(listed | dropped)
        on_promo = listed[day, store, item]
        cost = np.where(on_promo, price[day, store, item], np.nan)
        ords = np.arange(d + 1, d + 1 + n_days)
        closed = known._closed(ords) & (ords[:, None] >= known._open[None, :])
        c_day, c_store = np.nonzero(closed)
        rank = np.empty(len(known._order), np.int64)  # internal store -> position by store_id
        rank[known._order] = np.arange(len(known._order))
        days = np.concatenate([day, c_day])
        stores = rank[np.concatenate([store, c_store])]
        items = np.concatenate([item, np.full(len(c_day), -1)])
        o = np.lexsort((items, stores, days))
        level = pl.Series(items[o] < 0)  # a store-level row: no item, no promotion, not open
        pad = np.zeros(len(c_day))
        cells = pl.DataFrame({
            "date": pl.Series(ords[days[o]] - _EPOCH, dtype=pl.Int32).cast(pl.Date),
            "store_id": known._sorted_ids.gather(stores[o]),
            "item_id": known.items["item_id"].gather(np.maximum(items[o], 0)).set(level, None),
            "on_promo": pl.Series(np.concatenate([on_promo, pad])[o]).set(level, None),
            "price": pl.Series(np.concatenate([cost, pad + np.nan])[o]).fill_nan(None),
            "open": pl.Series(np.zeros(len(o))).set(~level, None),
        }).cast(PLAN_SCHEMA)  # type: ignore[arg-type]
        return pl.concat([cells, known._price_plan(ords)]).sort(
            "date", "store_id", "item_id", nulls_last=True)

    def _price_plan(self, ords: np.ndarray) -> pl.DataFrame:
        """The regular price of every item on each day (item-level rows: every store), with its
        4-week drift; a price shock is not in it (it is a surprise)."""
        regular = np.maximum(np.round(self._price * self._drift(ords)[0], 2), 0.01)
        n_days, n_items = regular.shape
        return pl.DataFrame({
            "date": pl.Series(np.repeat(ords, n_items) - _EPOCH, dtype=pl.Int32).cast(pl.Date),
            "store_id": pl.Series([None] * (n_days * n_items), dtype=pl.Utf8),
            "item_id": pl.Series(np.tile(self.items["item_id"].to_numpy(), n_days)),
            "on_promo": pl.Series([None] * (n_days * n_items), dtype=pl.Int8),
            "price": regular.reshape(-1),
            "open": pl.Series([None] * (n_days * n_items), dtype=pl.Int8),
        }).cast(PLAN_SCHEMA)  # type: ignore[arg-type]

    def write_landing(self, landing_dir: Path, start: date, end: date,
                      fmt: Literal["csv", "parquet"] = "csv") -> list[Path]:
        """Lands the days [start, end): one sales file per day and, on each Monday among them,
        that day's plan delivery (plan/plan_<day>), written just before the day's sales file.
        Returns the sales files."""
        landing_dir = Path(landing_dir)
        (landing_dir / "sales").mkdir(parents=True, exist_ok=True)
        (landing_dir / "plan").mkdir(parents=True, exist_ok=True)
        # Attributes first, so whoever reacts to a new sales file can already join them.
        cal_start = min(self.config.start_date, start)
        for name, df in (("stores", self.stores), ("items", self.items),
                         ("calendar", self.calendar(cal_start, end + timedelta(366)))):
            _atomic_write(df, landing_dir / f"{name}.csv", "csv")
        paths: list[Path] = []
        o0, o1, step = start.toordinal(), end.toordinal(), self._step()
        for a in range(o0, o1, step):  # bounded memory: one chunk of days in RAM at a time
            b = min(a + step, o1)
            df = self.sales(date.fromordinal(a), date.fromordinal(b))
            days = df["date"].to_physical().to_numpy()
            cuts = np.searchsorted(days, np.arange(a, b + 1) - _EPOCH)
            for o, lo, hi in zip(range(a, b), cuts[:-1], cuts[1:], strict=True):
                day = date.fromordinal(o)
                if (o - 1) % 7 == 0:  # a Monday: the delivery known at the end of this day
                    plan_path = landing_dir / "plan" / f"plan_{day.isoformat()}.{fmt}"
                    _atomic_write(self.plan(day), plan_path, fmt)
                path = landing_dir / "sales" / f"sales_{day.isoformat()}.{fmt}"
                _atomic_write(df.slice(int(lo), int(hi - lo)), path, fmt)
                paths.append(path)
        return paths
