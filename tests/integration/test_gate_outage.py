"""Fail closed (issue 15): the MLflow server goes down in the middle of a retrain.

A real `mlflow server` (sqlite backend, artifacts in a temporary folder, one worker, on a free
port) is the platform's tracking server and registry (RETAIL_ML_MLFLOW_URI). The small world
gets a first champion through the retrain assets. Then the real `retrain` job runs again: its
`demand_model` registers a second challenger, and the server is stopped when `model_evaluation`
starts. The evaluation's registry lookup must fail the step (read as "no champion", it would
judge the challenger against the baselines alone and let it through the gate), nothing
downstream runs, and `champion` alone fails too while the server is down. Restarted on the same
port and backend, the registry shows that nothing moved: `champion` is still the first
version, and the second carries no gate verdict.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from mlflow.exceptions import MlflowException

from ml_assets.training.registry import alias_version, registry_client
from resources.tracking import REGISTERED_MODEL
from tests.conftest import featured_world
from tests.e2e.servers import free_port

BIN = Path(sys.executable).parent
CHAIN = ["training_set", "demand_model", "model_evaluation", "champion"]
# one objective and few rounds: the gate's reaction to an outage is under test, not the model
TRAINING = {"ops": {"demand_model": {"config": {"max_rounds": 200,
                                                "objectives": ["tweedie"]}}}}


class MlflowServer:
    """`mlflow server` on a fixed port and sqlite backend, which can be stopped and restarted."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True)
        self.port = free_port()
        self.db, self.artifacts, self.log = root / "mlflow.db", root / "artifacts", root / "log"
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1", "--backend-store-uri", f"sqlite:///{self.db}",
                 "--artifacts-destination", str(self.artifacts)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                # its job runner serves GenAI jobs, not the registry
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # e.g. the port was taken meanwhile
                pytest.fail(f"mlflow server exited with {self.proc.returncode}:\n"
                            f"{self.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"mlflow server not healthy in {timeout} s:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        """Terminates its process group (the CLI and its uvicorn worker); returns once nothing
        listens on the port any more."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        except ProcessLookupError:  # already gone
            proc.poll()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"port {self.port} still answers after the server stopped")


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path / "mlflow_server")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _steps(result: dg.ExecuteInProcessResult, kind: str) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type_value == kind}


def _failure_text(result: dg.ExecuteInProcessResult, step: str) -> str:
    """The step failure's error with its causes: messages and stacks."""
    (failure,) = [e for e in result.all_events if e.is_step_failure and e.step_key == step]
    error, parts = failure.step_failure_data.error, []
    while error is not None:
        parts += [error.cls_name or "", error.message, *error.stack]
        error = error.cause
    return "\n".join(parts)


def test_registry_outage_mid_retrain_fails_closed(tmp_path: Path, mlflow_server: MlflowServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    uris = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    world = featured_world(tmp_path / "home", RETAIL_ML_MLFLOW_URI=mlflow_server.uri)
    try:
        assert world.result.success
        assert world.defs.resources["platform"].get().mlflow_tracking_uri == mlflow_server.uri
        client = registry_client(mlflow_server.uri)
        retrain = world.defs.resolve_job_def("retrain")

        # a first champion (the XGBoost model, or the best baseline if it lost to one)
        first = retrain.execute_in_process(
            instance=world.instance, run_config=TRAINING, raise_on_error=False,
            asset_selection=[dg.AssetKey(a) for a in CHAIN], tags={"retail_ml/trigger": "first"})
        mlflow.end_run()
        assert first.success
        champion = alias_version(client, "champion")
        assert champion is not None
        assert client.get_model_version(REGISTERED_MODEL, champion).tags["gate"] == "passed"
        registered = len(client.search_model_versions(f"name='{REGISTERED_MODEL}'"))

        # the weekly retrain again; the server goes down as model_evaluation starts
        run_id, stopped = str(uuid.uuid4()), []

        def stop_at_evaluation(entry: dg.EventLogEntry) -> None:
            """Called in the run's thread as each event is stored: the step's code runs only
            after its STEP_START returns, so the server is down before the evaluation begins."""
            event = entry.dagster_event
            if (event is not None and event.event_type == dg.DagsterEventType.STEP_START
                    and entry.step_key == "model_evaluation"):
                # fail fast: no retries, a short timeout
                monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
                monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
                try:
                    mlflow_server.stop()
                except Exception as exc:  # noqa: BLE001 - reported below, not in Dagster's log
                    stopped.append(exc)
                    return
                stopped.append(time.monotonic())

        world.instance.add_event_listener(run_id, stop_at_evaluation)
        started = time.monotonic()
        outage = retrain.execute_in_process(
            instance=world.instance, run_id=run_id, run_config=TRAINING, raise_on_error=False,
            tags={"retail_ml/trigger": "outage"})
        assert stopped, "model_evaluation never started"
        assert isinstance(stopped[0], float), f"stopping the server failed: {stopped[0]!r}"
        assert not outage.success
        assert {"training_set", "demand_model"} <= _steps(outage, "STEP_SUCCESS")
        (model,) = outage.asset_materializations_for_node("demand_model")
        second = str(model.metadata["model_version"].value)
        assert second != champion
        # the evaluation failed on the registry lookup (not skipped, not succeeded) ...
        assert "model_evaluation" in _steps(outage, "STEP_FAILURE")
        error = _failure_text(outage, "model_evaluation")
        assert "MlflowException" in error and "alias_version" in error, error
        assert f"127.0.0.1:{mlflow_server.port}" in error and "Connection refused" in error, error
        # ... the gate never passed on it, and nothing downstream of it ran
        assert not [c for c in outage.get_asset_check_evaluations() if c.passed]
        assert not {"champion", "demand_forecaster_bento"} & (
            _steps(outage, "STEP_START") | _steps(outage, "STEP_SUCCESS"))
        print(f"outage run: {stopped[0] - started:.1f} s to model_evaluation, "
              f"{time.monotonic() - stopped[0]:.1f} s from the stop to the run's end")

        # the promotion step on its own, with the server still down: it fails, too
        alone = dg.materialize([world.defs.get_assets_def("champion")],
                               resources=world.defs.resources, instance=world.instance,
                               raise_on_error=False)
        assert not alone.success
        error = _failure_text(alone, "champion")
        assert "MlflowException" in error and "alias_version" in error, error
        with pytest.raises(MlflowException, match="Connection refused"):
            alias_version(client, "champion")  # the outage is still on

        # back on the same port and backend: nothing moved
        mlflow_server.start()
        monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
        monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT")
        mlflow.end_run()  # the outage run's MLflow run, which could not be ended then
        assert {a: alias_version(client, a) for a in ("champion", "challenger", "previous")} == {
            "champion": champion, "challenger": second, "previous": None}
        tags = client.get_model_version(REGISTERED_MODEL, second).tags
        assert tags.get("gate") != "passed"
        assert not {"gate", "gate_reason", "promoted_at"} & set(tags), tags
        assert tags["trigger"] == "outage"  # it is the outage run's challenger
        # the only version registered since is the second challenger (no baseline made
        # champion in the dark)
        assert len(client.search_model_versions(f"name='{REGISTERED_MODEL}'")) == registered + 1
    finally:
        try:
            mlflow.end_run()
        except MlflowException:
            pass  # the server is down: the test already failed
        mlflow.set_tracking_uri(uris[0])
        mlflow.set_registry_uri(uris[1])
        world.instance.dispose()
