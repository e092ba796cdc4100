"""Synthetic files in the shapes of two public retail datasets, for the accuracy benchmark.

The same columns, value styles and quirks as `tests/data/test_real_shapes.py` writes (Rossmann:
daily store sales, closed days and gaps, newest day first; Walmart: weekly store x department
sales on Fridays, negative weeks, TRUE/FALSE flags, missing weeks), but at benchmark scale and
with the structure that decides accuracy on the real data:

- more than two years, so that yearly seasonality and the moving holidays (Easter, Whitsun,
  Thanksgiving, the Christmas week's position among the Fridays) matter;
- levels that persist and drift (a slow AR(1) on each series' log level, store trends, a
  competitor opening that lowers a store's level for good), so recent sales carry information
  that a year-old lag does not;
- promotions, holidays and closed days known in advance (the YAML's covariates and plan).

Each writer takes the data folder and a size and returns counts. The example YAML
(`examples/datasets/*.yaml`) is copied next to the folder unchanged, as a user would.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

# --- shared -----------------------------------------------------------------------------------


def _days(start: dt.date, end: dt.date, step: int = 1) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(0, (end - start).days + 1, step)]


def _easter(year: int) -> dt.date:  # anonymous Gregorian algorithm
    a, b, c = year % 19, year // 100, year % 100
    h = (19 * a + b - b // 4 - (8 * b + 13) // 25 + 15) % 30
    wd = (32 + 2 * (b % 4) + 2 * (c // 4) - h - c % 4) % 7
    m = (a + 11 * h + 22 * wd) // 451
    return dt.date(year, (h + wd - 7 * m + 114) // 31, (h + wd - 7 * m + 114) % 31 + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta((weekday - first.weekday()) % 7 + 7 * (n - 1))


def _ar1_log_level(rng: np.random.Generator, n_series: int, n_steps: int, phi: float,
                   sd: float) -> np.ndarray:
    """(n_steps, n_series) stationary AR(1) paths: how far each series' level wanders."""
    out = np.empty((n_steps, n_series))
    out[0] = rng.normal(0.0, sd / np.sqrt(1 - phi ** 2), n_series)
    shocks = rng.normal(0.0, sd, (n_steps, n_series))
    for t in range(1, n_steps):
        out[t] = phi * out[t - 1] + shocks[t]
    return out


# --- Rossmann-shaped: daily, store level ------------------------------------------------------


@dataclass(frozen=True)
class StoreDailySize:
    stores: int = 120
    start: dt.date = dt.date(2013, 1, 1)
    end: dt.date = dt.date(2015, 7, 31)  # the YAML's end_date
    plan_days: int = 42
    seed: int = 11


def _german_holidays(year: int) -> dict[dt.date, str]:
    """StateHoliday codes as Rossmann's file has them: a public, b Easter, c Christmas."""
    easter = _easter(year)
    days = {dt.date(year, 1, 1): "a", dt.date(year, 5, 1): "a", dt.date(year, 10, 3): "a",
            easter - dt.timedelta(2): "b", easter + dt.timedelta(1): "b",
            easter + dt.timedelta(39): "a", easter + dt.timedelta(50): "a",
            dt.date(year, 12, 25): "c", dt.date(year, 12, 26): "c"}
    return days


def _school_holiday(day: dt.date, state: int) -> int:
    """Summer holidays move by state (six weeks from a state's start), plus Christmas and Easter
    weeks."""
    summer = dt.date(day.year, 6, 22) + dt.timedelta(days=7 * state)
    easter = _easter(day.year)
    return int(summer <= day < summer + dt.timedelta(days=42)
               or day >= dt.date(day.year, 12, 22) or day <= dt.date(day.year, 1, 5)
               or easter - dt.timedelta(days=7) <= day <= easter + dt.timedelta(days=7))


def _promo(day: dt.date) -> int:
    """Rossmann's Promo: Monday to Friday, every other week, the same for every store."""
    return int(day.weekday() < 5 and day.isocalendar().week % 2 == 0)


def _open(day: dt.date, holiday: str, store_type: str) -> int:
    # type b stores open on Sundays and on most holidays, as the real ones do
    if store_type == "b":
        return int(holiday in ("0", "a"))
    return int(day.weekday() != 6 and holiday == "0")


def _yearly_daily(day: dt.date) -> float:
    """Christmas ramp, a January dip, a mild summer lull; the days before Easter sell more."""
    doy = day.timetuple().tm_yday
    factor = 1.0 + 0.06 * np.cos(2 * np.pi * (doy - 20) / 365.25 + np.pi)  # trough in Jan
    christmas = dt.date(day.year, 12, 24)
    if christmas - dt.timedelta(days=21) <= day <= christmas:
        factor *= 1.15 + 0.45 * (1 - (christmas - day).days / 21)
    if dt.date(day.year, 12, 27) <= day <= dt.date(day.year, 12, 31):
        factor *= 1.25
    easter = _easter(day.year)
    if easter - dt.timedelta(days=6) <= day < easter - dt.timedelta(days=2):
        factor *= 1.15
    return float(factor)


