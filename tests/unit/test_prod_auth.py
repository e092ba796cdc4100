"""Serving in prod is never open by accident (issue 15): without RETAIL_ML_API_TOKEN the service
refuses to start unless RETAIL_ML_API_AUTH=off says so; outside prod nothing changes.

The rule (`api_token`), the middleware that applies it, and a real `bentoml serve` of the
service from source, which must stop before any worker with one line and no traceback.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import bentoml
import numpy as np
import pytest
import xgboost as xgb
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models import ModelStore

from bentos.demand_forecaster.middleware import (
    AUTH_ENV,
    TOKEN_ENV,
    ApiEdge,
    Message,
    OpenInProd,
    Send,
    api_token,
)
from tests.e2e.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
PROD = {"RETAIL_ML_ENV": "prod"}


@pytest.mark.parametrize(("env", "token"), [
    ({}, None),  # local: open unless a token is set, as before
    ({"RETAIL_ML_ENV": "local", TOKEN_ENV: "s3cret"}, b"s3cret"),
    ({**PROD, TOKEN_ENV: "s3cret"}, b"s3cret"),
    ({**PROD, AUTH_ENV: "off"}, None),
    ({**PROD, AUTH_ENV: " OFF "}, None),
    ({**PROD, AUTH_ENV: "off", TOKEN_ENV: "s3cret"}, b"s3cret"),  # a token set always counts
])
def test_token_rule(env: dict[str, str], token: bytes | None) -> None:
    assert api_token(env) == token


@pytest.mark.parametrize("env", [PROD, {**PROD, TOKEN_ENV: ""}, {**PROD, AUTH_ENV: "on"}])
def test_prod_without_token_refuses_naming_both_variables(env: dict[str, str]) -> None:
    with pytest.raises(OpenInProd) as refused:
        api_token(env)
    assert TOKEN_ENV in str(refused.value) and f"{AUTH_ENV}=off" in str(refused.value)


async def _ok(scope: Message, receive: Callable[[], Awaitable[Message]], send: Send) -> None:
    """The app behind the middleware: 200 to whatever gets through."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _status(edge: ApiEdge) -> int:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}"}

    scope = {"type": "http", "path": "/forecast", "method": "POST", "headers": []}
    asyncio.run(edge(scope, receive, send))
    return sent[0]["status"]


def _edge() -> ApiEdge:
    return ApiEdge(_ok, endpoints=("/forecast",), model_version=lambda: "1", openapi=dict)


def test_middleware_applies_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (TOKEN_ENV, AUTH_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RETAIL_ML_ENV", "prod")
    with pytest.raises(OpenInProd):
        _edge()
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    assert _status(_edge()) == 401  # no Authorization header
    monkeypatch.delenv(TOKEN_ENV)
    monkeypatch.setenv(AUTH_ENV, "off")
    assert _status(_edge()) == 200  # open, as asked
    monkeypatch.setenv("RETAIL_ML_ENV", "local")
    monkeypatch.delenv(AUTH_ENV)
    assert _status(_edge()) == 200  # outside prod: open unless a token is set


@pytest.fixture(scope="module")
def bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A model store holding a `demand_forecaster` model: `bentoml serve` resolves the
    service's model before its deployment hooks run."""
    home = tmp_path_factory.mktemp("prod_auth") / "bentoml"
    x = np.random.default_rng(0).random((50, 2))
    booster = xgb.train({}, xgb.DMatrix(x, label=x[:, 0]), num_boost_round=2)
    BentoMLContainer.model_store.set(ModelStore(str(home / "models")))
    try:
        bentoml.xgboost.save_model("demand_forecaster", booster)
    finally:
        BentoMLContainer.model_store.reset()
    yield home


def test_bentoml_serve_in_prod_without_token_stops_with_one_line(bentoml_home: Path,
                                                                  tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, AUTH_ENV)}
    env |= {**PROD, "BENTOML_HOME": str(bentoml_home), "BENTOML_DO_NOT_TRACK": "true",
            "RETAIL_ML_HOME": str(tmp_path / "home")}
    bentoml_cli = Path(sys.executable).parent / "bentoml"
    done = subprocess.run([str(bentoml_cli), "serve",
                           "bentos.demand_forecaster.service:DemandForecaster",
                           "--port", str(free_port())],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    (line,) = [ln for ln in output.splitlines() if TOKEN_ENV in ln]
    assert f"{AUTH_ENV}=off" in line
