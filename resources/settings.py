"""Typed settings, built from the environment and the dataset YAML when resources are built.

Nothing here runs at import: `load_settings()` is called by the Definitions factory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CONTRACT_REQUIRED = ("date", "store_id", "item_id", "units_sold")
CONTRACT_OPTIONAL = ("price", "on_promo")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Covariate(_Strict):
    """A column known in advance (open/closed, holiday flag...), a feature at the target date."""

    name: str
    column: str | None = None  # source column; defaults to `name`
    type: Literal["numeric", "categorical"] = "numeric"
    # The value a future row takes where the plan has none (e.g. Open: 1). Without it such a
    # value stays missing, which the model has seen only where the history had gaps.
    default: int | float | str | None = None

    @property
    def source(self) -> str:
        return self.column or self.name


class FileSource(_Strict):
    path: str  # a file or a glob; relative paths resolve against the YAML's folder
    format: Literal["csv", "parquet"] | None = None  # inferred from the extension when omitted
    columns: dict[str, str] = Field(default_factory=dict)  # contract name -> source column
    constants: dict[str, str] = Field(default_factory=dict)  # contract name -> constant value
    date_format: str | None = None  # strftime format; ISO dates are parsed without it
    separator: str = ","

    def file_format(self, path: Path) -> str:
        return self.format or ("parquet" if path.suffix.lower() == ".parquet" else "csv")

    def source_column(self, contract_name: str) -> str:
        return self.columns.get(contract_name, contract_name)


class SimulationConfig(_Strict):
    seed: int = 7
    n_stores: int = 20
    n_items: int = 100
    popularity_wander: float = Field(0.2, ge=0, le=1)  # sd of each item's weekly log-level
    history_days: int = 730
    # The simulated history ends this many days before today (0: yesterday, so the champion
    # forecasts from today on). `retail-ml simulate` then moves the world's own clock forward.
    history_end_offset_days: int = Field(0, ge=0)
    start_date: dt.date | None = None  # pins the world in time (tests); default: derived from today

    def resolved_start(self, today: dt.date) -> dt.date:
        if self.start_date is not None:
            return self.start_date
        return today - dt.timedelta(days=self.history_end_offset_days + self.history_days)


class DatasetConfig(_Strict):
    name: str
    frequency: Literal["daily", "weekly"] = "daily"
    horizon: int | None = None  # in periods; default 28 days or 8 weeks
    sales: FileSource
    covariates: list[Covariate] = Field(default_factory=list)
    stores: FileSource | None = None
    items: FileSource | None = None
    calendar: FileSource | None = None
    # The known future: rows of on_promo, price and the covariates for dates after the last
    # landed day, keyed by (store, item), by store alone or by date alone (e.g. Kaggle's
    # test.csv). Deliveries accumulate; a later one overrides an earlier one for the same key.
    plan: FileSource | None = None
    # Rows forced to zero: every named covariate equals its value (e.g. {Open: 0}). They are
    # forecast as exactly 0, left out of training and of the metrics.
    zero_when: dict[str, int | float | str] = Field(default_factory=dict)
    negative_units: Literal["quarantine", "clip", "keep"] = "quarantine"
    max_quarantine_share: float = 0.05
    freshness_periods: int = 2  # the latest landed period may lag its expected value by this much
    # How far back the model trains (periods before the validation window); None = the default
    # below. A longer window on the default world gained 0.001 WAPE and cost 6x the time.
    training_window: int | None = Field(default=None, ge=1)
    start_date: dt.date | None = None  # first day of data; inferred from the files when omitted
    end_date: dt.date | None = None  # last day of a historical dataset; None = bounded by the clock
    simulation: SimulationConfig | None = None

    @field_validator("horizon")
    @classmethod
    def _positive_horizon(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("horizon must be >= 1 period")
        return v

    @model_validator(mode="after")
    def _known_names(self) -> DatasetConfig:
        names = {c.name for c in self.covariates}
        unknown = [k for k in self.zero_when if k not in names]
        if unknown:
            raise ValueError(f"zero_when names {unknown}, which are not declared covariates "
                             f"({sorted(names) or 'none declared'})")
        return self

    @property
    def period_days(self) -> int:
        return 1 if self.frequency == "daily" else 7

    @property
    def defaults(self) -> dict[str, int | float | str]:
        """Covariate name -> the value a future row takes where the plan gives none."""
        return {c.name: c.default for c in self.covariates if c.default is not None}

    @property
    def horizon_periods(self) -> int:
        return self.horizon or (28 if self.frequency == "daily" else 8)

    @property
    def training_window_periods(self) -> int:
        return self.training_window or (392 if self.frequency == "daily" else 156)

    @property
    def season_periods(self) -> int:
        return 7 if self.frequency == "daily" else 52


class Settings(_Strict):
    env: Literal["local", "prod"] = "local"
    home: Path
    dataset: DatasetConfig
    engine: Literal["polars", "spark"] = "polars"
    today: dt.date  # the clock's date, fixed once so one load sees one day
    # wall: the machine's date; pinned: RETAIL_ML_TODAY; world: the simulated world's own clock
    # (the day after its last landed day), which `retail-ml simulate` moves forward.
    clock: Literal["wall", "pinned", "world"] = "wall"
    # The promotion gate: a challenger must beat the champion's backtest WAPE by this fraction.
    promotion_margin: float = Field(default=0.01, ge=0.0, lt=1.0)
    backtest_origins: int = Field(default=3, ge=1)
    # Prediction intervals: the central share of actuals each forecast's [lower, upper]
    # should hold (0.8: P10 to P90), calibrated on the backtest's residuals.
    interval_level: float = Field(default=0.8, gt=0.0, lt=1.0)
    retrain_policy: Path | None = None  # the retrain policy YAML; None = the sensors' default
    # An MLflow tracking server (prod); None = the sqlite backend under `home`.
    mlflow_uri: str | None = None
    # The Delta tables' object store root (prod's RETAIL_ML_DELTA_ROOT); None = `delta_root`.
    delta_uri: str | None = None
    # Where the online feature state is published: redis://host:port/db; None = `online_dir`.
    online_store: str | None = None
    # The spark engine's session: `local[*]` on one machine, the cluster's master URL in prod.
    spark_master: str = "local[*]"
    spark_shuffle_partitions: int = Field(default=8, ge=1)
    spark_driver_memory: str = "4g"  # local mode: the driver is the executor too

    @field_validator("online_store")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"RETAIL_ML_ONLINE_STORE={url!r}: expected redis://host:port/db")
        if parts.password:  # the settings are shown in the Dagster UI
            raise ValueError("RETAIL_ML_ONLINE_STORE holds a password: put it in "
                             "RETAIL_ML_ONLINE_STORE_PASSWORD")
        return url

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def delta_root(self) -> Path:
        return self.home / "delta"

    def delta_table(self, table: str) -> str:
        """Where one Delta table lives, for readers outside the Dagster resources (the
        forecaster, `retail-ml reproduce`): on the object store in prod, else under home."""
        if self.delta_uri:
            return f"{self.delta_uri.rstrip('/')}/{table}"
        return str(self.delta_root / table)

    @property
    def online_dir(self) -> Path:
        return self.home / "online"

    @property
    def serving_dir(self) -> Path:
        """The champion pointer the running forecaster follows (ml_assets/deployment/pointer)."""
        return self.home / "serving"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"


WORLD_FILE = "world.json"  # the simulated world's first day and clock, beside its landed files


def world_clock(home: Path) -> dt.date | None:
    """The simulated world's today (the day after its last landed day), once it has landed."""
    path = home / "landing" / WORLD_FILE
    if not path.exists():
        return None
    today = json.loads(path.read_text()).get("today")
    return dt.date.fromisoformat(today) if today else None


