"""What a forecaster answers from, built in one piece and swapped in one assignment.

`Serving` holds a model and a feature snapshot (and the online state for what-if requests),
indexed for requests. A request reads the service's `serving` once and uses that object to
the end, so a swap in the middle of it changes nothing for it. `Reloader` polls the sources
(the champion pointer, the snapshot's Delta version, the online state's pointer), builds a new
`Serving` off the request path when one moved, and hands it over.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import bentoml
import numpy as np
import polars as pl
from deltalake import DeltaTable

from bentos.demand_forecaster.schemas import (
    ForecastRequest,
    IntervalInfo,
    ModelInfo,
    SeriesRef,
    SnapshotInfo,
)
from ml_assets.deployment.pointer import read_champion
from ml_assets.evaluation.intervals import Bounds, Calibration, no_calibration
from ml_assets.forecasting.online import OnlineState
from ml_assets.forecasting.online_store import OnlineStore, load_current, online_store
from ml_assets.training.dataset import Columns, to_array
from ml_assets.training.model import predict_inplace
from resources.prod import reader_options
from resources.settings import Settings

FEATURES_TABLE = "gold/forecast_features"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sources:
    """Where a `Serving` came from; a change in any of them means a reload."""

    model_tag: str
    features_version: int
    online: str  # the published online state's name ("" when none is published)


@dataclass(frozen=True)
class Paths:
    features: str  # the Delta table of the snapshot: a local path, or an object store URI
    online: OnlineStore  # where the online state is published (a folder, or Redis)
    serving: Path  # the champion pointer's folder
    storage_options: dict[str, str] | None = None  # the object store's, for `features`


def paths_for(settings: Settings) -> Paths:
    features = settings.delta_table(FEATURES_TABLE)
    return Paths(features=features, online=online_store(settings), serving=settings.serving_dir,
                 storage_options=reader_options(features))


@dataclass(frozen=True, eq=False)
class Serving:
    sources: Sources
    predict: Callable[[np.ndarray], np.ndarray]  # the model on rows of `array`'s columns
    model_version: str
    columns: Columns
    levels: dict[str, list[str]]
    array: np.ndarray  # the model's input for every servable row, built once
    zero: np.ndarray  # rows the dataset's `zero_when` rule forces to 0 (closed days)
    row_of: dict[tuple[str, str, dt.date], int]
    series: frozenset[tuple[str, str]]
    stores: frozenset[str]
    items: frozenset[str]
    origins: list[dt.date]
    horizons: list[int]
    horizon_array: np.ndarray  # `horizons`, for the interval lookup
    bounds: Bounds | None  # the model's prediction intervals; None: it has no calibration
    origin: dt.date
    first: dt.date
    last: dt.date
    online: OnlineState | None
    online_missing: str  # why what-if requests are refused, when `online` is None
    info: ModelInfo
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def model_tag(self) -> str:
        return self.sources.model_tag


def current_sources(paths: Paths, built_tag: str, follow_pointer: bool) -> Sources:
    """The sources to serve now: the champion pointer's model (the Bento's own when none is
    published, or when following is off), the snapshot's latest version, the online state."""
    pointer = read_champion(paths.serving) if follow_pointer else None
    return Sources(model_tag=pointer.model_tag if pointer else built_tag,
                   features_version=DeltaTable(
                       paths.features, storage_options=paths.storage_options).version(),
                   online=paths.online.current())


def load_serving(sources: Sources, paths: Paths, period_days: int) -> Serving:
    """Loads the model from the BentoML store and the snapshot at exactly those versions."""
    model = bentoml.models.get(sources.model_tag)
    meta, labels = model.info.metadata, dict(model.info.labels)
    columns = Columns(list(meta["numeric"]), list(meta["categorical"]))
    predict = model_predictor(model)
    levels = {c: list(v) for c, v in meta["category_levels"].items()}
    features = pl.read_delta(paths.features, version=sources.features_version,
                             storage_options=paths.storage_options)
    if features.height == 0:
        raise RuntimeError(f"{FEATURES_TABLE} is empty: run the forecast features first")
    keys = features.select("store_id", "item_id", "date").rows()
    series = frozenset((store, item) for store, item, _ in keys)
    origin: dt.date = features.get_column("origin").max()
    first, last = features.get_column("date").min(), features.get_column("date").max()
    online, missing = online_for(paths.online, sources.online, origin)
    calibration = (Calibration.from_json(meta["intervals"]) if meta.get("intervals")
                   else None)
    info = ModelInfo(
        model_version=labels.get("mlflow_version", ""), model_tag=sources.model_tag,
        mlflow_run_id=labels.get("mlflow_run_id"), created_at=model.info.creation_time,
        metrics={k.removeprefix("metric_"): float(v) for k, v in labels.items()
                 if k.startswith("metric_")},
        training_data={k.removeprefix("delta_"): int(v) for k, v in labels.items()
                       if k.startswith("delta_")},
        feature_columns=columns.all,
        kind=meta.get("baseline") or "xgboost",
        covariates=list(online.spec.covariates) if online else [],
        intervals=interval_info(calibration, labels.get("mlflow_version", "")),
        features=SnapshotInfo(table=FEATURES_TABLE, version=sources.features_version,
                              origin=origin, first_date=first, last_date=last,
                              period_days=period_days, series=len(series),
                              rows=features.height, **samples(features, period_days)))
    return Serving(
        sources=sources, predict=predict, model_version=info.model_version, columns=columns,
        levels=levels, array=to_array(features, columns, levels),
        zero=features.get_column("forced_zero").fill_null(False).to_numpy()
        if "forced_zero" in features.columns else np.zeros(features.height, dtype=bool),
        row_of={key: i for i, key in enumerate(keys)}, series=series,
        stores=frozenset(s for s, _ in series), items=frozenset(i for _, i in series),
        origins=features.get_column("origin").to_list(),
        horizons=features.get_column("horizon").to_list(),
        horizon_array=features.get_column("horizon").to_numpy(),
        bounds=Bounds(calibration) if calibration else None, origin=origin, first=first,
        last=last, online=online, online_missing=missing, info=info)


