"""The online demand forecaster: (store, item, date) in, the batch job's forecast out.

Requests are answered from the latest forecast feature snapshot (gold/forecast_features: the
rows of the next horizon after the last landed day, built by the training code), scored with
the same `to_matrix` features and booster as the batch job, so online and batch forecasts agree.
Each answer carries its prediction interval (`lower`, `upper` at `interval_level`), from the
calibration the model was registered with (`ml_assets.evaluation.intervals`), as the batch
forecasts do; null when the model has none, and GET /model says why.

A request that overrides a known-in-advance input (price, on_promo) is answered from the online
feature state (`online_features`, under RETAIL_ML_HOME/online): its row is rebuilt by the
training transforms (`ml_assets.forecasting.online.request_features`), never patched.

Hot swap (`state.py`): the server polls the champion pointer that `demand_forecaster_bento`
publishes (RETAIL_ML_HOME/serving/champion.json), the snapshot's Delta version and the online
state every RETAIL_ML_RELOAD_SECONDS (default 5, 0 = off). When one moves, the new model and
snapshot load on a background thread and replace the old ones in one assignment; a request
already running finishes on what it started with. Every answer names its model and snapshot.

Routes: POST /forecast, POST /forecast_batch, GET /model, and BentoML's /livez, /readyz and
/metrics. Auth, the latency histogram and the error body shape live in `middleware.py`.
Every forecast served is appended to the prediction log (`prediction_log.py`, under
RETAIL_ML_HOME/predictions; RETAIL_ML_PREDICTION_LOG=off turns it off).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import gc
import logging
import os
from http import HTTPStatus
from itertools import repeat

import bentoml
import numpy as np
import polars as pl
from bentoml.exceptions import BentoMLException, NotFound, UnprocessableEntity
from fastapi import FastAPI
from pydantic import TypeAdapter
from starlette.responses import Response

from bentos.demand_forecaster.middleware import ApiEdge, api_token, quiet_client_errors
from bentos.demand_forecaster.openapi import with_example, with_real_errors
from bentos.demand_forecaster.prediction_log import PredictionLog, enabled, timer
from bentos.demand_forecaster.schemas import Forecast, ForecastRequest, ModelInfo, Reload
from bentos.demand_forecaster.state import (
    Reloader,
    Serving,
    Sources,
    current_sources,
    load_serving,
    paths_for,
)
from ml_assets.forecasting.online import RequestError, override_types, request_features
from ml_assets.training.dataset import to_array
from resources.settings import load_settings

REQUEST_ERROR_LOG = "bentoml._internal.server.http_app"  # where BentoML logs failed requests
# A batch's answers serialized once, as the declared list[Forecast]: BentoML's own output path
# dumps a list of models twice (benchmarks/README.md, Serving).
BATCH_ANSWERS = TypeAdapter(list[Forecast])
MAX_BATCH_ENV = "RETAIL_ML_MAX_BATCH"
DEFAULT_MAX_BATCH = 10_000
RELOAD_ENV = "RETAIL_ML_RELOAD_SECONDS"  # how often to look for a new champion or snapshot
DEFAULT_RELOAD_SECONDS = 5.0  # 0 turns hot swapping off
FOLLOW_ENV = "RETAIL_ML_FOLLOW_CHAMPION"  # off: serve the Bento's own model, whatever is promoted
# The build pins the model version as a Bento argument: outside a container, BentoML resolves
# "latest" against the whole local model store at serve time, so serving an older Bento (a
# rollback) would otherwise load the newest model.
MODEL_TAG = getattr(bentoml.use_arguments(), "model_tag", "demand_forecaster:latest")

# BentoML APIs are POST only: GET routes come from a mounted FastAPI app, whose routes BentoML
# adds to its OpenAPI spec. Its own docs routes are off: /docs.json covers everything.
info_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


def batch_answers(response: Response) -> list[Forecast]:
    """The forecasts in a `forecast_batch` answer, for callers in this process."""
    return BATCH_ANSWERS.validate_json(bytes(response.body))


# Tuned for latency (benchmarks/results/serving.md measures each step): no access log line per
# request, no OpenTelemetry spans on the API routes, and one worker per core. BentoML's metrics
# stay on: they serve /metrics, where the service's own histogram is too.
@bentoml.service(name="demand_forecaster", traffic={"timeout": 30}, workers="cpu_count",
                 logging={"access": {"enabled": False}},
                 tracing={"excluded_urls": "forecast,forecast_batch"})
@bentoml.asgi_app(info_app, path="/")
class DemandForecaster:
    # Declared on the class so that the Bento records (and exports) the model.
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    @bentoml.on_deployment
    def refuse_open_prod() -> None:
        """Runs once in `bentoml serve`'s own process, before any worker: prod without a token
        (middleware.api_token) stops the server there with one line. Each worker's middleware
        checks again, for servers started some other way."""
        api_token()

    def __init__(self) -> None:
        logging.getLogger(REQUEST_ERROR_LOG).addFilter(quiet_client_errors)
        settings = load_settings()
        self.period_days = settings.dataset.period_days
        self.max_batch = int(os.environ.get(MAX_BATCH_ENV, DEFAULT_MAX_BATCH))
        self.paths = paths_for(settings)
        follow = os.environ.get(FOLLOW_ENV, "on").lower() not in ("off", "0", "false")
        built = str(self.model_ref.tag)
        self.serving = self._load(current_sources(self.paths, built, follow))
        self.reloader = Reloader(
            served=lambda: self.serving,
            sources=lambda: current_sources(self.paths, built, follow),
            load=self._load, swap=self._swap,
            interval=float(os.environ.get(RELOAD_ENV, DEFAULT_RELOAD_SECONDS)))
        self.reloader.start()
        self.prediction_log = PredictionLog(settings.home / "predictions") if enabled() else None
        self.log_failures = 0
        # what is loaded now lives as long as the worker: keep the collector from rescanning it
        gc.freeze()

    def _load(self, sources: Sources) -> Serving:
        return load_serving(sources, self.paths, self.period_days)

    def _swap(self, serving: Serving) -> None:
        self.serving = serving  # one reference assignment: atomic for every reader

    @property
    def model_version(self) -> str:
        return self.serving.model_version

    @bentoml.api(input_spec=ForecastRequest)
    async def forecast(self, store_id: str, item_id: str, date: dt.date,
                       price: float | None = None, on_promo: int | None = None,
                       covariates: dict[str, float | str] | None = None) -> Forecast:
        """Units forecast for one store, item and date within the current horizon."""
        start = timer()
        request = ForecastRequest(store_id=store_id, item_id=item_id, date=date, price=price,
                                  on_promo=on_promo, covariates=covariates)
        if not request.overridden:
            answer = self._forecast([request], batch=False)
        else:  # a what-if row is built by the feature transforms (milliseconds): off the loop
            answer = await asyncio.to_thread(self._forecast, [request], False)
        self._log("forecast", [request], answer, start)
        return answer[0]

    @bentoml.api
    async def forecast_batch(self, requests: list[ForecastRequest]) -> list[Forecast]:
        """Many forecasts scored in one call (at most RETAIL_ML_MAX_BATCH, default 10000). Any
        invalid request fails the whole batch, and the error names its index. The overrides of
        one series' requests form one scenario: a plan over several days."""
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
        # the body is exactly the declared list[Forecast] (/docs.json says so), serialized once
        return Response(BATCH_ANSWERS.dump_json(answers),  # type: ignore[return-value]
                        media_type="application/json")

    @info_app.get("/model", response_model=ModelInfo)
    async def model_info(self) -> ModelInfo:
        """The model serving (MLflow version, tag, metrics, training data versions) and the
        feature snapshot it answers from."""
        serving, reloader = self.serving, self.reloader
        return serving.info.model_copy(update={"loaded_at": serving.loaded_at, "reload": Reload(
            interval_seconds=reloader.interval, swaps=reloader.swaps,
            failures=reloader.failures, last_error=reloader.last_error or None)})

    @bentoml.on_shutdown
    def close_prediction_log(self) -> None:
        """Stops reloading, writes the queued records and publishes the current log file."""
        self.reloader.stop()
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
        s = self.serving  # read once: a swap during this call does not reach it
        prefixes = [f"requests.{i}." if batch else "" for i in range(len(requests))]
        rows = np.fromiter((_row(s, r, p) for r, p in zip(requests, prefixes, strict=True)),
                           dtype=np.int64, count=len(requests))
        overridden = [i for i, r in enumerate(requests) if r.overridden]
        zero = s.zero[rows]
        if not overridden:
            units = np.where(zero, 0.0, s.predict(s.array[rows]))
        else:  # snapshot rows for the others, rows rebuilt online for these
            units = np.empty(len(requests), dtype=np.float32)
            plain = np.ones(len(requests), dtype=bool)
            plain[overridden] = False
            if plain.any():
                units[plain] = np.where(zero[plain], 0.0, s.predict(s.array[rows[plain]]))
            units[overridden], zero[overridden] = _what_if(
                s, [requests[i] for i in overridden], [prefixes[i] for i in overridden], batch)
        if s.bounds is None:
            intervals = repeat((None, None, None))
        else:
            level = s.bounds.calibration.level
            low, high = s.bounds(units, s.horizon_array[rows], zero)
            intervals = ((float(lo), float(hi), level) for lo, hi in zip(low, high, strict=True))
        # model_construct: every value is ours, already typed; validating 10k responses costs
        return [Forecast.model_construct(
            store_id=r.store_id, item_id=r.item_id, date=r.date, units=float(u),
            model_version=s.model_version, model_tag=s.model_tag,
            features_origin=s.origins[row], features_version=s.sources.features_version,
            horizon=s.horizons[row], lower=lo, upper=hi, interval_level=level)
            for r, u, row, (lo, hi, level) in zip(requests, units, rows, intervals,
                                                  strict=False)]


