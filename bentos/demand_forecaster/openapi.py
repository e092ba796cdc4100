"""/docs.json as the service really answers.

BentoML documents 400, 404 and 500 for every API, with its own error schema (`detail` a string).
The middleware's contract differs: 401, 413, 415 and 422 as well, and `detail` lists the field
errors. A fuzzer checking responses against the spec needs the real list.

More corrections, found by fuzzing the spec (benchmarks/fuzz_api.py, tests/e2e/test_bento_fuzz.py):
- BentoML labels the document OpenAPI 3.0.2, but its schemas are pydantic 2's JSON Schema 2020-12
  (`exclusiveMinimum: 0`, `{"type": "null"}`): that is the OpenAPI 3.1 dialect, and FastAPI labels
  the same schemas 3.1.0. Read as 3.0, `price` is an invalid definition (3.0's exclusiveMinimum
  is a boolean), and a validator rejects the whole /forecast body schema.
- BentoML inlines the body of /forecast with the optional fields' `null` dropped, while the
  service accepts `"price": null` (no override): the body is the request model's own schema.
  So is its answer: `lower`, `upper` and `interval_level` are null for a model without an
  interval calibration, which BentoML's inlined copy would not allow.
- A body is required (a request without one gets 422), so the spec says so.
- Auth as configured: a bearer token is required when the server has RETAIL_ML_API_TOKEN set;
  without one the spec declares no security at all (Swagger would show locks on open routes).
"""

from __future__ import annotations

import copy
import os
from typing import Any

from pydantic import BaseModel

from bentos.demand_forecaster.middleware import TOKEN_ENV
from bentos.demand_forecaster.schemas import Forecast, ForecastRequest

OPENAPI_VERSION = "3.1.0"
COMPONENT = "#/components/schemas/{model}"

ERROR_REF = {"$ref": "#/components/schemas/Error"}
SCHEMAS = {
    "Error": {"type": "object", "required": ["error", "detail"], "properties": {
        "error": {"type": "string"},
        "detail": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}}}},
    "FieldError": {"type": "object", "required": ["field", "message", "type"], "properties": {
        "field": {"type": "string", "description": "Path in the body, e.g. requests.3.date"},
        "message": {"type": "string"}, "type": {"type": "string"}}},
}
WHEN = {
    400: "Malformed JSON body.",
    401: "Missing or wrong bearer token (only when the server has RETAIL_ML_API_TOKEN set).",
    404: "Unknown store or item, or no active series for the pair.",
    413: "More requests than the batch limit (RETAIL_ML_MAX_BATCH, default 10000).",
    415: "Body not sent as application/json.",
    422: "Schema violation (`detail` names each field path), a date outside the servable "
         "horizon (the message gives the valid range), or a price/on_promo override while "
         "no online feature state is published.",
    500: "A fault of the server, never of the request.",
}
STATUSES = {"/forecast": (400, 401, 404, 415, 422, 500),
            "/forecast_batch": (400, 401, 404, 413, 415, 422, 500),
            "/model": (401, 500)}


# routes whose body BentoML documents from the API's parameters rather than its input model
BODIES = {"/forecast": ForecastRequest}
# routes whose answer BentoML inlines without the nullable fields' `null`
ANSWERS = {"/forecast": Forecast}


def with_real_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` (BentoML's, as a dict) with each route's actual request bodies and error responses,
    and the bearer auth as this server is configured (read when the server starts)."""
    token = bool(os.environ.get(TOKEN_ENV))  # no token: none needed, and one sent is ignored
    spec["openapi"] = OPENAPI_VERSION
    spec["components"]["schemas"].update(SCHEMAS)
    for path, model in BODIES.items():
        media = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        media["schema"] = _component(spec, model)
    for path, model in ANSWERS.items():
        responses = spec["paths"][path]["post"]["responses"]
        ok = next(v for k, v in responses.items() if str(k) == "200")  # BentoML's key is an int
        ok["content"]["application/json"]["schema"] = _component(spec, model)
    if token:
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, statuses in STATUSES.items():
        for operation in spec["paths"][path].values():
            ok = {k: v for k, v in operation["responses"].items() if str(k).startswith("2")}
            operation["responses"] = {**ok, **{str(s): {
                "description": WHEN[s], "content": {"application/json": {"schema": ERROR_REF}}}
                for s in statuses}}
            if token:
                operation["security"] = [{"bearer": []}]
            if "requestBody" in operation:
                operation["requestBody"]["required"] = True
    return spec


def with_example(spec: dict[str, Any], request: BaseModel | None) -> dict[str, Any]:
    """`spec` with a servable request from the served snapshot as the bodies' example, so that
    Swagger's "Try it out" gets a forecast, not a 404 for `"store_id": "string"`."""
    if request is None:
        return spec
    spec = copy.deepcopy(spec)
    one = request.model_dump(mode="json", exclude_none=True)
    for path, example in (("/forecast", one), ("/forecast_batch", {"requests": [one]})):
        spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"] \
            = example
    return spec


def _component(spec: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    """`model`'s own JSON schema as a component of `spec`; returns the reference to it."""
    schema = model.model_json_schema(ref_template=COMPONENT)
    spec["components"]["schemas"].update({**schema.pop("$defs", {}), model.__name__: schema})
    return {"$ref": COMPONENT.format(model=model.__name__)}
