"""A real Bento built by `save_and_build`, served by `bentoml serve`, called over HTTP.

The session's Bento world (tests/e2e/bento_world.py) serves its older model twice, side by side:
without auth (and a batch limit of 500) and with a bearer token (default limit).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack

import bentoml
import numpy as np
import polars as pl
import pytest
import requests

from ml_assets.evaluation.intervals import Calibration, bounds
from ml_assets.training.dataset import to_matrix
from ml_assets.training.model import predict
from tests.e2e.bento_world import BentoWorld, bento_server
from tests.e2e.servers import wait_for_bento

pytestmark = pytest.mark.timeout(420)
TOKEN = "s3cret-token"
MAX_BATCH = 500
HISTOGRAM = "demand_forecaster_request_duration_seconds"


@pytest.fixture(scope="module")
def served(bento_world: BentoWorld) -> Iterator[dict]:
    w, home = bento_world, bento_world.home
    with ExitStack() as stack:  # both start at once; then wait for both
        url, proc = stack.enter_context(bento_server(
            w.built["bento_tag"], {**w.env, "RETAIL_ML_MAX_BATCH": str(MAX_BATCH)}, home,
            home / "serve.log"))
        auth_url, auth_proc = stack.enter_context(bento_server(
            w.built["bento_tag"], {**w.env, "RETAIL_ML_API_TOKEN": TOKEN}, home,
            home / "serve-auth.log"))
        wait_for_bento(url, proc, home / "serve.log")
        wait_for_bento(auth_url, auth_proc, home / "serve-auth.log")
        with bentoml.SyncHTTPClient(url, timeout=60) as client:
            yield {"client": client, "url": url, "auth_url": auth_url, "booster": w.booster,
                   "columns": w.columns, "levels": w.levels, "snapshot": w.snapshot,
                   "origin": w.origin, "spec": w.spec, "built": w.built, "newer": w.newer,
                   "features_version": w.features_version, "labels": w.labels,
                   "intervals": Calibration.from_json(w.intervals), "log": home / "serve.log"}


def _expected(served: dict, rows: pl.DataFrame) -> np.ndarray:
    return predict(served["booster"], to_matrix(rows, served["columns"], served["levels"]))


def _intervals(served: dict, rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The intervals of the rows' forecasts by the calibration the Bento was built with."""
    return bounds(served["intervals"], _expected(served, rows), rows.get_column("horizon"),
                  rows.get_column("forced_zero").to_numpy())


def _requests(rows: pl.DataFrame) -> list[dict]:
    return [{"store_id": r["store_id"], "item_id": r["item_id"], "date": r["date"].isoformat()}
            for r in rows.iter_rows(named=True)]


def _post(served: dict, route: str, body: object, **kwargs: object) -> requests.Response:
    return requests.post(f"{served['url']}{route}", json=body, timeout=60, **kwargs)


def test_forecast_equals_batch_scoring_of_the_snapshot_row(served: dict) -> None:
    origin = served["origin"]
    row = served["snapshot"].filter(pl.col("horizon") == 3).head(1)
    store, item, date = row.select("store_id", "item_id", "date").row(0)
    answer = served["client"].forecast(store_id=store, item_id=item, date=date.isoformat())
    assert answer["units"] == pytest.approx(float(_expected(served, row)[0]), abs=1e-5)
    (low,), (high,) = _intervals(served, row)
    assert (answer["lower"], answer["upper"]) == pytest.approx((low, high), abs=1e-4)
    assert answer | {"units": None, "lower": None, "upper": None} == {
        "store_id": store, "item_id": item, "date": date.isoformat(), "units": None,
        "model_version": "7", "model_tag": served["built"]["model_tag"],
        "features_origin": origin.isoformat(), "features_version": served["features_version"],
        "horizon": 3, "lower": None, "upper": None, "interval_level": 0.8}


