"""Request-time features: a what-if row (price, promotion) built by the training transforms.

The online state holds, per active series, the bronze rows within the spec's lookback before
the forecast origin (what `forecast_features` reads), plus the dimensions. A request with
known-in-advance overrides rebuilds its series' next-horizon rows with `future_rows` (the same
defaults as `horizon_features`), applies the overrides on the requested rows, and runs
`build_features` on that history plus those rows: the features come from the training code,
never from patched columns. Rows without overrides equal `horizon_features`' rows exactly.

Each request is its own scenario: a promotion on day d also changes `promo_prev` of day d + 1,
so requests of one series on adjacent dates (or the same date twice) are built in separate
rounds. Nothing else in the horizon depends on another horizon day's price or promotion
(every window ends at least a horizon before its row).
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ml_assets.features.recent import pooled_at
from ml_assets.features.transforms import SERIES, FeatureSpec, build_features
from ml_assets.forecasting.horizon import (
    active_series,
    finish_rows,
    future_rows,
    known_future,
)

OVERRIDES = ("price", "on_promo")  # besides the declared covariates
FEATURE_DIMS = ("stores", "items", "calendar", "first_sale")  # what `build_features` takes
DIMS = (*FEATURE_DIMS, "plan")  # the plan as known at the origin
CURRENT = "CURRENT"  # names the published state folder; replaced atomically
FORMAT = 1


class RequestError(ValueError):
    """A request the state cannot answer: `index` is its position, `field` the culprit."""

    def __init__(self, message: str, index: int, field: str):
        super().__init__(message)
        self.index, self.field = index, field


class UnknownSeries(RequestError):
    pass


class OutsideHorizon(RequestError):
    pass


@dataclass
class OnlineState:
    origin: dt.date
    spec: FeatureSpec
    history: pl.DataFrame  # bronze rows of the active series, lookback up to the origin
    dims: dict[str, pl.DataFrame | None]
    versions: dict[str, int | None] = field(default_factory=dict)
    _slices: dict[tuple[str, str], tuple[int, int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.history = self.history.sort([*SERIES, "date"])
        keys = self.history.select(SERIES).with_row_index("row").group_by(
            SERIES, maintain_order=True).agg(pl.col("row").min(), pl.len())
        self._slices = {(s, i): (row, n) for s, i, row, n in keys.iter_rows()}

    @property
    def dates(self) -> list[dt.date]:
        step = dt.timedelta(days=self.spec.period_days)
        return [self.origin + k * step for k in range(1, self.spec.horizon + 1)]

    @property
    def series_count(self) -> int:
        return len(self._slices)

    def has_series(self, store_id: str, item_id: str) -> bool:
        return (store_id, item_id) in self._slices

    @functools.cached_property
    def pooled(self) -> pl.DataFrame:
        """The store- and item-pooled features at the origin, over every active series, as
        `horizon_features` pools them: computed once, joined by every request."""
        return pooled_at(self.history, self.origin, self.spec)

    def series_history(self, series: list[tuple[str, str]]) -> pl.DataFrame:
        return pl.concat([self.history.slice(*self._slices[key]) for key in series])


def build_state(sales: pl.DataFrame, origin: dt.date, spec: FeatureSpec,
                versions: dict[str, int | None] | None = None,
                **dims: pl.DataFrame | None) -> OnlineState:
    """The state from the inputs `forecast_features` reads (`horizon_inputs`): bronze rows
    from the lookback before origin + 1 period, the `stores`, `items`, `calendar` and
    `first_sale` dimensions, and the bronze `plan`, kept as known at the origin
    (`known_future`). Longer history is cut to the lookback (rows then equal those of
    `horizon_features` on the same cut; on the uncut history, up to float rounding)."""
    if dims.get("plan") is not None:
        dims["plan"] = known_future(sales, origin, spec, dims["plan"])[0]
    start = origin + dt.timedelta(days=spec.period_days * (1 - spec.lookback_periods))
    history = sales.filter(pl.col("date") <= origin)
    active = active_series(history, origin, spec)
    if dims.get("first_sale") is None and history["date"].min() < start:
        # the series' age counts from the first row passed, as `build_features` counts it
        dims["first_sale"] = history.join(active, on=SERIES, how="semi").group_by(SERIES).agg(
            pl.col("date").min().alias("first_sale_date"))
    history = history.filter(pl.col("date") >= start).join(active, on=SERIES, how="semi")
    return OnlineState(origin, spec, history, {k: dims.get(k) for k in DIMS}, versions or {})


def request_features(state: OnlineState, requests: pl.DataFrame,
                     scenario: bool = False) -> pl.DataFrame:
    """Feature rows (the columns of `horizon_features`) for `requests` (store_id, item_id, date,
    optional overrides of price, on_promo and the declared covariates: null = the plan's value,
    or the horizon's default), one per request, in order.

    `scenario=False`: each request is its own what-if. `scenario=True` (a batch): the requests
    of one series are one plan over several days, so a promotion on day d shows in day d + 1's
    `promo_prev` too; a (series, date) given twice is built in a second round."""
    if requests.height == 0:
        raise ValueError("request_features: no requests")
    reqs = _validate(state, requests)
    rank = pl.int_range(pl.len()).over([*SERIES, "date"])
    if scenario:
        rounds = reqs.with_columns(round=rank)
    else:  # same key twice, or adjacent dates of one series: separate builds (see module doc)
        ahead = (pl.col("date") - pl.lit(state.origin)).dt.total_days() // state.spec.period_days
        rounds = reqs.with_columns(round=rank * 2 + ahead % 2)
    parts = [_build_round(state, part) for part in rounds.partition_by("round", include_key=False)]
    return pl.concat(parts).sort("__request").drop("__request")


def override_types(spec: FeatureSpec) -> dict[str, pl.DataType]:
    """The inputs a request may override: price, on_promo and every declared covariate."""
    return {"price": pl.Float64(), "on_promo": pl.Int64(),
            **{c: pl.Float64() for c in spec.numeric_covariates},
            **{c: pl.Utf8() for c in spec.categorical_covariates}}


def _validate(state: OnlineState, requests: pl.DataFrame) -> pl.DataFrame:
    reqs = requests.select(
        pl.col("store_id").cast(pl.Utf8), pl.col("item_id").cast(pl.Utf8),
        pl.col("date").cast(pl.Date),
        *[(pl.col(c) if c in requests.columns else pl.lit(None)).cast(t).alias(c)
          for c, t in override_types(state.spec).items()],
    ).with_row_index("__request")
    dates = set(state.dates)
    for i, store, item, day in reqs.select("__request", *SERIES, "date").iter_rows():
        if not state.has_series(store, item):
            raise UnknownSeries(f"no active series store_id={store!r} item_id={item!r} in the "
                                f"online state at origin {state.origin}", i, "item_id")
        if day not in dates:
            raise OutsideHorizon(f"{day} is outside the horizon of the online state: valid dates "
                                 f"are {min(dates)} .. {max(dates)} (origin {state.origin})",
                                 i, "date")
    return reqs


def _build_round(state: OnlineState, reqs: pl.DataFrame) -> pl.DataFrame:
    series = reqs.select(SERIES).unique(maintain_order=True)
    history = state.series_history(series.rows())
    future = future_rows(series, state.origin, state.spec, history, state.dims.get("plan"))
    names = [c for c in override_types(state.spec) if c in future.columns]
    given = reqs.select(*SERIES, "date", *[pl.col(c).alias(f"__{c}") for c in names])
    future = future.join(given, on=[*SERIES, "date"], how="left", maintain_order="left")
    future = future.with_columns(
        pl.coalesce(f"__{c}", c).cast(future.schema[c]).alias(c) for c in names
    ).drop(f"__{c}" for c in names)
    dims = {k: state.dims.get(k) for k in FEATURE_DIMS}
    table = build_features(pl.concat([history, future]), state.spec, **dims)
    rows = finish_rows(table, history, state.origin, state.spec, state.pooled)
    return reqs.select("__request", *SERIES, "date").join(
        rows, on=[*SERIES, "date"], how="left").select(
        "__request", "date", *SERIES, pl.exclude("__request", "date", *SERIES))


def encode_state(state: OnlineState) -> dict[str, bytes]:
    """The state as named parts (`state.json`, `history.parquet`, one Parquet per dimension
    present): the files of a published folder, the fields of a Redis hash."""
    def parquet(frame: pl.DataFrame) -> bytes:
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        return buffer.getvalue()

    spec = state.spec
    meta = {"format": FORMAT, "origin": state.origin.isoformat(), "versions": state.versions,
            "spec": {"horizon": spec.horizon, "period_days": spec.period_days,
                     "numeric_covariates": list(spec.numeric_covariates),
                     "categorical_covariates": list(spec.categorical_covariates),
                     "defaults": [list(d) for d in spec.defaults],
                     "zero_when": [list(z) for z in spec.zero_when]},
            "series": state.series_count, "rows": state.history.height}
    return {"state.json": json.dumps(meta, indent=1).encode(),
            "history.parquet": parquet(state.history),
            **{f"{key}.parquet": parquet(frame) for key, frame in state.dims.items()
               if frame is not None}}


def decode_state(parts: Mapping[str, bytes]) -> OnlineState:
    meta = json.loads(parts["state.json"])
    spec = meta["spec"]
    dims = {key: pl.read_parquet(io.BytesIO(parts[f"{key}.parquet"]))
            if f"{key}.parquet" in parts else None for key in DIMS}
    return OnlineState(
        origin=dt.date.fromisoformat(meta["origin"]),
        spec=FeatureSpec(spec["horizon"], spec["period_days"],
                         tuple(spec["numeric_covariates"]), tuple(spec["categorical_covariates"]),
                         tuple((k, v) for k, v in spec.get("defaults", [])),
                         tuple((k, v) for k, v in spec.get("zero_when", []))),
        history=pl.read_parquet(io.BytesIO(parts["history.parquet"])), dims=dims,
        versions=meta["versions"])


def new_state_name() -> str:
    return f"state-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"


def save_state(state: OnlineState, root: Path, keep: int = 2) -> Path:
    """Writes the state to a new folder under `root`, then points `root/CURRENT` at it with an
    atomic rename: a reader sees the previous state or this one, never half of one. Keeps the
    last `keep` folders (a reader may still be loading the previous one)."""
    root.mkdir(parents=True, exist_ok=True)
    name = new_state_name()
    tmp = root / f".{name}.tmp"
    tmp.mkdir()
    for part, data in encode_state(state).items():
        (tmp / part).write_bytes(data)
    tmp.rename(root / name)
    pointer = root / f".{CURRENT}.{uuid.uuid4().hex[:8]}.tmp"
    pointer.write_text(name)
    os.replace(pointer, root / CURRENT)
    for old in sorted(p for p in root.glob("state-*") if p.name != name)[:-(keep - 1) or None]:
        shutil.rmtree(old, ignore_errors=True)
    return root / name


def current_name(root: Path) -> str:
    """The name `root/CURRENT` gives the published state; "" when none is published."""
    pointer = root / CURRENT
    return pointer.read_text().strip() if pointer.is_file() else ""


def state_exists(root: Path) -> bool:
    return bool(current_name(root))


def load_state(root: Path, name: str | None = None) -> OnlineState:
    """The state `name` (default: the one `root/CURRENT` points at). FileNotFoundError when
    none is published."""
    name = name or current_name(root)
    if not name:
        raise FileNotFoundError(f"no online feature state at {root}: materialize "
                                "`online_features`")
    folder = root / name
    return decode_state({p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})
