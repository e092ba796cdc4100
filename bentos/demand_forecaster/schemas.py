"""The forecaster's HTTP contract: request and response bodies, as they appear in /docs.json."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError


class ForecastRequest(BaseModel):
    """One forecast: a series (store, item) and a date within the servable horizon."""

    # A misspelt override ("promo") must fail, not be ignored while the client believes it applied.
    model_config = ConfigDict(extra="forbid")

    # Strict where pydantic would coerce what the spec (/docs.json) says is invalid: a date-time
    # ("2025-03-01T00:00:00") or a number as the date, true or "2.5" as the price, and
    # true/false/1.0 as on_promo (its Literal matches False == 0) must be refused, not served.
    store_id: str = Field(min_length=1)
    item_id: str = Field(min_length=1)
    date: dt.date = Field(strict=True)  # a date object, or in JSON exactly YYYY-MM-DD
    price: float | None = Field(None, gt=0, allow_inf_nan=False, strict=True,
                                description="Known-in-advance price override (> 0).")
    on_promo: Literal[0, 1] | None = Field(None, description="Promotion override (0 or 1).")
    covariates: dict[str, float | str] | None = Field(
        None, description="Overrides of the dataset's declared known-in-advance covariates, "
                          "by name (e.g. {\"Open\": 0}); GET /model lists them.")

    @property
    def overridden(self) -> bool:
        return self.price is not None or self.on_promo is not None or bool(self.covariates)

    @field_validator("on_promo", mode="before")
    @classmethod
    def _integer_flag(cls, value: object) -> object:
        if isinstance(value, bool | float):
            raise PydanticCustomError("literal_error", "Input should be 0 or 1")
        return value


class Forecast(BaseModel):
    store_id: str
    item_id: str
    date: dt.date
    units: float
    model_version: str  # the MLflow registry version that answered
    model_tag: str
    features_origin: dt.date  # the last landed day the features reach
    features_version: int  # the Delta version of the feature snapshot that answered
    horizon: int  # periods ahead of the origin
    # The prediction interval: a share `interval_level` of actuals (0.8: from P10 to P90) fell
    # inside such intervals in the model's backtest. Always present; null when the model has
    # no interval calibration (GET /model says why).
    lower: float | None
    upper: float | None
    interval_level: float | None


class SeriesRef(BaseModel):
    store_id: str
    item_id: str


class SnapshotInfo(BaseModel):
    table: str
    version: int  # Delta table version
    origin: dt.date
    first_date: dt.date  # the servable dates: first_date .. last_date, every period_days
    last_date: dt.date
    period_days: int
    series: int
    rows: int
    sample_series: list[SeriesRef] = []  # a few valid (store_id, item_id) pairs
    # a servable request (the API docs' example): a sample series, the second servable date
    example_request: ForecastRequest | None = None


class Reload(BaseModel):
    """The hot swap: how often the server looks for a new champion or feature snapshot, and
    how that went since it started."""

    interval_seconds: float  # 0: off
    swaps: int
    failures: int
    last_error: str | None  # of the last failed reload; None once a reload succeeds


class IntervalInfo(BaseModel):
    """The prediction intervals the model serves, and how they held in its backtest."""

    level: float | None  # the central share of actuals an interval holds; None: no intervals
    coverage: dict[str, float] = {}  # share of actuals inside in the backtest, by horizon bucket
    measured: str | None = None  # how the coverage was measured (leave one origin out)
    method: str | None = None
    missing: str | None = None  # why forecasts carry no interval, when they do not


class ModelInfo(BaseModel):
    model_version: str  # MLflow registry version of the model answering now
    model_tag: str
    mlflow_run_id: str | None
    created_at: dt.datetime
    metrics: dict[str, float]  # the model's `metric_*` labels
    training_data: dict[str, int]  # Delta versions of the tables it learnt from (`delta_*`)
    feature_columns: list[str]
    kind: str = "xgboost"  # or the baseline it forecasts with (seasonal_naive, moving_average_28)
    covariates: list[str] = []  # the overridable known-in-advance covariates
    intervals: IntervalInfo | None = None
    features: SnapshotInfo
    loaded_at: dt.datetime | None = None  # when this model and snapshot started answering
    reload: Reload | None = None