def test_serves_the_model_it_was_built_with_not_the_newest(served: dict) -> None:
    # a rollback serves an older Bento while a newer model sits in the same store
    assert served["newer"]["model_tag"] != served["built"]["model_tag"]
    row = served["snapshot"].row(0, named=True)
    answer = served["client"].forecast(store_id=row["store_id"], item_id=row["item_id"],
                                       date=row["date"].isoformat())
    assert (answer["model_tag"], answer["model_version"]) == (served["built"]["model_tag"], "7")


def test_batch_forecast_equals_single_forecasts_and_batch_scoring(served: dict) -> None:
    rows = served["snapshot"].sample(n=MAX_BATCH, seed=3)  # the limit itself is allowed
    answers = served["client"].forecast_batch(requests=_requests(rows))
    assert [(a["store_id"], a["item_id"], a["date"]) for a in answers] == [
        (r["store_id"], r["item_id"], r["date"]) for r in _requests(rows)]
    units = [a["units"] for a in answers]
    np.testing.assert_allclose(units, _expected(served, rows), atol=1e-5)
    # every answer carries its interval (P10 to P90), which holds the forecast
    low, high = _intervals(served, rows)
    np.testing.assert_allclose([a["lower"] for a in answers], low, atol=1e-4)
    np.testing.assert_allclose([a["upper"] for a in answers], high, atol=1e-4)
    assert all(a["lower"] <= a["units"] <= a["upper"] for a in answers)
    assert {a["interval_level"] for a in answers} == {0.8}
    singles = [served["client"].forecast(**r)["units"] for r in _requests(rows.head(60))]
    assert units[:60] == singles


def _row(served: dict, **change: object) -> dict:
    return {**_requests(served["snapshot"].head(1))[0], **change}


def _horizon(served: dict) -> str:
    first = served["origin"] + dt.timedelta(days=1)
    return f"valid dates are {first} .. {first + dt.timedelta(days=served['spec'].horizon - 1)}"


