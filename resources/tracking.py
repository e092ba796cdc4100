"""MLflow tracking through dagster-mlflow: one MLflow run per Dagster run.

dagster-mlflow's `MlFlow` sets (and would create) the experiment itself; with a sqlite backend
MLflow would then put artifacts under the working directory. We create the experiment first,
with its artifact location under RETAIL_ML_HOME, then hand over. Its run names say what ran,
why and when (dagster-mlflow names every run after the job), and every tag goes through
`tag_value` (MLflow stores tags as text, and `str(0.1 + 0.2)` has 17 digits).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import numbers
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

# No network at run time: MLflow 3 sends usage events unless told not to; it reads this at each
# event (mlflow/telemetry/track.py), so it holds even when MLflow was imported first.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import dagster as dg  # noqa: E402
import mlflow  # noqa: E402
from dagster_mlflow.resources import CONFIG_SCHEMA, MlFlow  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

REGISTERED_MODEL = "demand_forecaster"
TRIGGER_TAG = "retail_ml/trigger"  # a run tag: who started the run (sensor, CLI, demo)
# What MLflow's UI writes when a person picks "Machine learning" as an experiment's type: a
# model-training experiment, not a GenAI one (traces, token usage).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
SIGNIFICANT_DIGITS = 4
_DECIMAL = re.compile(r"-?\d+\.\d+(?:[eE][-+]?\d+)?")  # "0.5234189475603"; never "3.17.2", a hash


def tag_value(value: object) -> str:
    """A tag's text: a float (or a float already turned into text) to 4 significant digits;
    anything else as `str` gives it (integers, versions, hashes stay whole)."""
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        value = float(value)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{float(value):.{SIGNIFICANT_DIGITS}g}"
    return str(value)


def tag_values(tags: Mapping[str, object]) -> dict[str, str]:
    return {key: tag_value(value) for key, value in tags.items()}


def run_trigger(run: dg.DagsterRun) -> str:
    """Why a Dagster run happened: its trigger tag, else its schedule or sensor, else its job
    (an ad-hoc asset job says nothing: "manual")."""
    tags = run.tags
    if TRIGGER_TAG in tags:
        return tags[TRIGGER_TAG]
    for kind in ("schedule", "sensor"):
        if f"dagster/{kind}_name" in tags:
            return f"{kind}:{tags[f'dagster/{kind}_name']}"
    return "manual" if run.job_name.startswith("__ASSET_JOB") else run.job_name


def run_name(subject: str, trigger: str, day: dt.date) -> str:
    """`demand_model · make demo · 2026-12-04`: what ran, why, and on which day."""
    return f"{subject} · {trigger} · {day.isoformat()}"


@contextlib.contextmanager
def _sqlite_init_lock(tracking_uri: str) -> Iterator[None]:
    """Serializes the first use of a sqlite backend: under `dagster dev` the first steps of a
    run start in parallel processes, and each would create MLflow's tables at once (measured:
    'duplicate column name: step' from the racing migrations). A server backend needs none."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / ".init.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> str:
    """The experiment's id, created if missing; either way marked as model training."""
    key, kind = EXPERIMENT_KIND
    with _sqlite_init_lock(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(name)
        if found is None:
            try:
                return client.create_experiment(name, artifact_location=artifact_location,
                                                tags={key: kind})
            except MlflowException:  # created meanwhile by another process (a server backend)
                found = client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.tags.get(key) != kind:  # created before the tag was set
            client.set_experiment_tag(found.experiment_id, key, kind)
        return found.experiment_id


class Tracking(MlFlow):
    """dagster-mlflow's resource with run names that say something and rounded tags."""

    def __init__(self, context: dg.InitResourceContext) -> None:
        run = context.run
        if run is None:
            raise dg.DagsterInvariantViolationError("MLflow tracking runs inside a Dagster run")
        self.trigger = run_trigger(run)
        # until an asset names it (`name_run`): the one asset selected, else the job
        keys = sorted(run.asset_selection or ())
        subject = (keys[0].to_user_string() if len(keys) == 1
                   else "assets" if run.job_name.startswith("__ASSET_JOB") else run.job_name)
        self._first_name = run_name(subject, self.trigger, dt.date.today())
        super().__init__(context)

    def _set_active_run(self, run_id: str | None = None) -> None:
        # A later step (its own process under `dagster dev`) resumes the run: MLflow would
        # rename it when given a name, undoing `name_run`.
        self.run_name = None if run_id else self._first_name
        super()._set_active_run(run_id=run_id)

    def name_run(self, subject: str, day: dt.date) -> str:
        """Names the active run after `subject` (the asset whose run it is), its trigger and
        `day` (the platform's today)."""
        name = run_name(subject, self.trigger, day)
        run = mlflow.active_run()
        if run is not None:
            self.tracking_client.update_run(run.info.run_id, name=name)
        return name

    @staticmethod
    def set_tags(tags: Mapping[str, object]) -> None:
        mlflow.set_tags(tag_values(tags))

    @staticmethod
    def set_tag(key: str, value: object) -> None:
        mlflow.set_tag(key, tag_value(value))


@dg.resource(config_schema={**CONFIG_SCHEMA,
                            "artifact_location": dg.Field(dg.Noneable(str), default_value=None)},
             description="dagster-mlflow's tracking resource, with the experiment's artifact "
                         "location set first")
def mlflow_tracking(init_context: dg.InitResourceContext) -> Tracking:
    config = init_context.resource_config
    ensure_experiment(config["mlflow_tracking_uri"], config["experiment_name"],
                      config.get("artifact_location"))
    return Tracking(init_context)
