"""The registry's aliases: absent reads as None, a failing registry fails closed."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from ml_assets.training.registry import alias_version, registry_client
from resources.tracking import REGISTERED_MODEL


def test_no_model_and_no_alias_read_as_none(tmp_path: Path) -> None:
    client = registry_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert alias_version(client, "champion") is None  # no registered model yet
    client.create_registered_model(REGISTERED_MODEL)
    assert alias_version(client, "champion") is None  # the model, but no such alias


def test_an_unreachable_registry_raises_instead_of_reading_as_no_champion(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    client = mlflow.MlflowClient(tracking_uri="http://127.0.0.1:9",
                                 registry_uri="http://127.0.0.1:9")  # nothing listens on 9
    with pytest.raises(MlflowException):
        alias_version(client, "champion")