def samples(features: pl.DataFrame, period_days: int, n: int = 5) -> dict[str, object]:
    """A few valid series and one servable request: the day after the first servable date
    (tomorrow, on the simulated world's clock), on a series open that day."""
    first, last = features.get_column("date").min(), features.get_column("date").max()
    day = min(first + dt.timedelta(days=period_days), last)
    rows = features.filter(pl.col("date") == day).sort("store_id", "item_id")
    if "forced_zero" in rows.columns:
        rows = rows.sort(pl.col("forced_zero").fill_null(False), maintain_order=True)
    pairs = rows.select("store_id", "item_id").rows()
    example = ForecastRequest(store_id=pairs[0][0], item_id=pairs[0][1], date=day) \
        if pairs else None
    return {"sample_series": [SeriesRef(store_id=s, item_id=i) for s, i in sorted(pairs)[:n]],
            "example_request": example}


def interval_info(calibration: Calibration | None, version: str) -> IntervalInfo:
    if calibration is None:
        return IntervalInfo(level=None, missing=no_calibration(version))
    return IntervalInfo(level=calibration.level, coverage=calibration.coverage,
                        measured=calibration.measured or None,
                        method=calibration.method)


def model_predictor(model: bentoml.Model) -> Callable[[np.ndarray], np.ndarray]:
    """The model as a function of its input rows: the XGBoost booster, or, for a baseline
    (a JSON model naming its column), that one column of the rows."""
    if model.info.metadata.get("baseline"):
        return lambda x: np.nan_to_num(np.clip(x[:, 0], 0.0, None), nan=0.0)
    booster = bentoml.xgboost.load_model(model)
    # one thread per worker: the workers already use every core, and a request is a few rows
    booster.set_param({"nthread": 1})
    return lambda x: predict_inplace(booster, x)


def online_for(store: OnlineStore, name: str, origin: dt.date
               ) -> tuple[OnlineState | None, str]:
    """The online feature state `name`, if it is for the snapshot's origin; else the reason
    overrides are refused."""
    if not name:
        return None, f"no online feature state is published at {store}"
    state = load_current(store, name)
    if state.origin != origin:
        return None, (f"the online feature state at {store} is for origin {state.origin}, "
                      f"the feature snapshot for origin {origin}")
    return state, ""


class Reloader:
    """Every `interval` seconds, on a daemon thread: if `sources()` moved away from what is
    served, `load` a new `Serving` and `swap` it in. A failed load is logged and counted, the
    old `Serving` keeps answering, and the same sources are not retried until they move again
    (a broken model would otherwise be reloaded, and logged, every interval)."""

    def __init__(self, served: Callable[[], Serving], sources: Callable[[], Sources],
                 load: Callable[[Sources], Serving], swap: Callable[[Serving], None],
                 interval: float) -> None:
        self.served, self.sources, self.load, self.swap = served, sources, load, swap
        self.interval = interval
        self.swaps = self.failures = 0
        self.failed: Sources | None = None
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forecaster-reloader",
                                        daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> bool:
        """One poll; True when it swapped."""
        try:
            wanted = self.sources()
        except Exception as error:  # noqa: BLE001 - a source mid-publication: poll again
            self._failed(None, error)
            return False
        old = self.served().sources
        if wanted in (old, self.failed):
            return False
        try:
            new = self.load(wanted)
        except Exception as error:  # noqa: BLE001 - serving must outlive a bad publication
            self._failed(wanted, error)
            return False
        self.swap(new)
        self.swaps += 1
        self.failed, self.last_error = None, ""
        log.info("now serving %s (was %s)", wanted, old)
        return True

    def _failed(self, sources: Sources | None, error: Exception) -> None:
        self.failures += 1
        self.failed = sources
        self.last_error = f"{type(error).__name__}: {error}"
        log.exception("reload failed, still serving %s", self.served().sources)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()
