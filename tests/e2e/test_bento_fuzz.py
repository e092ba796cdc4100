"""Property-based fuzzing of the OpenAPI spec the service serves (/docs.json), over HTTP against
`bentoml serve` of the session's Bento: no server error, every response as documented.

The short, deterministic run of `benchmarks/fuzz_api.py` (fixed seed, no example database, a
bounded number of examples per operation; `make fuzz` runs the long one against any server, and
`--token` fuzzes a server with auth on). The server has the online feature state published, so
generated bodies with real keys and random price / on_promo overrides reach the model through the
what-if path. The spec's auth as configured (token required or not) is checked without a server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from benchmarks.fuzz_api import Key, fuzz
from bentos.demand_forecaster.middleware import TOKEN_ENV
from bentos.demand_forecaster.openapi import with_real_errors
from ml_assets.forecasting.assets import horizon_inputs
from ml_assets.forecasting.online import build_state, save_state
from resources.delta import DeltaStore
from resources.settings import load_settings
from tests.e2e.bento_world import BentoWorld, bento_server
from tests.e2e.servers import wait_for_bento

pytestmark = pytest.mark.timeout(420)
SEED = 0
EXAMPLES = 25  # per operation and phase


def _what_if_home(world: BentoWorld, home: Path) -> dict[str, str]:
    """A home beside the world's, reading its Delta tables, with the online feature state
    published (as `online_features` does): the world's own home has none, as the service tests
    expect."""
    home.mkdir(parents=True)
    (home / "delta").symlink_to(world.home / "delta", target_is_directory=True)
    env = {**world.env, "RETAIL_ML_HOME": str(home)}
    settings = load_settings(env)
    origin, spec, inputs = horizon_inputs(settings, DeltaStore(root=str(settings.delta_root)))
    save_state(build_state(inputs.pop("sales"), origin, spec, **inputs), settings.online_dir)
    return env


@pytest.fixture(scope="module")
def served(bento_world: BentoWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    w, tmp = bento_world, tmp_path_factory.mktemp("fuzz")
    env = _what_if_home(w, tmp / "home")
    with bento_server(w.built["bento_tag"], env, tmp, tmp / "serve.log") as (url, proc):
        wait_for_bento(url, proc, tmp / "serve.log")
        keys: list[Key] = sorted((s, i, d.isoformat()) for s, i, d in w.snapshot.select(
            "store_id", "item_id", "date").iter_rows())
        yield {"url": url, "keys": keys, "log": tmp / "serve.log"}


def test_fuzzing_the_spec_finds_no_server_error_and_no_undocumented_response(
        served: dict) -> None:
    # the what-if path is live: generated overrides on real keys are answered, not refused
    plain = dict(zip(("store_id", "item_id", "date"), served["keys"][0], strict=True))
    resp = requests.post(f"{served['url']}/forecast", json={**plain, "price": 1e300,
                                                            "on_promo": 1}, timeout=60)
    assert resp.status_code == 200, resp.text

    report = fuzz(served["url"], examples=EXAMPLES, seed=SEED, keys=served["keys"],
                  from_responses=False)  # the same requests whatever the build answers
    print(report.summary())  # with -s, or on failure
    assert report.ok, report.summary()
    assert report.server_errors == 0 and "Traceback" not in served["log"].read_text()
    statuses = report.statuses
    # the 200 bodies were checked against their schema too, not only the errors'
    for operation in ("POST /forecast", "POST /forecast_batch", "GET /model"):
        assert statuses[operation][200] > 0, (operation, statuses[operation])
    # client mistakes were generated, and every one got its 4xx
    for status in (400, 404, 405, 415, 422):
        assert report.by_status[status] > 0, (status, report.by_status)
    for check in ("not_a_server_error", "response_schema_conformance", "status_code_conformance",
                  "negative_data_rejection", "positive_data_acceptance", "no_traceback",
                  "valid_data_passes_validation"):
        assert report.checks[check] > 0, (check, report.checks)
    assert report.requests > 300


def _bentoml_spec() -> dict:
    """The parts of BentoML's spec that `with_real_errors` rewrites."""
    def operation(body: bool) -> dict:
        return {"responses": {200: {"description": "OK", "content": {"application/json": {
                    "schema": {}}}}, "500": {"description": "?"}},
                **({"requestBody": {"content": {"application/json": {"schema": {}}}}}
                   if body else {})}
    return {"openapi": "3.0.2", "components": {"schemas": {}}, "paths": {
        "/forecast": {"post": operation(True)}, "/forecast_batch": {"post": operation(True)},
        "/model": {"get": operation(False)}, "/livez": {"get": operation(False)}}}


@pytest.mark.parametrize("token", ["", "s3cret"])
def test_the_spec_says_what_the_server_enforces(monkeypatch: pytest.MonkeyPatch,
                                                token: str) -> None:
    monkeypatch.setenv(TOKEN_ENV, token)
    spec = with_real_errors(_bentoml_spec())
    assert spec["openapi"] == "3.1.0"  # pydantic's JSON Schema 2020-12 is OpenAPI 3.1's
    required = [{"bearer": []}] if token else None  # no locks in Swagger on open routes
    assert ("securitySchemes" in spec["components"]) == bool(token)
    for path in ("/forecast", "/forecast_batch", "/model"):
        for operation in spec["paths"][path].values():
            assert operation.get("security") == required
            assert "401" in operation["responses"] and "500" in operation["responses"]
            assert operation.get("requestBody", {"required": True})["required"] is True
    assert "security" not in spec["paths"]["/livez"]["get"]  # probes stay open
    body = spec["paths"]["/forecast"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ForecastRequest"}
    price = spec["components"]["schemas"]["ForecastRequest"]["properties"]["price"]
    assert {"type": "null"} in price["anyOf"]  # "price": null is accepted: no override
    answer = spec["paths"]["/forecast"]["post"]["responses"][200]["content"]["application/json"]
    assert answer["schema"] == {"$ref": "#/components/schemas/Forecast"}
    lower = spec["components"]["schemas"]["Forecast"]["properties"]["lower"]
    assert {"type": "null"} in lower["anyOf"]  # null: a model without interval calibration