def _what_if(s: Serving, requests: list[ForecastRequest], prefixes: list[str],
             scenario: bool) -> tuple[np.ndarray, np.ndarray]:
    """Units for requests with overrides (price, promotion, declared covariates), and which of
    them the dataset's rule forces to 0: their rows rebuilt by the training transforms from the
    online state, all in one call. In a batch (`scenario`), the overrides of one series are
    one plan over its requested days."""
    if s.online is None:
        first = requests[0]
        given = ("price" if first.price is not None else
                 "on_promo" if first.on_promo is not None else "covariates")
        raise UnprocessableEntity(
            f"{prefixes[0]}{given}: overrides need the online feature state, and "
            f"{s.online_missing}: materialize `online_features`, or omit them to get the "
            "forecast of the plan as known at the origin")
    types = override_types(s.online.spec)
    for request, prefix in zip(requests, prefixes, strict=True):
        for name, value in (request.covariates or {}).items():
            if name not in types or name in ("price", "on_promo"):
                raise UnprocessableEntity(
                    f"{prefix}covariates.{name}: not a declared covariate (declared: "
                    f"{', '.join(s.online.spec.covariates) or 'none'})")
            if types[name] == pl.Float64 and not isinstance(value, int | float):
                raise UnprocessableEntity(f"{prefix}covariates.{name}: {value!r} is not a "
                                          "number, and this covariate is numeric")
    frame = pl.DataFrame(
        [(r.store_id, r.item_id, r.date, r.price, r.on_promo,
          *[(r.covariates or {}).get(c) for c in types if c not in ("price", "on_promo")])
         for r in requests],
        schema={"store_id": pl.Utf8, "item_id": pl.Utf8, "date": pl.Date,
                **{c: (pl.Utf8 if t == pl.Utf8 else pl.Float64) for c, t in types.items()}},
        orient="row", strict=False)
    try:
        features = request_features(s.online, frame, scenario=scenario)
    except RequestError as error:  # the snapshot knew the row: the two disagree
        raise NotFound(f"{prefixes[error.index]}{error.field}: {error}") from error
    units = s.predict(to_array(features, s.columns, s.levels))
    forced = features.get_column("forced_zero").fill_null(False).to_numpy()
    return np.where(forced, 0.0, units), forced