# (route, body as JSON or raw bytes, status, text the message contains, field paths in `detail`)
ERRORS = {
    "malformed JSON": ("/forecast", b'{"store_id": "S1",', 400, "malformed JSON body", None),
    "not JSON at all": ("/forecast_batch", b"requests=1", 400, "malformed JSON body", None),
    "missing field": ("/forecast", {"store_id": "S1", "item_id": "I1"}, 422, "date: Field "
                      "required", ["date"]),
    "bad date": ("/forecast", lambda s: _row(s, date="tomorrow"), 422, "date: Input should be",
                 ["date"]),
    "wrong type": ("/forecast", lambda s: _row(s, store_id=5), 422, "store_id: Input should "
                   "be a valid string", ["store_id"]),
    "unknown field": ("/forecast", lambda s: _row(s, promo=1), 422, "promo: Extra inputs",
                      ["promo"]),
    "price <= 0": ("/forecast", lambda s: _row(s, price=0), 422, "price: Input should be "
                   "greater than 0", ["price"]),
    "on_promo not 0/1": ("/forecast", lambda s: _row(s, on_promo=2), 422, "on_promo: Input "
                         "should be 0 or 1", ["on_promo"]),
    "body not an object": ("/forecast", [1, 2], 422, "body: Input should be", ["body"]),
    "batch item": ("/forecast_batch", lambda s: {"requests": [_row(s), _row(s), _row(s),
                   _row(s, date="2025-02-30")]}, 422, "requests.3.date: Input should be",
                   ["requests.3.date"]),
    # this server has no online feature state (`online_features` not materialized)
    "override": ("/forecast", lambda s: _row(s, price=3.5), 422, "price: overrides need the "
                 "online feature state", None),
    "batch override": ("/forecast_batch", lambda s: {"requests": [_row(s), _row(s, on_promo=1)]},
                       422, "requests.1.on_promo: overrides need the online feature state", None),
    "covariate override": ("/forecast", lambda s: _row(s, covariates={"Open": 0}), 422,
                           "covariates: overrides need the online feature state", None),
    "unknown store": ("/forecast", lambda s: _row(s, store_id="no-such-store"), 404,
                      "store_id: unknown store 'no-such-store'", None),
    "unknown item": ("/forecast", lambda s: _row(s, item_id="no-such-item"), 404,
                     "item_id: unknown item 'no-such-item'", None),
    "date on the origin": ("/forecast", lambda s: _row(s, date=s["origin"].isoformat()), 422,
                           _horizon, None),
    "date past the horizon": ("/forecast", lambda s: _row(s, date=(
        s["origin"] + dt.timedelta(days=29)).isoformat()), 422, _horizon, None),
    "date in the past": ("/forecast", lambda s: _row(s, date=(
        s["origin"] - dt.timedelta(days=30)).isoformat()), 422, _horizon, None),
    "batch date": ("/forecast_batch", lambda s: {"requests": [_row(s), _row(
        s, date="2020-01-01")]}, 422, "requests.1.date: 2020-01-01 is outside the servable "
        "horizon", None),
    "oversized batch": ("/forecast_batch", lambda s: {"requests": [_row(s)] * (MAX_BATCH + 1)},
                        413, f"requests: {MAX_BATCH + 1} forecasts in one batch, the limit is "
                        f"{MAX_BATCH} (RETAIL_ML_MAX_BATCH)", None),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_client_mistakes_get_4xx_with_a_message(served: dict, case: str) -> None:
    route, body, status, message, fields = ERRORS[case]
    body = body(served) if callable(body) else body
    message = message(served) if callable(message) else message
    raw = body if isinstance(body, bytes) else None
    resp = _post(served, route, None if raw else body, data=raw,
                 headers={"Content-Type": "application/json"})
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    data = resp.json()
    # one object as the spec says, never BentoML's list wrapping: a message and its fields
    assert set(data) == {"error", "detail"}, data
    assert message in data["error"]
    assert "Traceback" not in resp.text
    assert all(set(e) == {"field", "message", "type"} for e in data["detail"]), data
    if fields is None:  # the field the message starts with, else the body as a whole
        head = data["error"].split(": ", 1)[0]
        fields = [head if re.fullmatch(r"[\w.]+", head) else "body"]
    assert [e["field"] for e in data["detail"]] == fields


def test_client_errors_are_raised_by_the_bentoml_client_with_their_status(served: dict) -> None:
    with pytest.raises(bentoml.exceptions.NotFound) as caught:
        served["client"].forecast(**_row(served, item_id="no-such-item"))
    assert caught.value.error_code == 404
    assert "unknown item 'no-such-item'" in str(caught.value)
    with pytest.raises(bentoml.exceptions.UnprocessableEntity) as caught:
        served["client"].forecast(**_row(served, date="1999-01-01"))
    assert _horizon(served) in str(caught.value)


def test_client_mistakes_are_logged_as_one_line_without_a_traceback(served: dict) -> None:
    # after the tests above, whose mistakes all reached BentoML's request error log
    resp = _post(served, "/forecast", _row(served, item_id="log-me"))
    assert resp.status_code == 404
    time.sleep(0.5)  # the server's log handler writes asynchronously
    log = served["log"].read_text()
    assert "Traceback" not in log
    assert re.search(r"\[INFO\] .*Client error on /forecast \[POST\]: NotFound 404: item_id: "
                     r"unknown item 'log-me'", log), log[-3000:]
    assert re.search(r"\[INFO\] .*Client error on /forecast_batch \[POST\]: 1 validation "
                     r"error\(s\), first requests.3.date: Input should be", log), log[-3000:]


@pytest.mark.parametrize(("content_type", "body", "status"), [
    ("text/plain", b"hello", 415), ("multipart/form-data; boundary=x", b"--x\r\ngarbage", 415),
    ("application/x-www-form-urlencoded", b"store_id=S1", 415),
    ("application/json; charset=utf-8", b"", 422), ("application/json", b"null", 422),
    ("application/json", b'{"store_id": "S1", "item_id": "I1", "date": 1e400}', 422)])
def test_odd_bodies_never_get_a_server_error(served: dict, content_type: str, body: bytes,
                                             status: int) -> None:
    for route in ("/forecast", "/forecast_batch"):
        resp = requests.post(f"{served['url']}{route}", data=body, timeout=30,
                             headers={"Content-Type": content_type})
        assert resp.status_code == status, (route, resp.text)
        assert set(resp.json()) == {"error", "detail"} and "Traceback" not in resp.text


def test_model_endpoint_reports_versions_metrics_and_snapshot(served: dict) -> None:
    resp = requests.get(f"{served['url']}/model", timeout=30)
    assert resp.status_code == 200, resp.text
    info = resp.json()
    snapshot, origin = served["snapshot"], served["origin"]
    assert {k: info[k] for k in ("model_version", "model_tag", "mlflow_run_id", "metrics")} == {
        "model_version": "7", "model_tag": served["built"]["model_tag"],
        "mlflow_run_id": "test-run",
        "metrics": {"backtest_wape": 0.42, "seasonal_naive_wape": 0.61}}
    assert info["training_data"] == {k.removeprefix("delta_"): int(v)
                                     for k, v in served["labels"].items() if k.startswith("delta_")}
    assert info["feature_columns"] == served["columns"].all
    assert info["features"] == {
        "table": "gold/forecast_features", "version": served["features_version"],
        "origin": origin.isoformat(),
        "first_date": (origin + dt.timedelta(days=1)).isoformat(),
        "last_date": (origin + dt.timedelta(days=served["spec"].horizon)).isoformat(),
        "period_days": 1, "series": snapshot.select("store_id", "item_id").n_unique(),
        "rows": snapshot.height, "sample_series": info["features"]["sample_series"],
        "example_request": info["features"]["example_request"]}
    # the sample series and the example request are served, the example on the second day
    example = info["features"]["example_request"]
    assert example["date"] == (origin + dt.timedelta(days=2)).isoformat()
    assert requests.post(f"{served['url']}/forecast", json=example, timeout=30).status_code == 200
    for pair in info["features"]["sample_series"]:
        assert requests.post(f"{served['url']}/forecast", timeout=30, json={
            **pair, "date": example["date"]}).status_code == 200
    assert info["intervals"] == {
        "level": 0.8, "coverage": {}, "measured": None, "missing": None,
        "method": served["intervals"].method}


def _count(metrics: str, endpoint: str) -> float:
    """The histogram's request count for `endpoint` on model version 7 (0 when absent)."""
    for line in metrics.splitlines():
        if (line.startswith(f"{HISTOGRAM}_count{{") and f'endpoint="{endpoint}"' in line
                and 'model_version="7"' in line):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_has_the_latency_histogram_by_endpoint_and_model_version(served: dict) -> None:
    before = requests.get(f"{served['url']}/metrics", timeout=30).text
    served["client"].forecast(**_row(served))
    served["client"].forecast_batch(requests=[_row(served)])
    assert requests.get(f"{served['url']}/model", timeout=30).status_code == 200
    after = requests.get(f"{served['url']}/metrics", timeout=30).text
    for endpoint in ("/forecast", "/forecast_batch", "/model"):
        assert _count(after, endpoint) >= _count(before, endpoint) + 1, endpoint
    assert any(line.startswith(f"{HISTOGRAM}_bucket{{") and 'endpoint="/forecast"' in line
               and 'le="0.02"' in line for line in after.splitlines())


def test_openapi_documents_every_endpoint_with_its_schemas_and_errors(served: dict) -> None:
    spec = requests.get(f"{served['url']}/docs.json", timeout=30).json()
    paths = spec["paths"]
    assert {"/forecast", "/forecast_batch", "/model", "/livez", "/readyz", "/metrics"} <= set(
        paths)
    schemas = spec["components"]["schemas"]

    def resolved(schema: dict) -> dict:  # BentoML inlines some schemas, refers to others
        return schemas[schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema

    def json_schema(part: dict) -> dict:
        return resolved(part["content"]["application/json"]["schema"])

    forecast = paths["/forecast"]["post"]
    body = json_schema(forecast["requestBody"])
    assert set(body["properties"]) == {"store_id", "item_id", "date", "price", "on_promo",
                                       "covariates"}
    assert body["required"] == ["store_id", "item_id", "date"]
    out = json_schema(forecast["responses"]["200"])
    assert {"units", "model_version", "features_version", "horizon", "lower", "upper",
            "interval_level"} <= set(out["properties"])
    assert out["properties"]["lower"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    batch = paths["/forecast_batch"]["post"]
    items = json_schema(batch["requestBody"])["properties"]["requests"]["items"]
    assert set(resolved(items)["properties"]) == set(body["properties"])
    assert set(resolved(json_schema(batch["responses"]["200"])["items"])["properties"]) == set(
        out["properties"])
    model = paths["/model"]["get"]
    assert {"metrics", "training_data", "features", "intervals"} <= set(
        json_schema(model["responses"]["200"])["properties"])
    # the statuses the tests above see, each with the error body's schema
    for op, statuses in ((forecast, {"400", "401", "404", "415", "422"}),
                         (batch, {"400", "401", "404", "413", "415", "422"}),
                         (model, {"401"})):
        assert statuses <= set(op["responses"]), op["responses"].keys()
        assert all(set(json_schema(op["responses"][s])["properties"]) == {"error", "detail"}
                   for s in statuses)


def test_swagger_try_it_out_default_examples_are_served(served: dict) -> None:
    """What "Try it out" sends: the spec's example body for each POST route."""
    spec = requests.get(f"{served['url']}/docs.json", timeout=30).json()
    for route in ("/forecast", "/forecast_batch"):
        example = spec["paths"][route]["post"]["requestBody"]["content"]["application/json"][
            "example"]
        resp = requests.post(f"{served['url']}{route}", json=example, timeout=30)
        assert resp.status_code == 200, (route, resp.text)


def test_docs_leads_to_swagger_on_the_real_spec(served: dict) -> None:
    moved = requests.get(f"{served['url']}/docs", timeout=30, allow_redirects=False)
    assert moved.status_code == 307 and moved.headers["location"] == "/"
    page = requests.get(f"{served['url']}/docs", timeout=30)
    assert page.status_code == 200 and "swagger" in page.text.lower()


def test_without_a_token_configured_requests_need_no_auth(served: dict) -> None:
    headers = {"Authorization": "Bearer anything"}
    assert _post(served, "/forecast", _row(served), headers=headers).status_code == 200
    assert requests.get(f"{served['url']}/model", timeout=30).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_with_a_token_every_api_request_without_it_is_401(served: dict, headers: dict) -> None:
    url = served["auth_url"]
    calls = [("post", "/forecast", _row(served)),
             ("post", "/forecast_batch", {"requests": [_row(served)]}),
             ("post", "/forecast", {"bad": "body"}),  # auth comes before validation
             ("get", "/model", None), ("get", "/docs.json", None)]
    for method, route, body in calls:
        resp = requests.request(method, f"{url}{route}", json=body, headers=headers, timeout=30)
        assert resp.status_code == 401, (route, resp.text)
        assert resp.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in resp.json()["error"]


def test_with_a_token_probes_and_metrics_stay_open_and_the_token_works(served: dict) -> None:
    url = served["auth_url"]
    for route in ("/livez", "/readyz", "/metrics"):
        assert requests.get(f"{url}{route}", timeout=30).status_code == 200, route
    with bentoml.SyncHTTPClient(url, token=TOKEN, timeout=60) as client:
        answer = client.forecast(**_row(served))
        assert answer["model_version"] == "7"
        big = [_row(served)] * (MAX_BATCH + 1)  # this server keeps the default limit
        assert len(client.forecast_batch(requests=big)) == MAX_BATCH + 1
    resp = requests.get(f"{url}/model", headers={"Authorization": f"bearer {TOKEN}"},
                        timeout=30)
    assert resp.status_code == 200 and resp.json()["model_version"] == "7"
