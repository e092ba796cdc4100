"""The settings resource: every asset reads paths and dataset options through it."""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from resources.settings import Settings, load_settings


class PlatformSettings(dg.ConfigurableResource):
    """Holds the few values that settings are built from; `get()` builds them once per process."""

    home: str
    dataset: str = "simulated"
    env: str = "local"
    today: str | None = None  # pins the clock (tests, reproductions); None = the wall clock
    promotion_margin: float = 0.01
    backtest_origins: int = 3
    interval_level: float = 0.8
    retrain_policy: str | None = None  # the retrain policy YAML; None = sensors' default
    engine: str = "polars"  # the feature engine: polars or spark
    mlflow_uri: str | None = None  # an MLflow tracking server (prod); None = sqlite under home
    delta_uri: str | None = None  # prod's object store root of the Delta tables
    online_store: str | None = None  # redis://host:port/db; None = a folder under home

    _settings: Settings | None = PrivateAttr(default=None)

    def get(self) -> Settings:
        if self._settings is None:
            environ = {"RETAIL_ML_HOME": self.home, "RETAIL_ML_DATASET": self.dataset,
                       "RETAIL_ML_ENV": self.env,
                       "RETAIL_ML_PROMOTION_MARGIN": str(self.promotion_margin),
                       "RETAIL_ML_BACKTEST_ORIGINS": str(self.backtest_origins),
                       "RETAIL_ML_INTERVAL_LEVEL": str(self.interval_level)}
            if self.today:
                environ["RETAIL_ML_TODAY"] = self.today
            if self.retrain_policy:
                environ["RETAIL_ML_RETRAIN_POLICY"] = self.retrain_policy
            environ["RETAIL_ML_ENGINE"] = self.engine
            for name, value in (("RETAIL_ML_MLFLOW_URI", self.mlflow_uri),
                                ("RETAIL_ML_DELTA_ROOT", self.delta_uri),
                                ("RETAIL_ML_ONLINE_STORE", self.online_store)):
                if value:
                    environ[name] = value
            self._settings = load_settings(environ)
        return self._settings

    @classmethod
    def from_settings(cls, settings: Settings, dataset_ref: str) -> PlatformSettings:
        return cls(home=str(settings.home), dataset=dataset_ref, env=settings.env,
                   today=settings.today.isoformat(),
                   promotion_margin=settings.promotion_margin,
                   backtest_origins=settings.backtest_origins,
                   interval_level=settings.interval_level,
                   retrain_policy=str(settings.retrain_policy) if settings.retrain_policy
                   else None, engine=settings.engine, mlflow_uri=settings.mlflow_uri,
                   delta_uri=settings.delta_uri, online_store=settings.online_store)
