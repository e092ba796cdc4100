"""The online demand forecaster: (store, item, date) in, the batch job's forecast out.

Requests are answered from the latest forecast feature snapshot (gold/forecast_features: the
rows of the next horizon after the last landed day, built by the training code), scored with
the same `to_matrix` features and booster as the batch job, so online and batch forecasts agree.

A request that overrides a known-in-advance input (price, on_promo) is answered from the online
feature state (`online_features`, under RETAIL_ML_HOME/online): its row is rebuilt by the
training transforms (`ml_assets.forecasting.online.request_features`), never patched.

Routes: POST /forecast, POST /forecast_batch, GET /model, and BentoML's /livez, /readyz and
/metrics. Auth, the latency histogram and the error body shape live in `middleware.py`.
Every forecast served is appended to the prediction log (`prediction_log.py`, under
RETAIL_ML_HOME/predictions; RETAIL_ML_PREDICTION_LOG=off turns it off).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from http import HTTPStatus
from pathlib import Path

import bentoml
import numpy as np
import polars as pl
from bentoml.exceptions import BentoMLException, NotFound, UnprocessableEntity
from deltalake import DeltaTable
from fastapi import FastAPI

from bentos.demand_forecaster.middleware import ApiEdge, quiet_client_errors
from bentos.demand_forecaster.openapi import with_real_errors
from bentos.demand_forecaster.prediction_log import PredictionLog, enabled, timer
from bentos.demand_forecaster.schemas import Forecast, ForecastRequest, ModelInfo, SnapshotInfo
from ml_assets.forecasting.online import (
    OnlineState,
    RequestError,
    load_state,
    request_features,
    state_exists,
)
from ml_assets.training.dataset import Columns, to_matrix
from ml_assets.training.model import predict_inplace
from resources.settings import load_settings

FEATURES_TABLE = "gold/forecast_features"
REQUEST_ERROR_LOG = "bentoml._internal.server.http_app"  # where BentoML logs failed requests
MAX_BATCH_ENV = "RETAIL_ML_MAX_BATCH"
DEFAULT_MAX_BATCH = 10_000
# The build pins the model version as a Bento argument: outside a container, BentoML resolves
# "latest" against the whole local model store at serve time, so serving an older Bento (a
# rollback) would otherwise load the newest model.
MODEL_TAG = getattr(bentoml.use_arguments(), "model_tag", "demand_forecaster:latest")

# BentoML APIs are POST only: GET routes come from a mounted FastAPI app, whose routes BentoML
# adds to its OpenAPI spec. Its own docs routes are off: /docs.json covers everything.
info_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@bentoml.service(name="demand_forecaster", traffic={"timeout": 30})
@bentoml.asgi_app(info_app, path="/")
class DemandForecaster:
    # Declared on the class so that the Bento records (and exports) the model.
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        logging.getLogger(REQUEST_ERROR_LOG).addFilter(quiet_client_errors)
        model = self.model_ref
        self.booster = bentoml.xgboost.load_model(model)
        meta, labels = model.info.metadata, dict(model.info.labels)
        columns = Columns(list(meta["numeric"]), list(meta["categorical"]))
        levels = {c: list(v) for c, v in meta["category_levels"].items()}
        self.model_tag = str(model.tag)
        self.model_version = labels.get("mlflow_version", "")
        settings = load_settings()
        self.period_days = settings.dataset.period_days
        self.max_batch = int(os.environ.get(MAX_BATCH_ENV, DEFAULT_MAX_BATCH))
        self.columns, self.levels = columns, levels

        path = str(settings.delta_root / FEATURES_TABLE)
        self.features_version = DeltaTable(path).version()
        # read at that version, so the version reported is the one served even if a write lands
        features = pl.read_delta(path, version=self.features_version)
        if features.height == 0:
            raise RuntimeError(f"{FEATURES_TABLE} is empty: run the forecast features first")
        # the model's input for every servable row, built once: a request only selects rows
        self.matrix = to_matrix(features, columns, levels)
        keys = features.select("store_id", "item_id", "date").rows()
        self.row_of = {key: i for i, key in enumerate(keys)}
        self.series = {(store, item) for store, item, _ in keys}
        self.stores = {store for store, _ in self.series}
        self.items = {item for _, item in self.series}
        self.origins = features.get_column("origin").to_list()
        self.horizons = features.get_column("horizon").to_list()
        self.origin: dt.date = features.get_column("origin").max()
        self.first: dt.date = features.get_column("date").min()
        self.last: dt.date = features.get_column("date").max()
        self.online, self.online_missing = self._load_online(settings.online_dir)
        self.prediction_log = PredictionLog(settings.home / "predictions") if enabled() else None
        self.log_failures = 0
        self.info = ModelInfo(
            model_version=self.model_version, model_tag=self.model_tag,
            mlflow_run_id=labels.get("mlflow_run_id"), created_at=model.info.creation_time,
            metrics={k.removeprefix("metric_"): float(v) for k, v in labels.items()
                     if k.startswith("metric_")},
            training_data={k.removeprefix("delta_"): int(v) for k, v in labels.items()
                           if k.startswith("delta_")},
            feature_columns=columns.all,
            features=SnapshotInfo(table=FEATURES_TABLE, version=self.features_version,
                                  origin=self.origin, first_date=self.first,
                                  last_date=self.last, period_days=self.period_days,
                                  series=len(self.series), rows=features.height))

    @bentoml.api(input_spec=ForecastRequest)
    async def forecast(self, store_id: str, item_id: str, date: dt.date,
                       price: float | None = None, on_promo: int | None = None) -> Forecast:
        """Units forecast for one store, item and date within the current horizon."""
        start = timer()
        request = ForecastRequest(store_id=store_id, item_id=item_id, date=date, price=price,
                                  on_promo=on_promo)
        if price is None and on_promo is None:
            answer = self._forecast([request], batch=False)
        else:  # a what-if row is built by the feature transforms (milliseconds): off the loop
            answer = await asyncio.to_thread(self._forecast, [request], False)
        self._log("forecast", [request], answer, start)
        return answer[0]

    @bentoml.api
    async def forecast_batch(self, requests: list[ForecastRequest]) -> list[Forecast]:
        """Many forecasts scored in one call (at most RETAIL_ML_MAX_BATCH, default 10000). Any
        invalid request fails the whole batch, and the error names its index."""
        start = timer()
        if len(requests) > self.max_batch:
            raise BentoMLException(
                f"requests: {len(requests)} forecasts in one batch, the limit is "
                f"{self.max_batch} ({MAX_BATCH_ENV}): split the batch",
                error_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        # off the event loop: a large batch takes milliseconds that single forecasts should not
        # wait for
        answers = await asyncio.to_thread(self._forecast, requests, True)
        self._log("forecast_batch", requests, answers, start)
        return answers

    @info_app.get("/model", response_model=ModelInfo)
    async def model_info(self) -> ModelInfo:
        """The model serving (MLflow version, tag, metrics, training data versions) and the
        feature snapshot it answers from."""
        return self.info

    @bentoml.on_shutdown
    def close_prediction_log(self) -> None:
        """Writes the queued records and publishes the current log file."""
        if self.prediction_log is not None:
            self.prediction_log.close()

    def _log(self, endpoint: str, requests: list[ForecastRequest], answers: list[Forecast],
             start: float) -> None:
        """Queues the records of a served call; a failure is counted and logged, never raised:
        the client has its forecast."""
        if self.prediction_log is None or not answers:
            return
        try:
            self.prediction_log.append(endpoint, requests, answers, timer() - start)
        except Exception:  # noqa: BLE001 - the log must never fail a served request
            self.log_failures += 1
            logging.getLogger(__name__).exception(
                "prediction log: %d records not queued (%d failures)", len(answers),
                self.log_failures)

    def _forecast(self, requests: list[ForecastRequest], batch: bool) -> list[Forecast]:
        if not requests:
            return []
        prefixes = [f"requests.{i}." if batch else "" for i in range(len(requests))]
        rows = np.fromiter((self._row(r, p) for r, p in zip(requests, prefixes, strict=True)),
                           dtype=np.int64, count=len(requests))
        overridden = [i for i, r in enumerate(requests)
                      if r.price is not None or r.on_promo is not None]
        if not overridden:
            units = predict_inplace(self.booster, self.matrix.iloc[rows])
        else:  # snapshot rows for the others, rows rebuilt online for these
            units = np.empty(len(requests), dtype=np.float32)
            plain = np.ones(len(requests), dtype=bool)
            plain[overridden] = False
            if plain.any():
                units[plain] = predict_inplace(self.booster, self.matrix.iloc[rows[plain]])
            units[overridden] = self._what_if([requests[i] for i in overridden],
                                              [prefixes[i] for i in overridden])
        # model_construct: every value is ours, already typed; validating 10k responses costs
        return [Forecast.model_construct(
            store_id=r.store_id, item_id=r.item_id, date=r.date, units=float(u),
            model_version=self.model_version, model_tag=self.model_tag,
            features_origin=self.origins[row], features_version=self.features_version,
            horizon=self.horizons[row]) for r, u, row in zip(requests, units, rows, strict=True)]

    def _load_online(self, root: Path) -> tuple[OnlineState | None, str]:
        """The online feature state, if one is published for the snapshot's origin; else the
        reason overrides are refused."""
        if not state_exists(root):
            return None, f"no online feature state is published at {root}"
        state = load_state(root)
        if state.origin != self.origin:
            return None, (f"the online feature state at {root} is for origin {state.origin}, "
                          f"the feature snapshot for origin {self.origin}")
        return state, ""

    def _what_if(self, requests: list[ForecastRequest], prefixes: list[str]) -> np.ndarray:
        """Units for requests with price or promotion overrides: their rows rebuilt by the
        training transforms from the online state, all in one call."""
        if self.online is None:
            given = next(f for f in ("price", "on_promo") if getattr(requests[0], f) is not None)
            raise UnprocessableEntity(
                f"{prefixes[0]}{given}: price and on_promo overrides need the online feature "
                f"state, and {self.online_missing}: materialize `online_features`, or omit them "
                "to get the forecast at the regular price without promotion")
        frame = pl.DataFrame(
            [(r.store_id, r.item_id, r.date, r.price, r.on_promo) for r in requests],
            schema={"store_id": pl.Utf8, "item_id": pl.Utf8, "date": pl.Date,
                    "price": pl.Float64, "on_promo": pl.Int64}, orient="row")
        try:
            features = request_features(self.online, frame)
        except RequestError as error:  # the snapshot knew the row: the two disagree
            raise NotFound(f"{prefixes[error.index]}{error.field}: {error}") from error
        return predict_inplace(self.booster, to_matrix(features, self.columns, self.levels))

    def _row(self, req: ForecastRequest, prefix: str) -> int:
        row = self.row_of.get((req.store_id, req.item_id, req.date))
        if row is not None:
            return row
        at = f"in the feature snapshot at origin {self.origin}"
        if req.store_id not in self.stores:
            raise NotFound(f"{prefix}store_id: unknown store {req.store_id!r} {at}")
        if req.item_id not in self.items:
            raise NotFound(f"{prefix}item_id: unknown item {req.item_id!r} {at}")
        if (req.store_id, req.item_id) not in self.series:
            raise NotFound(f"{prefix}item_id: no active series store_id={req.store_id!r} "
                           f"item_id={req.item_id!r} {at}")
        step = "" if self.period_days == 1 else f", every {self.period_days} days"
        raise UnprocessableEntity(
            f"{prefix}date: {req.date} is outside the servable horizon: valid dates are "
            f"{self.first} .. {self.last}{step} (origin {self.origin})")


DemandForecaster.add_asgi_middleware(
    ApiEdge, endpoints=(*(api.route for api in DemandForecaster.apis.values()), "/model"),
    model_version=lambda: bentoml.get_current_service().model_version,
    openapi=lambda: with_real_errors(DemandForecaster.openapi_spec.asdict()))