def _row(s: Serving, req: ForecastRequest, prefix: str) -> int:
    row = s.row_of.get((req.store_id, req.item_id, req.date))
    if row is not None:
        return row
    at = f"in the feature snapshot at origin {s.origin}"
    if req.store_id not in s.stores:
        raise NotFound(f"{prefix}store_id: unknown store {req.store_id!r} {at}")
    if req.item_id not in s.items:
        raise NotFound(f"{prefix}item_id: unknown item {req.item_id!r} {at}")
    if (req.store_id, req.item_id) not in s.series:
        raise NotFound(f"{prefix}item_id: no active series store_id={req.store_id!r} "
                       f"item_id={req.item_id!r} {at}")
    step = "" if s.info.features.period_days == 1 else f", every {s.info.features.period_days} days"
    raise UnprocessableEntity(
        f"{prefix}date: {req.date} is outside the servable horizon: valid dates are "
        f"{s.first} .. {s.last}{step} (origin {s.origin})")


_spec = functools.cache(lambda: with_real_errors(DemandForecaster.openapi_spec.asdict()))
DemandForecaster.add_asgi_middleware(
    ApiEdge, endpoints=(*(api.route for api in DemandForecaster.apis.values()), "/model"),
    model_version=lambda: bentoml.get_current_service().serving.model_version,
    openapi=lambda: with_example(_spec(), bentoml.get_current_service().serving.info.features
                                 .example_request))