def write_store_daily(data: Path, size: StoreDailySize = StoreDailySize()) -> dict[str, int]:
    """data/train.csv, data/store.csv and data/test.csv as Rossmann's, for
    examples/datasets/store_daily.yaml."""
    rng = np.random.default_rng(size.seed)
    n = size.stores
    days = _days(size.start, size.end)
    store_type = rng.choice(["a", "b", "c", "d"], n, p=[0.54, 0.02, 0.13, 0.31])
    store_type[rng.integers(n)] = "b"
    assortment = np.where(store_type == "b", "b", rng.choice(["a", "c"], n, p=[0.53, 0.47]))
    state = rng.integers(0, 6, n)
    level = np.exp(rng.normal(np.log(5800), 0.42, n)) * np.where(store_type == "b", 1.8, 1.0)
    trend = rng.normal(0.0, 0.06, n)  # per year, on the log level
    promo_lift = rng.uniform(1.15, 1.55, n)
    weekly = np.array([1.18, 1.03, 0.98, 0.97, 1.02, 0.86, 0.75])  # Sunday only for type b
    weekly_store = weekly[None, :] * np.exp(rng.normal(0, 0.04, (n, 7)))
    # a competitor opens during the data for a quarter of the stores: a lasting drop
    competition_day = np.full(n, None, dtype=object)
    opens = rng.random(n) < 0.25
    for i in np.flatnonzero(opens):
        competition_day[i] = size.start + dt.timedelta(days=int(rng.integers(60, len(days) - 20)))
    competition_drop = rng.uniform(0.72, 0.92, n)
    wander = _ar1_log_level(rng, n, len(days), phi=0.985, sd=0.012)
    noise = rng.normal(0.0, 0.075, (len(days), n))
    # refurbishments: a tenth of the stores report nothing for half a year (as 180 real ones)
    refurbished = rng.random(n) < 0.1
    gap = (dt.date(2014, 7, 1), dt.date(2014, 12, 31))
    missing_day = (int(rng.integers(n)), size.start)  # one store misses a day (as store 988)
    holidays = {**_german_holidays(size.start.year), **_german_holidays(size.start.year + 1),
                **_german_holidays(size.start.year + 2)}

    rows: dict[str, list[object]] = {c: [] for c in (
        "Store", "DayOfWeek", "Date", "Sales", "Customers", "Open", "Promo", "StateHoliday",
        "SchoolHoliday")}
    for t in reversed(range(len(days))):  # Kaggle's file runs from the newest day
        day = days[t]
        holiday = holidays.get(day, "0")
        season = _yearly_daily(day)
        before_closure = holidays.get(day + dt.timedelta(1), "0") != "0" or day.weekday() == 5
        years = (day - size.start).days / 365.25
        for i in range(n):
            if (refurbished[i] and gap[0] <= day <= gap[1]) or (i, day) == missing_day:
                continue
            is_open = _open(day, holiday, store_type[i])
            promo = _promo(day) * is_open
            school = _school_holiday(day, int(state[i]))
            sales = 0
            if is_open:
                mu = (level[i] * weekly_store[i, day.weekday()] * season
                      * np.exp(trend[i] * years + wander[t, i] + noise[t, i])
                      * (promo_lift[i] if promo else 1.0) * (1.04 if school else 1.0)
                      * (1.1 if before_closure else 1.0))
                if competition_day[i] is not None and day >= competition_day[i]:
                    mu *= competition_drop[i]
                sales = int(round(mu))
            customers = int(round(sales / rng.uniform(8.5, 10.5))) if is_open else 0
            rows["Store"].append(i + 1)
            rows["DayOfWeek"].append(day.isoweekday())
            rows["Date"].append(day.isoformat())
            rows["Sales"].append(sales)
            rows["Customers"].append(customers)
            rows["Open"].append(is_open)
            rows["Promo"].append(promo)
            rows["StateHoliday"].append(holiday)
            rows["SchoolHoliday"].append(school)
    data.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_csv(data / "train.csv")

    def since(i: int, part: str) -> object:
        day = competition_day[i]
        if day is None:  # an old competitor, or none known (empty fields, as in the file)
            return None if rng.random() < 0.3 else {"month": int(rng.integers(1, 13)),
                                                     "year": int(rng.integers(2000, 2012))}[part]
        return day.month if part == "month" else day.year

    promo2 = rng.random(n) < 0.5
    pl.DataFrame({
        "Store": list(range(1, n + 1)),
        "StoreType": store_type.tolist(),
        "Assortment": assortment.tolist(),
        "CompetitionDistance": [int(x) if rng.random() > 0.01 else None
                                for x in np.round(rng.lognormal(7.5, 1.2, n), -1)],
        "CompetitionOpenSinceMonth": [since(i, "month") for i in range(n)],
        "CompetitionOpenSinceYear": [since(i, "year") for i in range(n)],
        "Promo2": promo2.astype(int).tolist(),
        "Promo2SinceWeek": [int(rng.integers(1, 50)) if p else None for p in promo2],
        "Promo2SinceYear": [int(rng.integers(2009, 2015)) if p else None for p in promo2],
        "PromoInterval": [str(rng.choice(["Jan,Apr,Jul,Oct", "Feb,May,Aug,Nov",
                                          "Mar,Jun,Sept,Dec"])) if p else None
                          for p in promo2],
    }).write_csv(data / "store.csv")

    # test.csv: Id first, the plan's days newest first, no Sales; Open empty on a few days
    plan: dict[str, list[object]] = {c: [] for c in (
        "Id", "Store", "DayOfWeek", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday")}
    ahead = _days(size.end + dt.timedelta(days=1), size.end + dt.timedelta(days=size.plan_days))
    for day in reversed(ahead):
        holiday = holidays.get(day, "0")
        for i in range(n):
            is_open = _open(day, holiday, store_type[i])
            plan["Id"].append(len(plan["Id"]) + 1)
            plan["Store"].append(i + 1)
            plan["DayOfWeek"].append(day.isoweekday())
            plan["Date"].append(day.isoformat())
            plan["Open"].append(None if i == 0 and day.weekday() == 2 else is_open)
            plan["Promo"].append(_promo(day) * is_open)
            plan["StateHoliday"].append(holiday)
            plan["SchoolHoliday"].append(_school_holiday(day, int(state[i])))
    pl.DataFrame(plan).write_csv(data / "test.csv")
    return {"rows": len(rows["Store"]), "stores": n, "days": len(days),
            "closed": sum(1 for o in rows["Open"] if o == 0), "plan_rows": len(plan["Id"])}


# --- Walmart-shaped: weekly, store x department -----------------------------------------------


@dataclass(frozen=True)
class DeptWeeklySize:
    stores: int = 30
    depts: int = 24
    start: dt.date = dt.date(2010, 2, 5)  # a Friday, as Walmart's first week
    end: dt.date = dt.date(2012, 10, 26)  # the YAML's end_date
    plan_weeks: int = 39  # Kaggle's test.csv: 2012-11-02 .. 2013-07-26
    seed: int = 5


def _walmart_holidays(year: int) -> dict[str, dt.date]:
    """The four days Walmart's IsHoliday marks, by the Friday that ends their week (Saturday to
    Friday): Super Bowl Sunday, Labor Day, Thanksgiving, Christmas."""
    def week_of(day: dt.date) -> dt.date:
        return day + dt.timedelta(days=(4 - day.weekday()) % 7)

    super_bowl = _nth_weekday(year, 2, 6, 1)  # first Sunday of February
    return {"super_bowl": week_of(super_bowl),
            "labor_day": week_of(_nth_weekday(year, 9, 0, 1)),
            "thanksgiving": week_of(_nth_weekday(year, 11, 3, 4)),
            "christmas": week_of(dt.date(year, 12, 25))}


# department profiles: how each day of the year scales its sales
_PROFILES = ("flat", "christmas", "toys", "back_to_school", "summer", "easter", "food")


def _daily_profile(kind: str, day: dt.date) -> float:
    doy = day.timetuple().tm_yday
    thanksgiving = _nth_weekday(day.year, 11, 3, 4)
    black_friday = thanksgiving + dt.timedelta(days=1)
    christmas = dt.date(day.year, 12, 25)
    to_christmas = (christmas - day).days
    easter = _easter(day.year)
    if kind == "flat":
        return 1.0 + 0.03 * np.sin(2 * np.pi * doy / 365.25)
    if kind == "food":
        bump = 1.6 if 0 <= (thanksgiving - day).days <= 3 else 1.0
        bump *= 1.35 if 0 <= to_christmas <= 3 else 1.0
        return bump * (1.0 + 0.05 * np.cos(2 * np.pi * (doy - 200) / 365.25))
    if kind in ("christmas", "toys"):
        peak = 2.2 if kind == "christmas" else 4.0
        ramp = 1.0 + (peak - 1) * max(0.0, 1 - to_christmas / 35) if 0 <= to_christmas else 0.8
        friday = (2.5 if kind == "toys" else 1.6) if 0 <= (day - black_friday).days <= 2 else 1.0
        return ramp * friday
    if kind == "back_to_school":
        centre = dt.date(day.year, 8, 12)
        return 1.0 + 1.2 * np.exp(-(((day - centre).days / 12.0) ** 2))
    if kind == "summer":
        return 1.0 + 0.7 * np.exp(-(((doy - 175) / 40.0) ** 2))
    # easter: candy and seasonal goods in the 10 days before Easter, which moves by weeks
    return 1.0 + (2.5 if 0 <= (easter - day).days <= 10 else 0.0)


def write_dept_weekly(data: Path, size: DeptWeeklySize = DeptWeeklySize()) -> dict[str, int]:
    """data/train.csv, data/stores.csv and data/test.csv as Walmart's, for
    examples/datasets/dept_weekly.yaml."""
    rng = np.random.default_rng(size.seed)
    weeks = _days(size.start, size.end, 7)
    n_s, n_d = size.stores, size.depts
    depts = np.sort(rng.choice(np.arange(1, 100), n_d, replace=False))
    profile = [_PROFILES[i % len(_PROFILES)] for i in range(n_d)]
    types = rng.choice(["A", "B", "C"], n_s, p=[0.5, 0.38, 0.12])
    store_size = np.where(types == "A", rng.integers(150_000, 220_000, n_s),
                          np.where(types == "B", rng.integers(60_000, 140_000, n_s),
                                   rng.integers(35_000, 45_000, n_s)))
    dept_level = np.exp(rng.normal(np.log(9000), 1.3, n_d))  # from hundreds to ~100k a week
    dept_level[-2:] = rng.uniform(150, 350, 2)  # two sparse departments, with empty weeks
    affinity = np.exp(rng.normal(0, 0.35, (n_s, n_d)))
    trend = rng.normal(0.0, 0.05, n_s)
    # each week's profile: the mean of its seven days (Saturday to the Friday it is dated)
    week_profile = np.array([[np.mean([_daily_profile(p, w - dt.timedelta(days=k))
                                       for k in range(7)]) for p in profile] for w in weeks])
    wander = _ar1_log_level(rng, n_s * n_d, len(weeks), phi=0.93, sd=0.045).reshape(
        len(weeks), n_s, n_d)
    holidays = {d for y in range(size.start.year, size.end.year + 2)
                for d in _walmart_holidays(y).values()}
    rows: dict[str, list[object]] = {c: [] for c in (
        "Store", "Dept", "Date", "Weekly_Sales", "IsHoliday")}
    missing = 0
    for s in range(n_s):  # Kaggle's file: by store, then department, then date
        scale = (store_size[s] / 150_000) ** 0.8
        for d in range(n_d):
            base = dept_level[d] * scale * affinity[s, d]
            noise_sd = 0.05 + 0.4 / np.sqrt(max(base, 1) / 50)  # small departments are noisier
            for t, week in enumerate(weeks):
                years = (week - size.start).days / 365.25
                mu = base * week_profile[t, d] * np.exp(trend[s] * years + wander[t, s, d])
                sales = mu * np.exp(rng.normal(0, noise_sd))
                if base < 400 and rng.random() < 0.12:  # a sparse department's empty week
                    missing += 1
                    continue
                if base < 1500 and rng.random() < 0.03:  # returns exceed sales
                    sales = -rng.uniform(1, 300)
                rows["Store"].append(s + 1)
                rows["Dept"].append(int(depts[d]))
                rows["Date"].append(week.isoformat())
                rows["Weekly_Sales"].append(round(float(sales), 2))
                rows["IsHoliday"].append("TRUE" if week in holidays else "FALSE")
    data.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_csv(data / "train.csv")
    pl.DataFrame({"Store": list(range(1, n_s + 1)), "Type": types.tolist(),
                  "Size": store_size.tolist()}).write_csv(data / "stores.csv")
    ahead = [size.end + dt.timedelta(weeks=k) for k in range(1, size.plan_weeks + 1)]
    pl.DataFrame({
        "Store": [s + 1 for s in range(n_s) for _ in depts for _ in ahead],
        "Dept": [int(d) for _ in range(n_s) for d in depts for _ in ahead],
        "Date": [w.isoformat() for _ in range(n_s) for _ in depts for w in ahead],
        "IsHoliday": ["TRUE" if w in holidays else "FALSE"
                      for _ in range(n_s) for _ in depts for w in ahead],
    }).write_csv(data / "test.csv")
    return {"rows": len(rows["Store"]), "series": n_s * n_d, "weeks": len(weeks),
            "missing_weeks": missing,
            "negative": sum(1 for v in rows["Weekly_Sales"] if float(v) < 0)}  # type: ignore[arg-type]
