"""The online demand forecaster: (store, item, date) in, the batch job's forecast out.

Requests are answered from the latest forecast feature snapshot (gold/forecast_features: the
rows of the next horizon after the last landed day, built by the training code), scored with
the same `to_matrix` + `predict` as the batch job, so online and batch forecasts agree.
"""

from __future__ import annotations

import datetime as dt

import bentoml
import polars as pl
from bentoml.exceptions import InvalidArgument, NotFound
from pydantic import BaseModel

from ml_assets.training.dataset import Columns, to_matrix
from ml_assets.training.model import predict
from resources.settings import load_settings

FEATURES_TABLE = "gold/forecast_features"
# The build pins the model version as a Bento argument: outside a container, BentoML resolves
# "latest" against the whole local model store at serve time, so serving an older Bento (a
# rollback) would otherwise load the newest model.
MODEL_TAG = getattr(bentoml.use_arguments(), "model_tag", "demand_forecaster:latest")


class ForecastRequest(BaseModel):
    store_id: str
    item_id: str
    date: dt.date


class Forecast(BaseModel):
    store_id: str
    item_id: str
    date: dt.date
    units: float
    model_version: str  # the MLflow registry version the Bento was built from
    model_tag: str
    features_origin: dt.date  # the last landed day the features reach
    horizon: int  # periods ahead of the origin


@bentoml.service(name="demand_forecaster", traffic={"timeout": 30})
class DemandForecaster:
    # Declared on the class so that the Bento records (and exports) the model.
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        model = self.model_ref
        self.booster = bentoml.xgboost.load_model(model)
        meta = model.info.metadata
        self.columns = Columns(list(meta["numeric"]), list(meta["categorical"]))
        self.levels = {c: list(v) for c, v in meta["category_levels"].items()}
        self.model_tag = str(model.tag)
        self.model_version = model.info.labels.get("mlflow_version", "")

        settings = load_settings()
        self.features = pl.read_delta(str(settings.delta_root / FEATURES_TABLE))
        if self.features.height == 0:
            raise RuntimeError(f"{FEATURES_TABLE} is empty: run the forecast features first")
        keys = self.features.select("store_id", "item_id", "date").rows()
        self.row_of = {key: i for i, key in enumerate(keys)}
        self.series = {(store, item) for store, item, _ in keys}
        self.origin: dt.date = self.features.get_column("origin").max()
        self.first: dt.date = self.features.get_column("date").min()
        self.last: dt.date = self.features.get_column("date").max()
        self.period_days = settings.dataset.period_days

    def _row(self, req: ForecastRequest) -> int:
        row = self.row_of.get((req.store_id, req.item_id, req.date))
        if row is not None:
            return row
        if (req.store_id, req.item_id) not in self.series:
            raise NotFound(f"no active series store_id={req.store_id!r} item_id={req.item_id!r} "
                           f"in the feature snapshot at origin {self.origin}")
        step = "" if self.period_days == 1 else f", every {self.period_days} days"
        raise InvalidArgument(f"date {req.date} is outside the forecast horizon: valid dates "
                              f"are {self.first} .. {self.last}{step} (origin {self.origin})")

    def _forecast(self, requests: list[ForecastRequest]) -> list[Forecast]:
        if not requests:
            return []
        rows = self.features[[self._row(r) for r in requests]]
        units = predict(self.booster, to_matrix(rows, self.columns, self.levels))
        return [Forecast(**req.model_dump(), units=float(u), model_version=self.model_version,
                         model_tag=self.model_tag, features_origin=origin, horizon=horizon)
                for req, u, origin, horizon in zip(requests, units, rows.get_column("origin"),
                                                   rows.get_column("horizon"), strict=True)]

    @bentoml.api
    def forecast(self, store_id: str, item_id: str, date: dt.date) -> Forecast:
        """Units forecast for one store, item and date within the current horizon."""
        return self._forecast([ForecastRequest(store_id=store_id, item_id=item_id,
                                               date=date)])[0]

    @bentoml.api
    def forecast_batch(self, requests: list[ForecastRequest]) -> list[Forecast]:
        """Many forecasts scored in one call; any invalid request fails the whole batch."""
        return self._forecast(requests)