def simulated_dataset(home: Path, simulation: SimulationConfig | None = None) -> DatasetConfig:
    """The built-in world: the simulator writes the raw contract under landing/."""
    landing = home / "landing"
    return DatasetConfig(
        name="simulated",
        frequency="daily",
        horizon=28,
        sales=FileSource(path=str(landing / "sales" / "sales_*.csv"), format="csv"),
        plan=FileSource(path=str(landing / "plan" / "plan_*.csv"), format="csv"),
        covariates=[Covariate(name="open", type="numeric", default=1)],
        zero_when={"open": 0},
        stores=FileSource(path=str(landing / "stores.csv")),
        items=FileSource(path=str(landing / "items.csv")),
        calendar=FileSource(path=str(landing / "calendar.csv")),
        simulation=simulation or SimulationConfig(),
    )


def load_dataset(path: Path, home: Path) -> DatasetConfig:
    """Reads a dataset YAML; relative file paths resolve against the YAML's own folder."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"RETAIL_ML_DATASET points to {path}, which does not exist") \
            from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    if raw.get("source") == "simulated":
        return simulated_dataset(home, SimulationConfig(**(raw.get("simulation") or {})))
    for key in ("sales", "plan", "stores", "items", "calendar"):
        block = raw.get(key)
        if isinstance(block, dict) and "path" in block and not Path(block["path"]).is_absolute():
            block["path"] = str((path.parent / block["path"]).resolve())
    try:
        return DatasetConfig(**raw)
    except Exception as exc:  # pydantic's message names the field; add the file
        raise ValueError(f"{path}: invalid dataset config:\n{exc}") from exc


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    home = Path(env.get("RETAIL_ML_HOME", "./.retail_ml")).expanduser().resolve()
    dataset_ref = env.get("RETAIL_ML_DATASET", "simulated")
    if dataset_ref in ("", "simulated"):
        dataset = simulated_dataset(home)
    else:
        dataset = load_dataset(Path(dataset_ref).expanduser().resolve(), home)
    pinned = env.get("RETAIL_ML_TODAY")
    world = None if pinned or dataset.simulation is None else world_clock(home)
    today = dt.date.fromisoformat(pinned) if pinned else world or dt.date.today()
    prod = env.get("RETAIL_ML_ENV") == "prod"
    return Settings(
        env=env.get("RETAIL_ML_ENV", "local"),
        home=home,
        dataset=dataset,
        # Production computes features on Spark unless told otherwise.
        engine=env.get("RETAIL_ML_ENGINE") or ("spark" if prod else "polars"),
        today=today,
        clock="pinned" if pinned else "world" if world else "wall",
        promotion_margin=env.get("RETAIL_ML_PROMOTION_MARGIN", 0.01),
        backtest_origins=env.get("RETAIL_ML_BACKTEST_ORIGINS", 3),
        interval_level=env.get("RETAIL_ML_INTERVAL_LEVEL", 0.8),
        retrain_policy=env.get("RETAIL_ML_RETRAIN_POLICY") or None,
        spark_master=env.get("RETAIL_ML_SPARK_MASTER") or "local[*]",
        spark_shuffle_partitions=env.get("RETAIL_ML_SPARK_SHUFFLE_PARTITIONS") or 8,
        spark_driver_memory=env.get("RETAIL_ML_SPARK_DRIVER_MEMORY") or "4g",
        # MLFLOW_TRACKING_URI counts in prod only: a developer's global one must not move a
        # local home's registry to a server.
        mlflow_uri=env.get("RETAIL_ML_MLFLOW_URI")
        or (env.get("MLFLOW_TRACKING_URI") if prod else None) or None,
        # the same variable the prod resource set reads (resources/prod.py checks it there)
        delta_uri=(env.get("RETAIL_ML_DELTA_ROOT") if prod else None) or None,
        online_store=env.get("RETAIL_ML_ONLINE_STORE") or None,
    )
